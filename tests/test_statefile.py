"""The state file: old or new, never torn.

A real power cut cannot be staged here (that needs a block device that drops unsynced
writes, e.g. dm-log-writes). What is checked instead: the order of the operations that
makes the rename durable (data fsynced before the rename, the folder fsynced after), a
writer killed with SIGKILL at random instants (the file always parses and is one of the
versions written), the crash leftovers (stray temporary files) being ignored and cleaned,
and a damaged file being read as defaults.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import statefile
from appliance.statefile import ShowState, load, save, write_atomic

ROOT = Path(__file__).resolve().parent.parent


def test_write_order_data_fsync_rename_dir_fsync(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(("fsync", path))
        return real_fsync(fd)

    def replace(src, dst):
        # at the rename, the new data must already be on the disk and the old file intact
        assert Path(src).read_bytes() == b"new"
        assert target.read_text() == "old"
        calls.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(statefile.os, "fsync", fsync)
    monkeypatch.setattr(statefile.os, "replace", replace)
    write_atomic(target, b"new")
    kinds = [k for k, _ in calls]
    assert kinds == ["fsync", "replace", "fsync"], calls
    assert Path(calls[0][1]).parent == tmp_path and calls[0][1] != str(target)  # the temp file
    assert calls[2][1] == str(tmp_path)  # the folder, so the rename is durable
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failure_before_rename_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(statefile.os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


WRITER = """
import sys
from appliance.statefile import save
path = sys.argv[1]
i = 0
while True:
    i += 1
    save(path, {"n": i, "pad": "x" * (i % 5000)})
    print(i, flush=True)
"""


def test_killed_writer_leaves_a_complete_version(tmp_path):
    """SIGKILL at random instants while a process rewrites the file as fast as it can:
    every time, the file parses and holds a version that was fully written."""
    target = tmp_path / "state.json"
    rng = random.Random(5)
    for _round in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one version exists
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        doc = json.loads(target.read_text())
        assert doc["version"] == statefile.VERSION
        assert doc["pad"] == "x" * (doc["n"] % 5000)
    # stray temporaries from the kills are never read, and the next write clears them
    save(target, {"n": 0, "pad": ""})
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_load_is_tolerant(tmp_path):
    d = {"song": 0, "title": "", "position_s": 0.0, "clean_shutdown": True}
    p = tmp_path / "s.json"
    st, note = load(p, d)
    assert st == d and "first start" in note
    p.write_bytes(b"")
    assert load(p, d)[0] == d
    p.write_bytes(b"\xff\xfe garbage")
    st, note = load(p, d)
    assert st == d and "damaged" in note
    p.write_text("[1, 2]")
    assert load(p, d)[0] == d
    p.write_text(json.dumps({"song": "three", "title": "Intro", "position_s": 12,
                             "clean_shutdown": 1, "extra": 5}))
    st, note = load(p, d)
    assert st == {"song": 0, "title": "Intro", "position_s": 12, "clean_shutdown": True}
    assert "song" in note and "clean_shutdown" in note
    assert load(None, d)[0] == d


def test_show_state_writes_on_change_and_periodically(tmp_path):
    s = ShowState(tmp_path / "st.json", every_s=30)
    snap = {"song": 0, "title": "A", "state": "cued", "position_s": 0.0}
    assert s.update(snap, now=0.0)
    assert not s.update(snap, now=1.0)              # nothing changed
    assert s.update({**snap, "song": 1, "title": "B"}, now=2.0)
    playing = {**snap, "song": 1, "title": "B", "state": "playing"}
    assert s.update(playing, now=3.0)
    assert not s.update({**playing, "position_s": 10.0}, now=13.0)
    assert s.update({**playing, "position_s": 30.0}, now=33.5)  # the periodic save
    assert s.update({**playing, "position_s": 31.0}, now=34.0, final=True)
    doc = json.loads((tmp_path / "st.json").read_text())
    assert doc["clean_shutdown"] is True and doc["position_s"] == 31.0
    idx, note = s.cue_index(["X", "B", "A"])
    assert idx == 1 and "ended cleanly in song 2 'B'" in note
    idx, _ = s.cue_index(["B2", "C"])               # title gone, index still valid
    assert idx == 1
    assert s.cue_index(["only"])[0] is None         # neither title nor index fits


def test_show_state_survives_an_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    s = ShowState(folder / "missing" / "st.json")
    assert not s.update({"song": 0, "state": "cued"}, now=0.0)
    assert "cannot write" in s.error
    assert not s.update({"song": 0, "state": "cued"}, now=1.0)  # no retry every tick

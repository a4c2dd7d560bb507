"""The black-box show log (appliance.showlog): its framing, its writer under power cuts,
rotation and bounds, and the config keys. The daemon's show is in test_showlog_show.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from appliance import config as config_mod
from appliance.showlog import (
    LogLimits,
    ReadStats,
    ShowLog,
    decode_all,
    encode,
    prune,
    read_show,
    show_files,
)
from tests.logwriter import pad

ROOT = Path(__file__).resolve().parent.parent


def _recs(n: int, size: int = 10) -> list[dict]:
    return [{"t_wall": 1.0 + i, "t_mono_ns": i, "kind": "t", "i": i, "pad": "x" * size}
            for i in range(n)]


def test_records_read_back_and_a_torn_tail_is_ignored():
    frames = [encode(r) for r in _recs(5)]
    data = b"".join(frames)
    for cut in range(len(data) - 1, len(data) - len(frames[-1]), -3):
        stats = ReadStats()
        got = list(decode_all(data[:cut], stats))
        assert [r["i"] for r in got] == list(range(len(got)))
        assert len(got) == 4 and stats.torn_tail_bytes > 0


def test_damage_in_the_middle_skips_that_record_only():
    frames = [encode(r) for r in _recs(6, 40)]
    bad = bytearray(frames[2])
    bad[30] ^= 0x01  # one bit flipped inside the JSON: CRC says no
    zeros = b"\0" * 37  # what a file system may leave after a crash
    data = b"".join(frames[:2]) + bytes(bad) + frames[3] + zeros + b"".join(frames[4:])
    stats = ReadStats()
    got = [r["i"] for r in decode_all(data, stats)]
    assert got == [0, 1, 3, 4, 5]
    assert stats.bad == 2 and stats.torn_tail_bytes == 0


def test_a_record_is_never_taken_from_garbage():
    rng = random.Random(7)
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        data = encode(_recs(1)[0]) + blob + b"R0000000a 00000000 " + blob
        assert [r["i"] for r in decode_all(data)] == [0]


def test_powercut_50_kills_lose_nothing_acknowledged(tmp_path):
    """SIGKILL at random moments while the real writer thread appends and fsyncs; then
    what a power cut may do to what was not fsync'd yet: nothing, a cut, zeros, garbage.
    Every acknowledged record reads back exactly; no damaged record is read as one."""
    rng = random.Random(20261203)
    total_acked = 0
    modes = {"none": 0, "truncate": 0, "zeros": 0, "garbage": 0}
    for run in range(50):
        folder = tmp_path / f"run{run}"
        proc = subprocess.Popen([sys.executable, "-m", "tests.logwriter", str(folder),
                                 str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        acks: list[tuple[int, int, int]] = []

        def read(p=proc, out=acks) -> None:
            for line in p.stdout:
                w = line.split()
                if len(w) == 4 and w[0] == "ACK":
                    out.append((int(w[1]), int(w[2]), int(w[3])))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 10
        while not acks and time.monotonic() < deadline:  # started and writing
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.35))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join(5)
        assert acks, f"run {run}: the writer never acknowledged anything"
        acked, part, size = acks[-1]
        # the power cut: only bytes after the last acknowledged fsync may suffer
        mode = rng.choice(list(modes))
        modes[mode] += 1
        for f in show_files(folder):
            if f.part < part:
                continue
            keep = size if f.part == part else 0
            if f.size <= keep:
                continue
            with open(f.path, "r+b") as fh:
                if mode == "truncate":
                    fh.truncate(rng.randint(keep, f.size))
                elif mode == "zeros":
                    at = rng.randint(keep, f.size - 1)
                    fh.seek(at)
                    fh.write(b"\0" * rng.randint(1, f.size - at))
                elif mode == "garbage":
                    at = rng.randint(keep, f.size - 1)
                    fh.seek(at)
                    fh.write(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
        _n, recs, _stats = read_show(folder)
        got = [r for r in recs if r.get("kind") == "t"]
        ids = [r["i"] for r in got]
        # every acknowledged record, in order; after them whatever survived the cut (a range
        # of zeros or garbage may leave later, unacknowledged records whole)
        assert ids[:acked] == list(range(acked)), \
            f"run {run} ({mode}): {acked} acknowledged, read {ids[:5]}..{ids[-5:]}"
        assert ids == sorted(set(ids)), f"run {run}: records repeated or out of order"
        for r in got:  # each one exactly as written: nothing torn taken as a record
            assert r["pad"] == pad(run, r["i"]), f"run {run}: record {r['i']} is not as written"
        seqs = [r["seq"] for r in recs if "seq" in r]
        assert seqs == sorted(seqs)
        total_acked += acked
    assert total_acked > 50 * 100
    assert all(modes.values()), modes


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_a_batch_larger_than_a_part_is_split_across_parts(tmp_path):
    """A log thread held up under load finds more than a part's worth queued (here: all of
    it queued before the thread starts): the parts still end at the limit, every record is
    kept once and in order, and a record larger than a part goes alone into a fresh one."""
    lim = LogLimits(max_file_bytes=4096, max_total_bytes=10**6, flush_s=0.01)
    slog = ShowLog(tmp_path, lim)
    slog.begin_show()
    for i in range(300):
        slog.record("t", i=i, pad="y" * 100)
    slog.record("t", i=300, pad="z" * 6000)  # alone: larger than a part
    slog.record("t", i=301)
    slog.start()
    try:
        assert _wait(lambda: slog.durable_items == slog.taken_items == 303)
    finally:
        slog.close()
    files = show_files(tmp_path)
    assert len(files) > 10
    big = [f for f in files if f.size > 4096]
    assert len(big) == 1, [f.size for f in files]
    _n, recs, stats = read_show(tmp_path, 1)
    assert stats.bad == 0 and stats.torn_tail_bytes == 0
    assert [r["i"] for r in recs if r["kind"] == "t"] == list(range(302))


def test_rotation_parts_and_the_total_bound(tmp_path):
    lim = LogLimits(max_file_bytes=4096, max_total_bytes=20_000, flush_s=0.01)
    slog = ShowLog(tmp_path, lim)
    slog.start()
    try:
        slog.record("before", n=1)          # before the first play: kept in memory
        slog.begin_show()
        for i in range(400):
            slog.record("t", i=i, pad="y" * 100)
            if i % 10 == 0:
                time.sleep(0.02)
        assert _wait(lambda: slog.durable_items == slog.taken_items == 402)
    finally:
        slog.close()
    files = show_files(tmp_path)
    assert len(files) > 2 and {f.show for f in files} == {1}
    assert sum(f.size for f in files) <= 20_000
    # a part ends at the first write that would take it past the limit
    assert all(f.size <= 4096 for f in files)
    _n, recs, stats = read_show(tmp_path, 1)
    assert stats.bad == 0 and stats.torn_tail_bytes == 0
    ids = [r["i"] for r in recs if r["kind"] == "t"]
    assert ids == list(range(ids[0], 400))  # the oldest parts went, the rest is whole
    assert recs[-1]["kind"] == "show_end"
    # a new show begins a new file, numbered on
    slog2 = ShowLog(tmp_path, lim)
    slog2.begin_show()
    slog2.start()
    slog2.close()
    assert max(f.show for f in show_files(tmp_path)) == 2


def test_first_records_are_the_show_start_then_what_came_before(tmp_path):
    slog = ShowLog(tmp_path, LogLimits(flush_s=0.01), header=lambda: {"setlist": "friday"})
    slog.start()
    try:
        slog.record("daemon_start", version="x")
        time.sleep(0.05)
        slog.begin_show()
        slog.record("song_start", song=1)
        assert _wait(lambda: slog.durable_items == 3)
    finally:
        slog.close()
    _n, recs, _st = read_show(tmp_path)
    assert [r["kind"] for r in recs] == ["show_start", "daemon_start", "song_start", "show_end"]
    assert recs[0]["setlist"] == "friday" and recs[0]["show"] == 1
    for r in recs:
        assert isinstance(r["t_wall"], float) and isinstance(r["t_mono_ns"], int)
    assert recs[1]["t_mono_ns"] < recs[0]["t_mono_ns"]  # it happened before the show began


def test_record_never_blocks_and_counts_what_it_drops(tmp_path):
    slog = ShowLog(tmp_path, queue_max=100)  # no thread: the inbox only fills
    t0 = time.perf_counter()
    for i in range(10_000):
        slog.record("t", i=i)
    per = (time.perf_counter() - t0) / 10_000
    assert slog.dropped == 9_900
    assert per < 50e-6, f"record() took {per * 1e6:.1f} us"


def test_an_unwritable_folder_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    slog = ShowLog(blocker / "shows", LogLimits(flush_s=0.01))
    slog.start()
    slog.begin_show()
    slog.record("t", i=1)
    assert _wait(lambda: bool(slog.error))
    slog.close()
    assert "show log" in slog.error and not slog.is_alive()


def test_idle_time_ends_the_show(tmp_path):
    playing = [True]
    slog = ShowLog(tmp_path, LogLimits(flush_s=0.01, idle_split_s=0.2),
                   playing=lambda: playing[0])
    slog.start()
    try:
        slog.begin_show()
        slog.record("song_start", song=1)
        time.sleep(0.3)
        assert slog.current is not None  # still playing: the same show
        playing[0] = False
        # 0.2 s idle, then the END record is written and fsync'd: seconds on a disk the rest
        # of the suite keeps busy
        assert _wait(lambda: slog.current is None, 15)
        playing[0] = True
        slog.begin_show()
        assert _wait(lambda: slog.current is not None and slog.current[0] == 2)
    finally:
        slog.close()
    _n, first, _ = read_show(tmp_path, 1)
    assert first[-1]["kind"] == "show_end" and "nothing played" in first[-1]["why"]


def test_prune_keeps_the_file_being_written(tmp_path):
    for n in range(1, 5):
        (tmp_path / f"show-{n:06d}-1.log").write_bytes(b"x" * 1000)
    gone = prune(tmp_path, 1500, keep=[tmp_path / "show-000001-1.log"])
    assert [p.name for p in gone] == ["show-000002-1.log", "show-000003-1.log",
                                      "show-000004-1.log"][:len(gone)]
    assert (tmp_path / "show-000001-1.log").exists()
    assert sum(f.size for f in show_files(tmp_path)) <= 2000


def test_config_reference_example_loads(tmp_path):
    """config/README.md's show log and self-test example is a valid show file section."""
    readme = (ROOT / "config" / "README.md").read_text()
    block = readme.split("<!-- showlog-example -->", 1)[1].split("```yaml\n", 1)[1]
    block = block.split("```", 1)[0]
    show = tmp_path / "show.yaml"
    show.write_text('device: {name: "null", channels: 2}\noutputs: {main: [1, 2]}\n'
                    "songs:\n  - {title: A, stems: [{file: a.wav, to: main}]}\n" + block)
    cfg = config_mod.load(show)
    assert cfg.log_dir == tmp_path / "shows"
    assert cfg.show_log.max_file_mb == 8 and cfg.show_log.max_total_mb == 128
    assert cfg.show_log.sample_s == 1.0 and cfg.show_log.new_show_after_min == 45
    assert cfg.selftest.at_start is True
    assert cfg.checksums_file == tmp_path / "checksums.sha256"
    assert cfg.selftest.min_free_mb == 500 and cfg.selftest.peer_wait_s == 15


def test_config_defaults_and_errors(tmp_path):
    show = tmp_path / "show.yaml"
    base = ('device: {name: "null", channels: 2}\noutputs: {main: [1, 2]}\n'
            "songs:\n  - {title: A, stems: [{file: a.wav, to: main}]}\n")
    show.write_text(base)
    cfg = config_mod.load(show)
    assert cfg.log_dir == Path("/var/lib/backtrack/shows")
    assert cfg.checksums_file == tmp_path / "checksums.sha256"
    show.write_text(base + "show_log: {max_file_mb: 64, max_total_mb: 10, sampel_s: 1}\n"
                    "selftest: {at_start: yes}\n")
    try:
        config_mod.load(show)
    except config_mod.ConfigError as exc:
        text = "\n".join(map(str, exc.problems))
    else:
        raise AssertionError("config errors not found")
    assert "show_log.max_total_mb" in text and "sampel_s" in text
    assert "selftest.at_start" in text


def test_json_lines_of_the_cli(tmp_path):
    slog = ShowLog(tmp_path / "shows", LogLimits(flush_s=0.01))
    slog.start()
    slog.begin_show()
    slog.record("command", source="footswitch", action="play", ok=True)
    slog.record("song_start", song=1, title="Opener")
    slog.close()
    r = subprocess.run([sys.executable, "-m", "appliance", "log", "--dir",
                        str(tmp_path / "shows"), "--json"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["kind"] for x in lines] == ["show_start", "command", "song_start", "show_end"]
    assert all({"t_wall", "t_mono_ns", "kind"} <= set(x) for x in lines)
    r = subprocess.run([sys.executable, "-m", "appliance", "log", "--dir",
                        str(tmp_path / "shows")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "play from footswitch" in r.stdout
    assert "song 1 'Opener' starts" in r.stdout
    r = subprocess.run([sys.executable, "-m", "appliance", "log", "--dir",
                        str(tmp_path / "shows"), "--show", "9"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 1 and "no show 9" in r.stderr and "Traceback" not in r.stderr

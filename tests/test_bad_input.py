"""Bad show files and bad stems through the real CLI (`python -m appliance check`).

Each case writes one broken show (from a good base show, changed in one place), runs
`backtrack check --no-device` in a subprocess and asserts: the exit status (1 for errors, 0
for warnings), no traceback, and that the message names the file and line and the key (or
the stem file), e.g. "show.yaml:13" and "songs[0].stems[1].to".

Base show, by line (the cases below refer to these numbers):

     1 device:
     2   name: "null"
     3   channels: 4
     4   rate: 48000
     5   format: S24_3LE
     6 outputs:
     7   click: 1
     8   tracks: [2, 3]
     9 songs:
    10   - title: One
    11     stems:
    12       - {file: click.wav, to: click}
    13       - {file: tracks.wav, to: tracks}
    14     after: next
    15   - title: Two
    16     stems:
    17       - {file: click.wav, to: click}
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000

BASE = """\
device:
  name: "null"
  channels: 4
  rate: 48000
  format: S24_3LE
outputs:
  click: 1
  tracks: [2, 3]
songs:
  - title: One
    stems:
      - {file: click.wav, to: click}
      - {file: tracks.wav, to: tracks}
    after: next
  - title: Two
    stems:
      - {file: click.wav, to: click}
"""


def tone(frames: int, channels: int, level: float = 0.25) -> np.ndarray:
    t = np.arange(frames) / RATE
    x = level * np.sin(2 * np.pi * 440 * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def write_stems(d: Path) -> None:
    sf.write(str(d / "click.wav"), tone(4800, 1), RATE, subtype="PCM_24")
    sf.write(str(d / "tracks.wav"), tone(4800, 2), RATE, subtype="PCM_24")


def run_check(cfg: Path | str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "check", "--config", str(cfg), "--no-device", *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=60)


# -- cases ---------------------------------------------------------------------------------
# Each builder gets the show folder (stems already written) and returns the config text
# (or None when it wrote show.yaml itself).

def replace(old: str, new: str, count: int = 1) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        assert BASE.count(old) == count, old
        return BASE.replace(old, new)
    return build


def with_stem(name: str, make: Callable[[Path], None], to: str = "tracks"
              ) -> Callable[[Path], str]:
    """Song 1's second stem (line 13) replaced by a file that `make` writes."""
    def build(d: Path) -> str:
        make(d / name)
        return BASE.replace("{file: tracks.wav, to: tracks}", f"{{file: {name}, to: {to}}}")
    return build


def truncated_wav(p: Path) -> None:
    sf.write(str(p), tone(RATE, 2), RATE, subtype="PCM_24")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # data chunk cut off mid-way


def truncated_flac(p: Path) -> None:
    rng = np.random.default_rng(0)
    sf.write(str(p), (0.3 * rng.standard_normal((RATE, 2))).astype(np.float32), RATE,
             subtype="PCM_24")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def header_only_wav(p: Path) -> None:
    sf.write(str(p), np.zeros((0, 2), np.float32), RATE, subtype="PCM_16")


def text_file(p: Path) -> None:
    p.write_text("These are the lyrics, not audio.\n" * 20)


def empty_file(p: Path) -> None:
    p.write_bytes(b"")


def folder(p: Path) -> None:
    p.mkdir()


def three_channels(p: Path) -> None:
    sf.write(str(p), tone(4800, 3), RATE, subtype="PCM_24")


def longer_stem(p: Path) -> None:
    sf.write(str(p), tone(9600, 2), RATE, subtype="PCM_24")


def hot_stem(p: Path) -> None:
    sf.write(str(p), tone(4800, 2, level=0.9), RATE, subtype="FLOAT")


@dataclass
class Case:
    id: str
    build: Callable[[Path], str | None]
    needles: tuple[str, ...]  # all must appear in stderr
    rc: int = 1


CASES = [
    # -- YAML syntax
    Case("yaml-unclosed-flow-mapping",
         replace("{file: tracks.wav, to: tracks}", "{file: tracks.wav, to: tracks"),
         ("show.yaml:14", "YAML syntax error")),
    Case("yaml-bad-indentation", replace("  channels: 4\n", "   channels: 4\n"),
         ("show.yaml:3", "YAML syntax error")),
    Case("yaml-tab-indentation", replace("  rate: 48000\n", "\trate: 48000\n"),
         ("show.yaml:4", "YAML syntax error")),
    Case("empty-config", lambda d: "", ("show.yaml", "the file is empty")),
    Case("not-utf8", lambda d: (d / "show.yaml").write_bytes(b"device: \xff\xfe\n") and None,
         ("show.yaml", "cannot read the file")),
    Case("top-level-list", lambda d: "- device\n- songs\n",
         ("show.yaml:1", "expected a mapping")),
    # -- types, ranges, choices
    Case("channels-not-a-number", replace("channels: 4", "channels: four"),
         ("show.yaml:3", "device.channels", "whole number")),
    Case("rate-not-supported", replace("rate: 48000", "rate: 44000"),
         ("show.yaml:4", "device.rate", "48000")),
    Case("format-not-supported", replace("format: S24_3LE", "format: S24_LE"),
         ("show.yaml:5", "device.format", "S24_3LE")),
    Case("gain-out-of-range",
         replace("{file: tracks.wav, to: tracks}", "{file: tracks.wav, to: tracks, gain_db: 40}"),
         ("show.yaml:13", "songs[0].stems[1].gain_db", "out of range")),
    Case("after-unknown", replace("after: next", "after: loop"),
         ("show.yaml:14", "songs[0].after", "stop, next, pause")),
    Case("stems-not-a-list", replace("    stems:\n      - {file: click.wav, to: click}\n"
                                     "      - {file: tracks.wav, to: tracks}\n",
                                     "    stems: click.wav\n"),
         ("show.yaml:11", "songs[0].stems", "expected a list")),
    Case("midi-program-zero", lambda d: BASE.replace(
        "    after: next\n", "    after: next\n    midi_out: [{program: 0}]\n"),
         ("show.yaml:15", "songs[0].midi_out[0].program", "1 to 128")),
    Case("writer-cpu-word", lambda d: BASE + "engine: {writer_cpu: fast}\n",
         ("show.yaml:18", "engine.writer_cpu", "auto, none or a CPU number", "got fast")),
    Case("pin-used-twice", lambda d: BASE + "footswitches:\n  - {pin: 22, press: next}\n"
         "led: {pin: 22}\n",
         ("show.yaml:20", "led.pin", "GPIO22 is already used by footswitches[0].pin")),
    # -- unknown and missing keys
    Case("unknown-top-key", lambda d: BASE + "sngs: []\n",
         ("show.yaml:18", "sngs", "unknown key", "valid keys here: device, outputs, songs")),
    Case("unknown-stem-key", replace("{file: tracks.wav, to: tracks}",
                                     "{file: tracks.wav, to: tracks, gain_bd: -6}"),
         ("show.yaml:13", "songs[0].stems[1].gain_bd", "valid keys here: file, to, gain_db")),
    Case("song-without-stems", replace("  - title: Two\n    stems:\n"
                                       "      - {file: click.wav, to: click}\n",
                                       "  - title: Two\n"),
         ("show.yaml:15", "songs[1].stems", "is required")),
    # -- routing
    Case("output-name-unknown", replace("{file: tracks.wav, to: tracks}",
                                        "{file: tracks.wav, to: drums}"),
         ("show.yaml:13", "songs[0].stems[1].to", "no output named 'drums'", "click, tracks")),
    Case("output-channel-beyond-device", replace("tracks: [2, 3]", "tracks: [2, 5]"),
         ("show.yaml:8", "outputs.tracks[1]", "beyond the device's 4 channels")),
    Case("output-channel-zero", replace("click: 1", "click: 0"),
         ("show.yaml:7", "outputs.click", "out of range")),
    Case("empty-setlist", lambda d: BASE.split("songs:")[0] + "songs: []\n",
         ("show.yaml:9", "songs", "the setlist is empty")),
    Case("stereo-stem-to-mono-output", replace("{file: tracks.wav, to: tracks}",
                                               "{file: tracks.wav, to: click}"),
         ("show.yaml:13", "songs[0].stems[1].to", "has 2 channels", "routed to 1")),
    Case("three-channel-stem-to-two-outputs", with_stem("three.wav", three_channels),
         ("show.yaml:13", "songs[0].stems[1].to", "has 3 channels")),
    # -- stem files
    Case("stem-missing", replace("{file: tracks.wav, to: tracks}",
                                 "{file: tracks-final.wav, to: tracks}"),
         ("show.yaml:13", "songs[0].stems[1].file", "tracks-final.wav", "file not found")),
    Case("stem-is-a-folder", with_stem("tracks.d", folder),
         ("show.yaml:13", "songs[0].stems[1].file", "tracks.d", "folder")),
    Case("stem-zero-length", with_stem("zero.wav", empty_file),
         ("show.yaml:13", "songs[0].stems[1].file", "zero.wav", "empty (0 bytes)")),
    Case("stem-truncated-wav", with_stem("cut.wav", truncated_wav),
         ("show.yaml:13", "songs[0].stems[1].file", "cut.wav", "truncated")),
    Case("stem-truncated-flac", with_stem("cut.flac", truncated_flac),
         ("show.yaml:13", "songs[0].stems[1].file", "cut.flac", "read failed")),
    Case("stem-not-audio", with_stem("lyrics.wav", text_file),
         ("show.yaml:13", "songs[0].stems[1].file", "lyrics.wav", "not a readable audio file")),
    Case("stem-header-only", with_stem("nothing.wav", header_only_wav),
         ("show.yaml:13", "songs[0].stems[1].file", "nothing.wav", "no audio frames")),
    # -- warnings only: the show plays
    Case("duplicate-titles", replace("title: Two", "title: One"),
         ("show.yaml:15", "songs[1].title", "duplicate title 'One'"), rc=0),
    Case("stem-lengths-differ", with_stem("long.wav", longer_stem),
         ("show.yaml:10", "songs[0].stems", "differ in length", "click.wav 0:00.1"), rc=0),
    Case("mix-clips", lambda d: BASE.replace(
        "      - {file: tracks.wav, to: tracks}\n",
        "      - {file: tracks.wav, to: tracks}\n      - {file: hot.wav, to: tracks}\n")
         if hot_stem(d / "hot.wav") is None else "",
         ("show.yaml:10", "songs[0]", "the mix clips", "tracks (ch 2, 3)"), rc=0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_show(case: Case, tmp_path: Path):
    write_stems(tmp_path)
    text = case.build(tmp_path)
    cfg = tmp_path / "show.yaml"
    if text is not None:
        cfg.write_text(text)
    r = run_check(cfg)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.returncode == case.rc, out
    for needle in case.needles:
        assert needle in r.stderr, f"{needle!r} not in stderr:\n{r.stderr}"
    if case.rc == 0:
        assert r.stdout.rstrip().endswith("OK: show is playable"), out
    elif "the config has" not in r.stderr:
        assert "NOT PLAYABLE" in r.stdout, out
    # The location names this very file.
    assert str(cfg) in r.stderr


def test_config_file_missing(tmp_path: Path):
    r = run_check(tmp_path / "nope.yaml")
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert f"{tmp_path / 'nope.yaml'}: file not found" in r.stderr


def test_bad_show_as_json(tmp_path: Path):
    """--json: config problems are JSON too (file, line, key, message), playable false."""
    import json

    write_stems(tmp_path)
    cfg = tmp_path / "show.yaml"
    cfg.write_text(BASE.replace("channels: 4", "channels: four").replace("to: tracks}",
                                                                          "to: drums}"))
    r = run_check(cfg, "--json")
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["playable"] is False
    assert [(p["line"], p["key"]) for p in report["problems"]] == [
        (3, "device.channels"), (13, "songs[0].stems[1].to")]
    assert all(p["file"] == str(cfg) and p["message"] for p in report["problems"])


UNREADABLE_CHILD = textwrap.dedent("""
    import os, sys
    # Everything check needs is imported before dropping root: this interpreter lives
    # under /root, which the unprivileged user cannot read.
    import appliance.cli, appliance.check, appliance.audio.source, appliance.render
    import json, numpy, soundfile, soxr, yaml
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    sys.exit(appliance.cli.main(["check", "--config", sys.argv[1], "--no-device"]))
""")


def test_stem_unreadable_by_permission(tmp_path_factory):
    """chmod 000 stops every user but root, and the tests run as root. So when root, the
    check runs in a child that imports what it needs and then drops to uid/gid 65534
    (nobody) before reading anything: a real permission failure, as the daemon would meet
    when it runs as its own user and the files were copied with mode 600 by someone else.
    (The child calls the CLI's `main` with argv rather than `-m appliance`, because the
    interpreter's own files are not readable after the drop.)"""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="bt-perm-"))  # /tmp/pytest-of-root is 0700: not usable
    try:
        os.chmod(d, 0o755)
        write_stems(d)
        cfg = d / "show.yaml"
        cfg.write_text(BASE)
        os.chmod(cfg, 0o644)
        os.chmod(d / "click.wav", 0o644)
        os.chmod(d / "tracks.wav", 0o000)
        if os.geteuid() == 0:
            argv = [sys.executable, "-c", UNREADABLE_CHILD, str(cfg)]
        else:
            argv = [sys.executable, "-m", "appliance", "check", "--config", str(cfg),
                    "--no-device"]
        r = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        out = r.stdout + r.stderr
        assert "Traceback" not in out, out
        assert r.returncode == 1, out
        assert "show.yaml:13: songs[0].stems[1].file:" in r.stderr, out
        assert "tracks.wav: permission denied" in r.stderr, out
    finally:
        os.chmod(d / "tracks.wav", 0o644)
        import shutil
        shutil.rmtree(d, ignore_errors=True)

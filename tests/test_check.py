"""`backtrack check`: the report on a good show, its JSON form, the warnings (lengths,
clipping), the sample-rate conversion done at check time, and the device probe against real
ALSA PCMs (`null`, a card that does not exist, a PCM that refuses the format)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from appliance.check import (
    DeviceFacts,
    SongFacts,
    StemFacts,
    build_report,
    fmt_duration,
    format_report,
    verdict,
)
from appliance.config import load

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000

SHOW = """\
device:
  name: "{device}"
  channels: 4
  rate: 48000
  format: {fmt}
  period: 256
  periods: 3
outputs:
  click: 1
  tracks: [2, 3]
  bass: 4
songs:
  - title: Opener
    stems:
      - {{file: click.wav, to: click}}
      - {{file: tracks.wav, to: tracks, gain_db: -3}}
    after: next
  - title: Ballad
    stems:
      - {{file: bass44.wav, to: bass}}
      - {{file: click.wav, to: click}}
"""


def sine(frames: int, channels: int, rate: int = RATE, level: float = 0.25) -> np.ndarray:
    t = np.arange(frames) / rate
    return np.repeat((level * np.sin(2 * np.pi * 330 * t))[:, None], channels, axis=1)


def make_show(d: Path, device: str = "null", fmt: str = "S32_LE", extra: str = "") -> Path:
    sf.write(str(d / "click.wav"), sine(RATE * 3 // 2, 1), RATE, subtype="PCM_24")  # 1.5 s
    sf.write(str(d / "tracks.wav"), sine(RATE * 3 // 2, 2), RATE, subtype="PCM_24")
    sf.write(str(d / "bass44.wav"), sine(44100 * 3 // 2, 1, 44100), 44100, subtype="PCM_16")
    cfg = d / "show.yaml"
    cfg.write_text(SHOW.format(device=device, fmt=fmt) + extra)
    return cfg


def check(cfg: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "appliance", "check", "--config", str(cfg), *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, **(env or {})})
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r


def test_good_show_is_playable(tmp_path):
    r = check(make_show(tmp_path), "--no-device")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert "song 1: Opener  0:01.5  (after: next)" in out
    assert "song 2: Ballad  0:01.5  (after: stop)" in out
    assert "0:01.5  click.wav  (1 ch, 48000 Hz) -> click" in out
    assert "tracks.wav  (2 ch, 48000 Hz) -> tracks -3.0 dB" in out
    assert "2 song(s), 0:03.0 in all" in out
    assert "not checked (--no-device)" in out
    assert out.rstrip().splitlines()[-1] == "OK: show is playable"


def test_json_report_fields(tmp_path):
    r = check(make_show(tmp_path), "--no-device", "--json")
    assert r.returncode == 0
    rep = json.loads(r.stdout)
    assert set(rep) >= {"config", "playable", "device", "songs", "problems", "warnings",
                        "total_duration_s", "cache_dir"}
    assert rep["playable"] is True and rep["problems"] == [] and rep["warnings"] == []
    assert rep["config"] == str(tmp_path / "show.yaml")
    assert rep["device"]["status"] == "skipped" and rep["device"]["checked"] is False
    assert rep["device"]["asked"] == {"rate": 48000, "channels": 4, "format": "S32_LE",
                                      "period": 256, "periods": 3}
    s1, s2 = rep["songs"]
    assert (s1["number"], s1["title"], s1["after"], s1["frames"], s1["duration_s"],
            s1["duration"]) == (1, "Opener", "next", 72000, 1.5, "0:01.5")
    assert s1["clipped"] == 0 and s1["problems"] == [] and s1["warnings"] == []
    assert s1["peak_dbfs"] == pytest.approx(-12.0, abs=0.1)
    st = s1["stems"][1]
    assert st["file"] == str(tmp_path / "tracks.wav") and st["to"] == ["tracks"]
    assert st["channels"] == [2, 3] and st["gain_db"] == -3.0 and st["line"] == 16
    assert (st["file_channels"], st["file_rate"], st["frames"], st["duration"]) == (
        2, 48000, 72000, "0:01.5")
    assert st["problem"] is None and st["resampled_from"] is None
    assert rep["total_duration_s"] == 3.0


def test_resampled_stem_is_converted_now_and_cached(tmp_path):
    cfg = make_show(tmp_path)
    cache = tmp_path / ".backtrack-cache"
    assert not cache.exists()
    r = check(cfg, "--no-device", "--json")
    bass = json.loads(r.stdout)["songs"][1]["stems"][0]
    assert bass["file_rate"] == 44100 and bass["resampled_from"] == 44100
    assert bass["frames"] == 72000  # 1.5 s at 48 kHz
    assert bass["cached_before"] is False
    cached = Path(bass["cache_file"])
    assert cached.parent == cache and cached.exists()
    assert sf.info(str(cached)).samplerate == RATE
    # The next check (and the show start) finds it done.
    stamp = cached.stat().st_mtime_ns
    r = check(cfg, "--no-device")
    assert "converted from 44100 Hz (was cached)" in r.stdout
    assert cached.stat().st_mtime_ns == stamp and len(list(cache.iterdir())) == 1


def test_length_and_clipping_warnings(tmp_path):
    cfg = make_show(tmp_path)
    sf.write(str(tmp_path / "tracks.wav"), sine(RATE, 2, level=0.95), RATE, subtype="FLOAT")
    sf.write(str(tmp_path / "hot.wav"), sine(RATE, 1, level=0.95), RATE, subtype="FLOAT")
    cfg.write_text(cfg.read_text().replace(
        "      - {file: tracks.wav, to: tracks, gain_db: -3}\n",
        "      - {file: tracks.wav, to: tracks}\n      - {file: hot.wav, to: tracks}\n"))
    r = check(cfg, "--no-device")
    assert r.returncode == 0, r.stdout + r.stderr  # warnings only
    err = r.stderr
    assert "show.yaml:13: songs[0].stems: stems differ in length: the song lasts 0:01.5" in err
    assert "tracks.wav 0:01.0, hot.wav 0:01.0" in err
    assert "show.yaml:13: songs[0]: the mix clips:" in err and "tracks (ch 2, 3)" in err
    assert "2 warning(s)" in err
    assert r.stdout.rstrip().endswith("OK: show is playable")
    rep = json.loads(check(cfg, "--no-device", "--json").stdout)
    assert rep["playable"] is True
    assert rep["songs"][0]["clipped"] > 0 and rep["songs"][0]["peak_dbfs"] > 0
    assert [w["key"] for w in rep["songs"][0]["warnings"]] == ["songs[0].stems", "songs[0]"]
    assert all(w["severity"] == "warning" for w in rep["warnings"])


def test_stem_problem_fails_with_location(tmp_path):
    cfg = make_show(tmp_path)
    (tmp_path / "tracks.wav").unlink()
    r = check(cfg, "--no-device")
    assert r.returncode == 1
    assert f"{cfg}:16: songs[0].stems[1].file: {tmp_path / 'tracks.wav'}: file not found" \
        in r.stderr
    assert r.stdout.rstrip().endswith("NOT PLAYABLE: 1 problem")
    rep = json.loads(check(cfg, "--no-device", "--json").stdout)
    assert rep["playable"] is False
    assert rep["problems"][0]["line"] == 16 and rep["songs"][0]["problems"] == rep["problems"]


# -- the device ----------------------------------------------------------------------------

def test_device_null_accepts(tmp_path):
    r = check(make_show(tmp_path, "null"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "device null: 4 channels, 48000 Hz, S32_LE, period 256 x 3" in r.stdout
    assert "accepts the configured rate, format, channels and period" in r.stdout
    rep = json.loads(check(make_show(tmp_path, "null"), "--json").stdout)
    assert rep["device"]["status"] == "ok" and rep["device"]["checked"] is True
    assert rep["device"]["got"] == rep["device"]["asked"]


def test_device_missing_is_a_warning(tmp_path):
    cfg = make_show(tmp_path, "hw:CARD=Nope")
    r = check(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{cfg}:2: device.name: ALSA device 'hw:CARD=Nope' not found" in r.stderr
    assert "unplugged" in r.stderr
    assert "ALSA lib" not in r.stderr  # libasound's own noise is swallowed
    assert r.stdout.rstrip().endswith("OK: show is playable")
    rep = json.loads(check(cfg, "--json").stdout)
    assert rep["playable"] is True and rep["device"]["status"] == "missing"
    assert rep["warnings"][0]["key"] == "device.name"


def test_device_missing_and_bad_stem_fails_for_the_stem(tmp_path):
    cfg = make_show(tmp_path, "hw:CARD=Nope")
    (tmp_path / "click.wav").write_text("not audio")
    r = check(cfg)
    assert r.returncode == 1
    assert "not found" in r.stderr and "not a readable audio file" in r.stderr
    assert r.stdout.rstrip().endswith("NOT PLAYABLE: 2 problems")  # click.wav in both songs


def test_device_refusing_the_format_is_an_error(tmp_path):
    """A real ALSA PCM that takes linear integer formats only (the `linear` plugin in front
    of `null`, from an .asoundrc found through $HOME): FLOAT_LE is refused."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        'pcm.intonly {\n  type linear\n  slave { pcm "null"; format S16_LE }\n}\n')
    cfg = make_show(tmp_path, "intonly", fmt="FLOAT_LE")
    r = check(cfg, env={"HOME": str(home)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{cfg}:5: device.format: ALSA device 'intonly' does not accept format FLOAT_LE" \
        in r.stderr
    rep = json.loads(check(cfg, "--json", env={"HOME": str(home)}).stdout)
    assert rep["device"]["status"] == "mismatch" and rep["playable"] is False
    # The same PCM with an integer format is fine.
    cfg = make_show(tmp_path, "intonly", fmt="S32_LE")
    assert check(cfg, env={"HOME": str(home)}).returncode == 0


# -- the pure parts ------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (0, "0:00.0"), (1.5, "0:01.5"), (59.96, "1:00.0"), (185.24, "3:05.2"), (3600, "60:00.0"),
])
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text


def facts_for(cfg_path: Path) -> tuple:
    cfg = load(cfg_path)
    songs = []
    for i, song in enumerate(cfg.songs):
        stems = [StemFacts(index=j, file=str(s.file), to=list(s.to), channels=list(s.channels),
                           gain_db=s.gain_db, line=s.line, file_channels=len(s.channels),
                           file_rate=RATE, frames=RATE)
                 for j, s in enumerate(song.stems)]
        songs.append(SongFacts(index=i, title=song.title, after=song.after, line=song.line,
                               stems=stems, frames=RATE, peaks=[0.5] * cfg.device.channels,
                               key=f"songs[{i}]", setlists=[f"all #{i + 1}"]))
    return cfg, songs


def test_build_report_is_pure_and_grades_severity(tmp_path):
    cfg, songs = facts_for(make_show(tmp_path))
    asked = {"rate": 48000, "channels": 4, "format": "S32_LE", "period": 256, "periods": 3}
    ok = DeviceFacts("null", "ok", asked=asked, got=dict(asked))
    rep = build_report(cfg, songs, ok)
    assert rep["playable"] and verdict(rep) == "OK: show is playable"
    # A device that only changes the period: still playable, with a warning.
    rep = build_report(cfg, songs, DeviceFacts("null", "mismatch", asked=asked,
                                               got={**asked, "period": 240}),
                       {"period": 6})
    assert rep["playable"] and rep["device"]["status"] == "ok"
    assert [(w["line"], w["key"]) for w in rep["warnings"]] == [(6, "device.period")]
    # A device that changes the rate: not playable.
    rep = build_report(cfg, songs, DeviceFacts("null", "mismatch", asked=asked,
                                               got={**asked, "rate": 44100}))
    assert not rep["playable"] and rep["problems"][0]["key"] == "device.rate"
    assert "does not accept rate 48000 (it offered 44100)" in rep["problems"][0]["message"]
    # A busy device is a warning (the daemon may hold it), a stem problem an error.
    songs[1].stems[0].problem = "read failed: Input/output error"
    rep = build_report(cfg, songs, DeviceFacts("null", "busy", "Device or resource busy",
                                               asked=asked))
    assert [p["key"] for p in rep["problems"]] == ["songs[1].stems[0].file"]
    assert rep["warnings"][0]["key"] == "device.name" and "busy" in rep["warnings"][0]["message"]
    assert verdict(rep) == "NOT PLAYABLE: 1 problem"
    out, err = format_report(rep)
    assert "!! read failed: Input/output error" in out
    assert f"{cfg.path}:20: songs[1].stems[0].file:" in err

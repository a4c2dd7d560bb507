"""Live mix figures (issue 13), on the virtual sound card:

1. command -> change heard: `mute`/`unmute` of one stem, from the command to the first
   recorded frame of the ramp (goal p99 <= one ALSA buffer + 10 ms);
2. CPU against aplay on the same PCM with a live mix in effect (two stems muted, one
   trimmed, an output trimmed) (goal <= 2x);
3. underruns at 128 x 3 with a CPU hog per core while the mix changes 20 times a second
   (goal 0).

Usage: python bench/livemix.py [latency|cpu|underruns ...] [--changes 40] [--rounds 3]
[--seconds 20] [--minutes 5] [--period 256]. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import RATE, DaemonProcess, row, start_jack_audio
from playback import bench_cpu, bench_underruns
from structure import CODE, coded_set, latencies, song_frames

STEM = 2  # stem3.wav -> output o3 (device channel 3, 0-based 2)


def ramp_starts(audio: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """Recorded indices where the muted stem's gain starts to move (a mute or an unmute):
    gain = recorded / expected for that stem's channel, read where the expected sample is
    far from zero; the song frame of each recorded frame comes from the position code."""
    f = song_frames(audio)
    on = np.flatnonzero(f >= 0)  # the code counts song frames modulo 2^20 (21.8 s): unwrap
    f[on] += np.concatenate([[0], np.cumsum(np.diff(f[on]) < -CODE // 2)]) * CODE
    ok = (f >= 0) & (f < len(exp))
    e = np.where(ok, exp[np.clip(f, 0, len(exp) - 1)], 0.0)
    big = ok & (np.abs(e) > 0.02)
    idx = np.flatnonzero(big)
    g = audio[idx, STEM] / e[idx]
    moving = np.abs(np.diff(g)) > 1e-3
    starts, last = [], -10 ** 9
    for k in np.flatnonzero(moving):
        i = int(idx[k])
        if i - last > RATE // 20:   # the ramp's frames are one change
            starts.append(i)
        last = i
    return np.asarray(starts, np.int64)


def bench_latency(changes: int, period: int) -> None:
    ja = start_jack_audio(period=period, seconds=changes * 0.7 + 20)
    sent = []
    try:
        with tempfile.TemporaryDirectory() as d:
            show = coded_set(Path(d), 60.0, "", period=period)
            exp = sf.read(str(Path(d) / f"stem{STEM + 1}.wav"), dtype="float32")[0]
            with DaemonProcess(show, ja.environ()) as dmn:
                dmn.ctl("play")
                time.sleep(1.0)
                for k in range(changes):
                    time.sleep(0.25 + 0.2 * (k % 5) / 5)
                    t = time.monotonic_ns()
                    r = dmn.ctl({"cmd": "unmute" if k % 2 else "mute", "target": "stem3"})
                    if r.get("ok"):
                        sent.append(t)
                    time.sleep(0.25)
                dmn.ctl("stop")
                time.sleep(0.3)
                log = dmn.log()
            rec = ja.stop()
    finally:
        ja.close()
    starts = ramp_starts(rec.audio, exp)
    times = rec.time_of_frame(starts)
    lat = latencies(times, sent)
    buf_ms = period * 3 / RATE * 1000
    print(f"1. command -> change heard (`mute`/`unmute` of a stem), period {period} x 3 "
          f"(ALSA buffer {buf_ms:.1f} ms; goal p99 <= {buf_ms + 10:.1f} ms)")
    print(row("mix command -> first ramp frame", lat))
    print(f"  slowest: {', '.join(f'{x:.1f}' for x in sorted(lat)[-4:])} ms")
    if "-v" in sys.argv:
        t0 = sent[0]
        print("  sent  ", [round((t - t0) / 1e6) for t in sent])
        print("  heard ", [round((t - t0) / 1e6) for t in times])
        print("\n".join(ln for ln in log.splitlines() if "WARNING" in ln or "ERROR" in ln))
    retries = log.count("live mix:")
    print(f"  changes sent {len(sent)}, heard {len(starts)}, 'live mix' warnings {retries}, "
          f"recorder missed JACK cycles {rec.missed_cycles()}")


def hold_a_mix(dmn: DaemonProcess) -> None:
    for req in ({"cmd": "mute", "target": "stem2"}, {"cmd": "mute", "target": "stem5"},
                {"cmd": "trim", "target": "stem7", "db": -6},
                {"cmd": "trim", "target": "o1", "db": -3}):
        assert dmn.ctl(req)["ok"]


def poke(dmn: DaemonProcess, k: int) -> None:
    """Twenty changes a second: trims up and down, a mute on and off."""
    if k % 4 == 3:
        dmn.ctl({"cmd": "unmute" if k % 8 == 7 else "mute", "target": "stem4"})
    else:
        dmn.ctl({"cmd": "trim", "target": "stem6", "db": -float(k % 12)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["latency", "cpu", "underruns"])
    ap.add_argument("--changes", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--period", type=int, default=256)
    ap.add_argument("-v", action="store_true", help="print every command's and change's time")
    a = ap.parse_args()
    for w in a.which:
        if w == "latency":
            bench_latency(a.changes, a.period)
        elif w == "cpu":
            bench_cpu(a.rounds, a.seconds, setup=hold_a_mix,
                      title=", a live mix in effect (2 stems muted, 2 trims)")
        elif w == "underruns":
            bench_underruns(a.minutes, poke=poke, poke_hz=20.0,
                            title=", the live mix changed 20 times a second")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

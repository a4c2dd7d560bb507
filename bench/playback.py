"""Real-time playback figures (issue 3), each measured on the virtual sound card:

1. command -> first sample at the recorder, p50/p99 over N plays, next to the ALSA buffer;
2. CPU of the daemon playing 8 stems to 8 outputs against `aplay` playing the premixed
   render on the same PCM, alternating in the same run;
3. underruns in M minutes at 128-frame periods with a pure-Python CPU hog on every core;
4. RSS of the daemon with a 20-song, 8-stem set.

Usage: python bench/playback.py [latency|cpu|underruns|rss ...] [--plays 60]
[--minutes 10] [--rounds 3] [--seconds 20]. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    RATE,
    CpuHogs,
    DaemonProcess,
    make_set,
    proc_cpu_s,
    proc_mem_mb,
    row,
    rss_without_jack_mb,
    sound_after,
    start_jack_audio,
)


def bench_latency(plays: int, period: int, periods: int) -> None:
    ja = start_jack_audio(period=period, seconds=plays * 0.6 + 20)
    try:
        with tempfile.TemporaryDirectory() as d:
            show = make_set(Path(d), seconds=5, period=period, periods=periods)
            with DaemonProcess(show, ja.environ()) as dmn:
                sent = []
                for _ in range(plays):
                    time.sleep(0.15)
                    t = time.monotonic_ns()
                    dmn.ctl("play")
                    sent.append(t)
                    time.sleep(0.25)
                    dmn.ctl("stop")
                time.sleep(0.3)
            rec = ja.stop()
    finally:
        ja.close()
    lat = sound_after(rec, sent)
    buf_ms = period * periods / RATE * 1000
    print(f"1. command -> first sample, period {period} x {periods} "
          f"(ALSA buffer {buf_ms:.1f} ms; goal p99 <= {buf_ms + 2:.1f} ms)")
    print(row("play -> first sample", lat))


def aplay_cmd(wav: Path, pcm: str, period: int = 256, periods: int = 3) -> list[str]:
    """aplay with the daemon's period and buffer (its default, a 0.5 s buffer woken 8 times
    a second, would not be the same job)."""
    return ["aplay", "-q", "-D", pcm, f"--period-size={period}",
            f"--buffer-size={period * periods}", str(wav)]


def bench_cpu(rounds: int, seconds: float, setup=None, title: str = "") -> None:
    """`setup(daemon)`, if given, runs before each round's `play` (a live mix to hold)."""
    ja = start_jack_audio(seconds=rounds * 2 * (seconds + 3) + 30)
    rows = {"daemon": [], "aplay": []}
    work: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            show = make_set(Path(d), seconds=seconds + 5, after="stop")
            wav = Path(d) / "render.wav"
            subprocess.run([sys.executable, "-m", "appliance", "render", "--config",
                            str(show.config), "--song", "1", "--out", str(wav)], check=True,
                           capture_output=True)
            for _ in range(rounds):
                with DaemonProcess(show, ja.environ()) as dmn:
                    time.sleep(0.5)
                    if setup is not None:
                        setup(dmn)
                    dmn.ctl("play")
                    c0, t0 = proc_cpu_s(dmn.proc.pid), time.monotonic()
                    time.sleep(seconds)
                    c1, t1 = proc_cpu_s(dmn.proc.pid), time.monotonic()
                    rows["daemon"].append(100 * (c1 - c0) / (t1 - t0))
                    work.append(dmn.status().get("writer", {}))
                p = subprocess.Popen(aplay_cmd(wav, "backtrack_test"), env=ja.environ())
                time.sleep(0.5)
                c0, t0 = proc_cpu_s(p.pid), time.monotonic()
                time.sleep(seconds)
                c1, t1 = proc_cpu_s(p.pid), time.monotonic()
                rows["aplay"].append(100 * (c1 - c0) / (t1 - t0))
                p.terminate()
                p.wait()
    finally:
        ja.close()
    d, a = np.median(rows["daemon"]), np.median(rows["aplay"])
    print(f"2. CPU, 8 stems -> 8 outputs{title}, {rounds} alternating rounds of {seconds:.0f} s "
          "(goal ratio <= 2x)")
    print(f"  daemon  median {d:6.2f} % of a core  worst {max(rows['daemon']):6.2f} %")
    print(f"  aplay   median {a:6.2f} % of a core  worst {max(rows['aplay']):6.2f} % "
          "(premixed render, same PCM)")
    print(f"  ratio daemon/aplay (medians) {d / a:5.2f}x")
    work = [w for w in work if w.get("periods")]
    if work:  # the writer's own figure: device has room -> write returned, per period
        print(f"  writer per-period cost (last {work[0]['periods']} periods of each round): "
              f"p50 {np.median([w['p50_us'] for w in work]):.1f} us  "
              f"p99 {max(w['p99_us'] for w in work):.1f} us  "
              f"max {max(w['max_us'] for w in work):.1f} us (period 256 = 5333 us)")


def bench_underruns(minutes: float, period: int = 128, periods: int = 3, poke=None,
                    poke_hz: float = 0.0, title: str = "") -> None:
    """`poke(daemon, k)`, if given, is called `poke_hz` times a second while playing (live
    mix changes)."""
    seconds = minutes * 60
    ja = start_jack_audio(period=period, seconds=seconds + 30)
    nhogs = os.cpu_count() or 2
    try:
        with tempfile.TemporaryDirectory() as d:
            songs = max(1, int(seconds // 60) + 1)
            show = make_set(Path(d), songs=songs, seconds=61, period=period, periods=periods)
            with DaemonProcess(show, ja.environ()) as dmn, CpuHogs(nhogs):
                time.sleep(1.0)
                dmn.ctl("play")
                end = time.monotonic() + seconds
                k = 0
                while time.monotonic() < end:
                    if poke is None:
                        time.sleep(min(5.0, max(0.0, end - time.monotonic())))
                        continue
                    poke(dmn, k)
                    k += 1
                    time.sleep(1 / poke_hz)
                st = dmn.ctl("status")["state"]
            rec = ja.stop()
    finally:
        ja.close()
    print(f"3. underruns in {minutes:g} min at period {period} x {periods} "
          f"({period * periods / RATE * 1000:.1f} ms buffer) with {nhogs} CPU hogs{title} "
          "(goal 0)")
    print(f"  ALSA underruns (xruns) {st['xruns']}   decoder late (starved periods) "
          f"{st['starved']}   recorder missed JACK cycles {rec.missed_cycles()}   "
          f"writer: {st['realtime']}")
    w = st.get("writer", {})
    if w.get("periods"):
        print(f"  writer per-period cost, last {w['periods']} periods under the hogs: "
              f"p50 {w['p50_us']:.1f} us  p99 {w['p99_us']:.1f} us  max {w['max_us']:.1f} us "
              f"(period {period} = {period / RATE * 1e6:.0f} us)")


def bench_rss(songs: int = 20) -> None:
    ja = start_jack_audio(seconds=60)
    try:
        with tempfile.TemporaryDirectory() as d:
            show = make_set(Path(d), songs=songs, seconds=240, stems=8)
            with DaemonProcess(show, ja.environ()) as dmn:
                time.sleep(1.0)
                idle = proc_mem_mb(dmn.proc.pid)[0], rss_without_jack_mb(dmn.proc.pid)
                dmn.ctl("play")
                for s in range(1, songs + 1, 3):
                    dmn.ctl({"cmd": "goto", "song": s})
                    time.sleep(0.4)
                time.sleep(2)
                rss, hwm = proc_mem_mb(dmn.proc.pid)
                own = rss_without_jack_mb(dmn.proc.pid)
    finally:
        ja.close()
    print(f"4. memory, {songs} songs x 8 stems of 4 min (goal <= 120 MB)")
    print(f"  idle (cued)         RSS {idle[0]:6.1f} MB, without the JACK segment {idle[1]:6.1f} MB")
    print(f"  after playing and jumping across the set: RSS {rss:6.1f} MB (peak {hwm:6.1f} MB), "
          f"without the JACK segment {own:6.1f} MB")
    print("  (the virtual card's JACK server maps a ~100 MB shared segment into each client; "
          "on a USB card there is none)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["latency", "cpu", "underruns", "rss"])
    ap.add_argument("--plays", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--minutes", type=float, default=10)
    a = ap.parse_args()
    for w in a.which:
        if w == "latency":
            bench_latency(a.plays, 256, 3)
            bench_latency(a.plays, 128, 3)
        elif w == "cpu":
            bench_cpu(a.rounds, a.seconds)
        elif w == "underruns":
            bench_underruns(a.minutes)
        elif w == "rss":
            bench_rss()
        sys.stdout.flush()


if __name__ == "__main__":
    main()

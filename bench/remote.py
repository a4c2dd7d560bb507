"""The phone remote and OSC under load (issue 14), on the virtual sound card:

1. tap -> first sample: `play` through the page's API (POST /api/cmd with the PIN) against
   `play` on the control socket, alternating in one run, both to the first sample the
   recorder hears (goal: the socket's latency + 5 ms);
2. a flood while playing at 128 x 3: the same minutes with no page open, then with N
   WebSocket pages and R requests a second (GET /api/status; one in ten a malformed POST)
   on loopback: underruns (goal 0), the writer's per-period cost, the daemon's CPU, the
   latency of /api/status and the interval between a page's status updates.

Usage: python bench/remote.py [latency] [flood] [--plays 40] [--minutes 5] [--pages 100]
[--rate 200] [--period 128] [--hogs 2]. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import (
    CpuHogs,
    DaemonProcess,
    make_set,
    pct,
    proc_cpu_s,
    row,
    sound_after,
    start_jack_audio,
)

from tests.remoteload import flood
from tests.showkit import free_port

PIN = "4711"


def with_remote(folder: Path, show) -> int:
    """Add `remote:` (loopback, a PIN) to a bench show; returns the port."""
    port = free_port(socket.SOCK_STREAM)
    (folder / "remote.pin").write_text(PIN)
    show.config.write_text(show.config.read_text()
                           + f'remote: {{listen: "127.0.0.1:{port}", pin_file: remote.pin}}\n')
    return port


def post_cmd(port: int, cmd: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/cmd",
                                 data=json.dumps({"cmd": cmd}).encode(),
                                 headers={"Content-Type": "application/json",
                                          "X-Backtrack-Pin": PIN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def bench_latency(plays: int, period: int, periods: int = 3) -> None:
    ja = start_jack_audio(period=period, seconds=plays * 2 * 0.6 + 20)
    sent: list[tuple[str, int]] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            show = make_set(Path(d), seconds=5, period=period, periods=periods)
            port = with_remote(Path(d), show)
            with DaemonProcess(show, ja.environ()) as dmn:
                post_cmd(port, "status")  # the first connection's set-up out of the figures
                for i in range(2 * plays):
                    via = "web" if i % 2 else "socket"
                    time.sleep(0.15)
                    t = time.monotonic_ns()
                    if via == "web":
                        post_cmd(port, "play")
                    else:
                        dmn.ctl("play")
                    sent.append((via, t))
                    time.sleep(0.25)
                    dmn.ctl("stop")
                time.sleep(0.3)
            rec = ja.stop()
    finally:
        ja.close()
    lat = {via: sound_after(rec, [t for v, t in sent if v == via]) for via in ("socket", "web")}
    print(f"1. play -> first sample at the recorder, period {period} x {periods}, "
          f"{plays} of each, alternating (goal: web <= socket + 5 ms)")
    print(row("control socket", lat["socket"]))
    print(row("page API (POST /api/cmd + PIN)", lat["web"]))
    if lat["socket"] and lat["web"]:
        print(f"  difference of medians {pct(lat['web'], 50) - pct(lat['socket'], 50):+.2f} ms, "
              f"of p99 {pct(lat['web'], 99) - pct(lat['socket'], 99):+.2f} ms")


def bench_flood(minutes: float, pages: int, rate: float, period: int, hogs: int = 0) -> None:
    seconds = minutes * 60
    songs = int(2 * seconds / 30) + 2
    ja = start_jack_audio(period=period, seconds=2 * seconds + 60)
    try:
        with tempfile.TemporaryDirectory() as d:
            show = make_set(Path(d), songs=songs, seconds=30, period=period, periods=3)
            port = with_remote(Path(d), show)
            with DaemonProcess(show, ja.environ()) as dmn:
                dmn.ctl("play")
                time.sleep(2)
                pid = dmn.proc.pid
                rows = []
                for label, n_pages, n_rate in (("no page open", 0, 0),
                                               (f"{pages} pages + {rate:g} req/s", pages, rate)):
                    with CpuHogs(hogs):
                        st0, cpu0, t0 = dmn.status(), proc_cpu_s(pid), time.monotonic()
                        if n_pages or n_rate:
                            out = asyncio.run(flood(port, n_pages, n_rate, seconds, settle_s=1.0))
                        else:
                            time.sleep(seconds)
                            out = None
                        st1, cpu1, t1 = dmn.status(), proc_cpu_s(pid), time.monotonic()
                    rows.append((label, st1["xruns"] - st0["xruns"],
                                 st1["starved"] - st0["starved"],
                                 100 * (cpu1 - cpu0) / (t1 - t0), st1["writer"], out))
                remote = dmn.status().get("controls", {}).get("remote", {})
            ja.stop()
    finally:
        ja.close()
    hog = f", a pure-Python CPU hog on each of {hogs} cores" if hogs else ""
    print(f"2. {minutes:g} min each at period {period} x 3, playing{hog} (goal: 0 underruns)")
    for label, xruns, starved, cpu, w, out in rows:
        print(f"  {label:<26} underruns {xruns}  decoder late {starved}  daemon CPU "
              f"{cpu:5.2f} % of a core  writer/period p50 {w['p50_us']:.0f} us p99 "
              f"{w['p99_us']:.0f} us max {w['max_us']:.0f} us")
        if out:
            print(row("GET /api/status latency", out["latencies"]))
            print(row("WebSocket update interval", out["intervals"]))
            print(f"  client errors {out['errors']}; server: pages max {remote.get('pages_max')}"
                  f", requests {remote.get('requests')}, refused {remote.get('refused')}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["latency", "flood"])
    ap.add_argument("--plays", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--period", type=int, default=128)
    ap.add_argument("--hogs", type=int, default=0, help="CPU hogs during the flood figures")
    a = ap.parse_args()
    for w in a.which:
        if w == "latency":
            bench_latency(a.plays, a.period)
        elif w == "flood":
            bench_flood(a.minutes, a.pages, a.rate, a.period, a.hogs)
        sys.stdout.flush()


if __name__ == "__main__":
    main()

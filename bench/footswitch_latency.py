"""Footswitch edge -> first sample: how long after the contact closes the band hears the song.

Prints figures; asserts nothing (machines differ). The daemon runs in this process on the
virtual sound card (private jackd, dummy backend, ALSA `jack` PCM; a recorder process
timestamps every JACK period), its footswitch on gpiozero's mock pin factory. Each round:
the cued song 1, the pin driven low with contact bounce (time taken just before the first
edge), released after 80 ms; the song's first frame is found in the recording and its
time compared with the edge. A second press stops it and the next round starts.

Also printed: edge -> `daemon.act` (our code: callback, queue, state machine) apart from
edge -> sound, whose rest is the engine's period edge plus the ALSA buffer.

Not measured here: the kernel -> lgpio -> gpiozero callback delay on a real Pi (the mock
pin calls back synchronously) and a real card's own output latency.

    .venv/bin/python bench/footswitch_latency.py [--rounds 40] [--period 256] [--periods 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_jack_audio  # noqa: E402
from tests.showkit import RATE, find_song_start, make_show  # noqa: E402


def pct_row(label: str, values_ms) -> str:
    v = np.asarray(values_ms, dtype=np.float64)
    return (f"  {label:<30} p50 {np.percentile(v, 50):7.2f} ms  p99 {np.percentile(v, 99):7.2f} ms"
            f"  max {v.max():7.2f} ms  n={len(v)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--period", type=int, default=256)
    ap.add_argument("--periods", type=int, default=3)
    args = ap.parse_args()

    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from appliance.config import load
    from appliance.service import Daemon

    ja = start_jack_audio(channels=8, period=args.period,
                          seconds=args.rounds * 0.9 + 10)
    daemon = None
    try:
        os.environ.update(ja.env())
        Device.pin_factory = MockFactory()
        tmp = Path(tempfile.mkdtemp(prefix="bt-footsw-"))
        show = make_show(tmp, [3.0], period=args.period, periods=args.periods,
                         extra="footswitches:\n  - {pin: 17, press: play_stop, bounce_ms: 20}\n")
        daemon = Daemon(load(show.config))
        daemon.start()
        sw = daemon.components[0].switches
        pin = Device.pin_factory.pin(17)
        time.sleep(1.0)
        edges: list[int] = []
        to_act: list[float] = []
        for _ in range(args.rounds):
            time.sleep(0.15 + np.random.default_rng(len(edges)).uniform(0, 0.02))
            sw.fired.clear()                        # the switch is idle: nothing appends now
            n_fired = 0
            t0 = time.monotonic_ns()
            for _b in range(3):                     # bounce
                pin.drive_low()
                pin.drive_high()
            pin.drive_low()
            edges.append(t0)
            time.sleep(0.08)
            pin.drive_high()
            deadline = time.monotonic() + 2
            while len(sw.fired) == n_fired and time.monotonic() < deadline:
                time.sleep(0.001)
            to_act.append(sw.fired[n_fired][2] * 1e3 - t0 / 1e6)
            time.sleep(0.35)
            pin.drive_low()                         # play_stop again: stop
            time.sleep(0.05)
            pin.drive_high()
            time.sleep(0.1)
        st = daemon.status()
        rec = ja.stop()
    finally:
        if daemon is not None:
            daemon.stop()
        ja.close()
    exp = show.expected(0)[:64]
    lat = []
    for t0 in edges:
        start = int(max(0, rec.frame_at_time(t0) - RATE // 100))
        at = find_song_start(rec.audio, exp, start)
        if at is None:
            continue
        lat.append((rec.time_of_frame(at) - t0) / 1e6)
    buf_ms = args.period * args.periods / RATE * 1e3
    print(f"footswitch latency: {args.rounds} presses, period {args.period} x {args.periods} "
          f"({buf_ms:.1f} ms ALSA buffer), JACK period {args.period}; xruns {st['xruns']}, "
          f"recorder missed cycles {rec.missed_cycles()}")
    print(pct_row("edge -> first sample", lat))
    print(pct_row("edge -> daemon.act", to_act))
    if len(lat) != len(edges):
        print(f"  ({len(edges) - len(lat)} song starts not found in the recording)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

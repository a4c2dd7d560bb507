"""MIDI clock and MTC against the audio: how far each tick / quarter frame is from the
moment its song frame is heard.

Prints figures; asserts nothing (machines differ). The daemon runs in this process on the
virtual sound card (private jackd, dummy backend, ALSA `jack` PCM; a recorder process
timestamps every JACK period), MIDI out through rtmidi's JACK API to a test input port
in a process of its own. Songs at a few tempi (one not a whole number of frames per tick) play
for `--seconds` each. For every MIDI clock tick k of a song, its frame is
k * rate * 60 / (tempo * 24); the recording says when that frame came out. Two errors:

- sent:      the time `send_message` returned (the scheduler's own error: engine position
             estimate + thread wake-up), minus the time the frame was heard;
- received:  the time the gear process's callback ran, minus the same. Through JACK this adds
             the JACK period (rtmidi's JACK output emits at the next process cycle, all
             events at offset 0), so it shows the test rig as much as the scheduler; on the
             Pi the ALSA sequencer delivers at once.

MTC: the same for every quarter frame (its frame is q * rate / (4 * fps)); and the position
a receiver holds as each piece arrives (the time code decoded from its group of eight plus
a quarter frame per piece) against the song position heard at that moment, which checks
the content of the time code as well as its timing (positive: the receiver is behind).

Positive = late. Also printed: CPU time of the MIDI out thread per second of playback, and
the writer's underruns during the run (the sender must not disturb the audio).

    .venv/bin/python bench/midi_clock.py [--seconds 20] [--fps 25]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.controls.midiclock import decode_quarter_frames  # noqa: E402
from tests.conftest import start_jack_audio  # noqa: E402
from tests.midigear import Gear  # noqa: E402
from tests.showkit import RATE, find_song_start, make_show  # noqa: E402

TEMPI = [120.0, 137.5, 93.0]


def row(label: str, values_ms) -> str:
    v = np.asarray(values_ms, dtype=np.float64)
    a = np.abs(v)
    return (f"  {label:<40} p50 {np.percentile(v, 50):+7.2f} ms  p99|e| {np.percentile(a, 99):6.2f}"
            f" ms  max|e| {a.max():6.2f} ms  n={len(v)}")


def thread_cpu_s(name: str) -> float:
    for t in threading.enumerate():
        if t.name == name and t.native_id:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1]
            f = fields.split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=int, default=25, choices=(24, 25, 30))
    args = ap.parse_args()


    from appliance.config import load
    from appliance.service import Daemon

    n = len(TEMPI)
    ja = start_jack_audio(channels=8, seconds=n * (args.seconds + 2) + 10)
    daemon = gear = None
    received: list[tuple[list[int], int]] = []
    try:
        os.environ.update(ja.env())
        tmp = Path(tempfile.mkdtemp(prefix="bt-midiclock-"))
        show = make_show(tmp, [args.seconds + 1.0] * n, extra=(
            "midi:\n  api: jack\n"
            f"  out: {{port: 'benchgear:gear', clock: true, mtc: true, mtc_fps: {args.fps}}}\n"))
        text = show.config.read_text()
        for i, tempo in enumerate(TEMPI):
            text = text.replace(f'  - title: "Song {i + 1}"\n',
                                f'  - title: "Song {i + 1}"\n    tempo: {tempo}\n')
        show.config.write_text(text)
        gear = Gear(ja.environ(), client="benchgear")
        daemon = Daemon(load(show.config))
        daemon.start()
        comp = next(c for c in daemon.components if hasattr(c, "output"))
        trace: list = []
        comp.output.trace = trace
        deadline = time.monotonic() + 5
        while comp.output.port.port_name is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        cpu0, t0 = thread_cpu_s("backtrack-midi-out"), time.monotonic()
        from appliance.actions import Action
        samples: list[tuple[int, int, int]] = []   # engine.position(): song, frame, ns
        for i in range(n):
            daemon.act(Action("goto", i + 1), "bench")
            daemon.act(Action("play"), "bench")
            t_end = time.monotonic() + args.seconds
            while time.monotonic() < t_end:
                time.sleep(0.05)
                song, frame, playing, t_ns = daemon.engine.position()
                if playing:
                    samples.append((song, frame, t_ns))
            daemon.act(Action("stop"), "bench")
            time.sleep(0.5)
        cpu = (thread_cpu_s("backtrack-midi-out") - cpu0) / (time.monotonic() - t0)
        st = daemon.status()
        rec = ja.stop()
        received = gear.stop()
    finally:
        if daemon is not None:
            daemon.stop()
        if gear is not None:
            gear.close()
        ja.close()

    sent_clock, recv_clock, sent_qf, recv_qf, pos_err, engine_err = [], [], [], [], [], []
    lost = {"clock": 0, "qf": 0}
    search = 0
    for i in range(n):
        exp = show.expected(i)[:64]
        at = find_song_start(rec.audio, exp, search)
        if at is None:
            print(f"  song {i + 1}: start not found in the recording")
            continue
        search = at + 1
        for song, frame, t_ns in samples:
            if song == i:   # the engine's DAC frame vs the frame heard at that moment
                engine_err.append((frame - (rec.frame_at_time(t_ns) - at)) / RATE * 1e3)
        clocks = [(f, t) for kind, s, f, t in trace if kind == "clock" and s == i]
        qfs = [(f, t) for kind, s, f, t in trace if kind == "qf" and s == i]
        for f, t in clocks:
            sent_clock.append((t - rec.time_of_frame(at + f)) / 1e6)
        for f, t in qfs:
            sent_qf.append((t - rec.time_of_frame(at + f)) / 1e6)
        # received: the song's span is between its Start and the next Stop. Each message
        # is paired with the last one of its kind sent before it arrived (its frame is in
        # the trace), so one lost in transit does not shift the others.
        starts = [t for m, t in received if m == [0xFA]]
        stops = [t for m, t in received if m == [0xFC]]
        if i < len(starts):
            a = starts[i]
            b = next((t for t in stops if t > a), float("inf"))
            for kind, code, sent, out in (("clock", 0xF8, clocks, recv_clock),
                                          ("qf", 0xF1, qfs, recv_qf)):
                st_ns = np.array([t for _f, t in sent], dtype=np.int64)
                got = [t for m, t in received if m[0] == code and a <= t < b]
                lost[kind] += max(0, len(sent) - len(got))
                for t in got:
                    j = int(np.searchsorted(st_ns, t, side="right")) - 1
                    if j >= 0:
                        out.append((t - rec.time_of_frame(at + sent[j][0])) / 1e6)
            qf = [(m[1], t) for m, t in received if m[0] == 0xF1 and a <= t < b]
            g = 0
            while g + 8 <= len(qf):
                if [d >> 4 for d, _t in qf[g:g + 8]] != list(range(8)):
                    g += 1                      # a piece was lost: find the next group
                    continue
                # a receiver's position as each piece arrives: the group's time code plus a
                # quarter frame per piece, against the song position heard at that moment
                tc, _fps = decode_quarter_frames([d for d, _t in qf[g:g + 8]])
                for p in range(8):
                    heard_s = (rec.frame_at_time(qf[g + p][1]) - at) / RATE
                    pos_err.append((heard_s - (tc + p / 4) / args.fps) * 1e3)
                g += 8
    print(f"MIDI clock / MTC vs audio: tempi {TEMPI} BPM, {args.seconds:.0f} s each, "
          f"MTC {args.fps} fps, period 256 x 3, JACK period 256 ({256 / RATE * 1e3:.2f} ms); "
          f"xruns {st['xruns']}, recorder missed cycles {rec.missed_cycles()}")
    print(row("engine.position() ahead of heard", engine_err))
    print(row("clock tick, sent - heard", sent_clock))
    med = float(np.median(sent_clock))
    print(row("clock tick, sent - heard - median", np.asarray(sent_clock) - med))
    print(row("clock tick, received - heard", recv_clock))
    print(row("MTC quarter frame, sent - heard", sent_qf))
    print(row("MTC quarter frame, sent - heard - median",
              np.asarray(sent_qf) - float(np.median(sent_qf))))
    print(row("MTC quarter frame, received - heard", recv_qf))
    print(row("MTC position (heard - decoded)", pos_err))
    ticks_expected = sum(int(args.seconds * t / 60 * 24) for t in TEMPI)
    print(f"  clock ticks sent {len(sent_clock)} (about {ticks_expected} expected), "
          f"MIDI out thread CPU {cpu * 100:.2f} % of one core; lost in transit (JACK): "
          f"{lost['clock']} ticks, {lost['qf']} quarter frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Song-structure figures (issue 12), on the virtual sound card:

1. command -> jump heard, `jump ... now`: from the command to the first recorded frame of the
   crossfade into the target (goal p99 <= one ALSA buffer + 2 ms);
2. `jump ... bar`: where the switch landed, in frames from the bar line (goal 0);
3. generated click: each onset's song frame against the tempo map, across a meter change
   and a ramp (goal 0 frames);
4. the writer's per-period cost and the daemon's CPU while vamping a one-bar section,
   against plain playback, alternating in the same run (goal: no measurable increase).

Every song carries a position code on output 8 (song frame f as (f mod 2^20) / 2^21, exact
through S32 and JACK's float), so the recording says which song frame each frame is.

Usage: python bench/structure.py [now|bar|click|vamp ...] [--jumps 40] [--rounds 3]
[--seconds 15]. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import RATE, DaemonProcess, make_set, proc_cpu_s, row, start_jack_audio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from appliance.tempomap import Meter, TempoChange, TempoMap  # noqa: E402

BAR = 2 * RATE
CODE = 2 ** 20
SECTIONS = ("    tempo: 120\n    sections: [{name: intro, at: 1}, {name: verse, at: 2}, "
            "{name: chorus, at: 5}, {name: outro, at: 8}]\n")


def coded_set(folder: Path, seconds: float, song_lines: str, period: int = 256,
              click: bool = False):
    """make_set's 8-stem song, stem 8 replaced by the position code, with `song_lines`."""
    show = make_set(folder, seconds=seconds, period=period, after="stop")
    n = int(seconds * RATE)
    code = ((np.arange(n) % CODE + 1) / (2 * CODE)).astype(np.float32)  # never 0: not silence
    sf.write(str(folder / "stem8.wav"), code, RATE, subtype="FLOAT")
    text = show.config.read_text()
    if click:  # the click on output 1 alone: stem 1 moves to output 2
        text = text.replace("{file: stem1.wav, to: o1}", "{file: stem1.wav, to: o2}")
    head = '  - title: "Song 1"\n'
    show.config.write_text(text.replace(head, head + song_lines, 1))
    return show


def song_frames(audio: np.ndarray) -> np.ndarray:
    """The song frame of every recorded frame from the code channel (-1 where silent)."""
    col = audio[:, 7].astype(np.float64)
    f = np.rint(col * 2 * CODE).astype(np.int64) - 1
    f[col == 0] = -1
    return f


def switches(f: np.ndarray) -> list[tuple[int, int]]:
    """(recorded index where a jump starts, song frame of the last frame before it): where
    the song frame stops following the recording and, past the crossfade, runs on clean
    from somewhere else (a fade to silence at `stop` is not a jump)."""
    ok = f >= 0
    step = np.diff(f)
    idx = np.flatnonzero(ok[:-1] & (step != 1))
    out, last = [], -10 ** 9
    for i in idx:
        if i - last > RATE // 10:   # the crossfade's frames are one discontinuity
            j = int(i) + 3000       # past any crossfade (<= 50 ms = 2400 frames)
            if j + 1 < len(f) and f[j] >= 0 and f[j + 1] == f[j] + 1 \
                    and f[j] - (j - int(i)) != f[i]:
                out.append((int(i) + 1, int(f[i])))
        last = i
    return out


def latencies(times: np.ndarray, sent: list[int]) -> list[float]:
    """ms from each command to the first heard change at or after it (`times`: sorted ns)."""
    out = []
    for t in sent:
        k = int(np.searchsorted(times, t))
        if k < len(times):
            out.append((times[k] - t) / 1e6)
    return out


def bench_jumps(when: str, jumps: int) -> None:
    ja = start_jack_audio(seconds=jumps * 1.6 + 20)
    sent = []
    try:
        with tempfile.TemporaryDirectory() as d:
            show = coded_set(Path(d), 20.0, SECTIONS)
            with DaemonProcess(show, ja.environ()) as dmn:
                dmn.ctl("play")
                time.sleep(2.5)   # in the verse
                for k in range(jumps):
                    to = "chorus" if k % 2 == 0 else "verse"
                    time.sleep(0.4 + 0.37 * (k % 3) / 3)   # presses anywhere in a bar
                    t = time.monotonic_ns()
                    r = dmn.ctl({"cmd": "jump", "to": to, "when": when})
                    sent.append(t if r.get("ok") else None)
                    time.sleep(0.6 if when == "now" else 2.2)
                dmn.ctl("stop")
                time.sleep(0.3)
            rec = ja.stop()
    finally:
        ja.close()
    f = song_frames(rec.audio)
    sw = switches(f)
    buf_ms = 256 * 3 / RATE * 1000
    if when == "now":
        times = rec.time_of_frame(np.asarray([i for i, _ in sw]))
        lat = latencies(times, [t for t in sent if t is not None])
        print(f"1. command -> jump heard (`jump X now`), period 256 x 3 (ALSA buffer "
              f"{buf_ms:.1f} ms; goal p99 <= {buf_ms + 2:.1f} ms)")
        print(row("jump now -> first crossfade frame", lat))
    else:
        errs = []
        for _i, last in sw:
            at = last + 1
            errs.append(min(at % BAR, BAR - at % BAR))
        print("2. `jump X bar`: the switch's distance from the bar line (goal 0 frames)")
        print(row("frames from the bar line", errs, unit="fr"))
        refused = sum(1 for t in sent if t is None)
        print(f"  jumps pressed {len(sent)}, refused {refused}, heard {len(sw)}")


def bench_pause_baseline(presses: int) -> None:
    """The same measure for `pause` (the fade-out starts at the writer's next period, an
    older path): what any change made while playing costs with the buffer kept full."""
    ja = start_jack_audio(seconds=presses * 1.0 + 20)
    sent = []
    try:
        with tempfile.TemporaryDirectory() as d:
            show = coded_set(Path(d), 20.0, SECTIONS)
            with DaemonProcess(show, ja.environ()) as dmn:
                dmn.ctl("play")
                time.sleep(1.0)
                for k in range(presses):
                    time.sleep(0.3 + 0.1 * (k % 3) / 3)
                    sent.append(time.monotonic_ns())
                    dmn.ctl("pause")
                    time.sleep(0.3)
                    dmn.ctl("pause")   # resume
                dmn.ctl("stop")
                time.sleep(0.3)
            rec = ja.stop()
    finally:
        ja.close()
    f = song_frames(rec.audio)
    ok = f >= 0
    times = rec.time_of_frame(np.flatnonzero(ok[:-1] & (np.diff(f) != 1)) + 1)
    lat = latencies(times, sent)
    print(row("baseline: pause -> first faded frame", lat))


def bench_click(seconds: float = 14.0) -> None:
    lines = ("    tempo_map: [{bar: 1, bpm: 120, meter: 4/4}, {bar: 3, bpm: 120, meter: 3/4}, "
             "{bar: 5, bpm: 120, ramp_to: 180, bars: 2}, {bar: 7, bpm: 150, meter: 7/8}]\n"
             "    click: {to: o1, level_db: -6, subdivision: 2}\n")
    ja = start_jack_audio(seconds=seconds + 15)
    try:
        with tempfile.TemporaryDirectory() as d:
            show = coded_set(Path(d), seconds, lines, click=True)
            with DaemonProcess(show, ja.environ()) as dmn:
                dmn.ctl("play")
                time.sleep(seconds + 0.5)
            rec = ja.stop()
    finally:
        ja.close()
    f = song_frames(rec.audio)
    click = np.abs(rec.audio[:, 0])
    heard = []
    above = np.flatnonzero(click > 0.01)
    last = -10 ** 9
    for i in above:
        if i - last > 2000 and f[i] >= 0:
            heard.append(int(f[i]))
        last = i
    tmap = TempoMap([TempoChange(1, 120, Meter(4, 4)), TempoChange(3, 120, Meter(3, 4)),
                     TempoChange(5, 120, Meter(3, 4), ramp_to=180, bars=2),
                     TempoChange(7, 150, Meter(7, 8))], 0.0, RATE)
    want = [o[0] for o in tmap.onsets(0, int((seconds - 0.5) * RATE), 2)]
    errs = []
    for w in want:
        k = np.searchsorted(heard, w)
        near = [abs(heard[j] - w) for j in (k - 1, k) if 0 <= j < len(heard)]
        if near:
            errs.append(min(near))
    print(f"3. generated click (subdivision 2, 4/4 -> 3/4 -> ramp 120-180 -> 7/8 at 150): "
          f"onset song frame against the map (goal 0 frames); {len(heard)} onsets heard, "
          f"{len(want)} expected")
    print(row("onset error", errs, unit="fr"))


def bench_vamp(rounds: int, seconds: float) -> None:
    ja = start_jack_audio(seconds=rounds * 2 * (seconds + 4) + 30)
    rows: dict[str, list] = {"plain": [], "vamping": []}
    work: dict[str, list] = {"plain": [], "vamping": []}
    try:
        with tempfile.TemporaryDirectory() as d:
            lines = ("    tempo: 120\n    sections: [{name: intro, at: 1}, {name: loop, at: 2},"
                     " {name: rest, at: 3}]\n")
            show = coded_set(Path(d), 60.0, lines)
            for _ in range(rounds):
                for mode in ("plain", "vamping"):
                    with DaemonProcess(show, ja.environ()) as dmn:
                        time.sleep(0.5)
                        dmn.ctl("play")
                        if mode == "vamping":
                            time.sleep(2.3)   # in the one-bar section "loop"
                            dmn.ctl("vamp")
                        else:
                            time.sleep(2.3)
                        c0, t0 = proc_cpu_s(dmn.proc.pid), time.monotonic()
                        time.sleep(seconds)
                        c1, t1 = proc_cpu_s(dmn.proc.pid), time.monotonic()
                        st = dmn.status()
                        rows[mode].append(100 * (c1 - c0) / (t1 - t0))
                        work[mode].append(st.get("writer", {}))
    finally:
        ja.close()
    print(f"4. writer and daemon CPU while vamping a one-bar section (a turn every 2 s), "
          f"{rounds} alternating rounds of {seconds:.0f} s (goal: no measurable increase)")
    for mode in ("plain", "vamping"):
        w = [x for x in work[mode] if x.get("periods")]
        print(f"  {mode:<8} daemon median {np.median(rows[mode]):5.2f} % of a core;  writer "
              f"per period p50 {np.median([x['p50_us'] for x in w]):6.1f} us  "
              f"p99 {np.median([x['p99_us'] for x in w]):6.1f} us (median of rounds)  "
              f"max {max(x['max_us'] for x in w):7.1f} us")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["now", "bar", "click", "vamp"])
    ap.add_argument("--jumps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15)
    a = ap.parse_args()
    for w in a.which:
        if w in ("now", "bar"):
            bench_jumps(w, a.jumps if w == "now" else max(4, a.jumps // 3))
            if w == "now":
                bench_pause_baseline(max(10, a.jumps // 2))
        elif w == "click":
            bench_click()
        elif w == "vamp":
            bench_vamp(a.rounds, a.seconds)


if __name__ == "__main__":
    main()

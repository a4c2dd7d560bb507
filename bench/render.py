"""Render speed and memory: how fast `backtrack render` (and so the engine's decode path) turns
8 stems into device samples, and whether memory stays flat as songs get longer.

Prints figures; asserts nothing about speed (machines differ). Goals, from the design:
render >= 200x real time for 8 stems at 48 kHz, and peak RSS flat across song lengths
(stems are read block by block into preallocated arrays, never whole).

    .venv/bin/python bench/render.py [--quick] [--keep DIR]

Setup: 8 stems (4 mono, 4 stereo, 24-bit WAV, 48 kHz) routed to 10 device channels, two of
them with a non-unity gain and two stereo stems summed onto the same outputs; speed is the
median (and worst) of 5 renders of a 1-minute song per device format, timed in-process;
memory is the peak RSS of a fresh `backtrack render` process for 1-, 5- and 10-minute
songs, beside that of a process that only imports the same modules.

Peak RSS is the child's own VmHWM read at its end, not ru_maxrss: Linux carries the
parent's RSS over into a child's ru_maxrss at exec (the bench process holds numpy arrays
and would dominate every figure; measured here: 52 MB for every case, imports included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.config import load  # noqa: E402
from appliance.render import render  # noqa: E402

RATE = 48000
STEMS = [  # name, channels, outputs, gain_db
    ("click", 1, "click", 0.0),
    ("cues", 1, "cues", 0.0),
    ("tracks", 2, "tracks", -3.0),
    ("pad", 2, "tracks", 0.0),
    ("bass", 1, "bass", 0.0),
    ("keys", 2, "keys", -1.5),
    ("bvox", 2, "bvox", 0.0),
    ("guitar", 1, "guitar", 0.0),
]
OUTPUTS = "  click: 1\n  cues: 2\n  tracks: [3, 4]\n  bass: 5\n  keys: [6, 7]\n" \
          "  bvox: [8, 9]\n  guitar: 10\n"


def make_stems(folder: Path, seconds: int) -> None:
    """8 stems of `seconds`, written a second at a time (the generator itself stays small)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    t = np.arange(RATE) / RATE
    for k, (name, ch, _to, _g) in enumerate(STEMS):
        with sf.SoundFile(str(folder / f"{name}.wav"), "w", RATE, ch, "PCM_24") as f:
            tone = 0.2 * np.sin(2 * np.pi * (110 * (k + 1)) * t)
            for _ in range(seconds):
                block = tone[:, None] + 0.05 * rng.standard_normal((RATE, ch))
                f.write(block.astype(np.float32))


def write_config(folder: Path, stems: Path, fmt: str) -> Path:
    lines = [f"device: {{name: \"null\", channels: 10, rate: {RATE}, format: {fmt}}}",
             "outputs:", OUTPUTS.rstrip("\n"), "songs:", "  - title: Bench", "    stems:"]
    for name, _ch, to, gain in STEMS:
        lines.append(f"      - {{file: {stems / (name + '.wav')}, to: {to}, gain_db: {gain}}}")
    lines.append(f"engine: {{cache_dir: {folder / 'cache'}}}")
    path = folder / f"show-{fmt}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def speed(folder: Path, stems: Path, fmt: str, runs: int) -> list[float]:
    cfg = load(write_config(folder, stems, fmt))
    out = folder / "out.wav"
    speeds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = render(cfg, [0], out)
        took = time.perf_counter() - t0
        speeds.append(result["seconds"] / took)
        out.unlink()
    return speeds


CHILD = """
import sys
from appliance.cli import main
import appliance.render, appliance.audio.source, soxr  # what a render imports
rc = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
with open("/proc/self/status") as f:
    hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
print("VmHWM", hwm, "kB", file=sys.stderr)
sys.exit(rc)
"""


def child_rss_kib(cli_args: list[str]) -> int:
    """Peak RSS (KiB) of one fresh process running `backtrack CLI_ARGS` (none: imports only)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, *cli_args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marks = [line for line in proc.stderr.splitlines() if line.startswith("VmHWM")]
    if proc.returncode != 0 or not marks:
        raise SystemExit(f"backtrack {' '.join(cli_args)} failed ({proc.returncode}): "
                         f"{proc.stderr}")
    return int(marks[-1].split()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, shorter songs")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args()
    runs = 3 if args.quick else 5
    lengths = [1, 2] if args.quick else [1, 5, 10]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-render-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"render bench: 8 stems (4 mono, 4 stereo, 24-bit WAV, {RATE} Hz) -> 10 "
              f"channels; {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, "
              f"numpy {np.__version__}")
        print("goal: >= 200x real time; peak RSS flat across song lengths\n")
        s1 = work / "stems-1min"
        if not (s1 / "guitar.wav").exists():
            make_stems(s1, 60)
        print(f"{'speed, 1-minute song':<28}{'median':>10}{'worst':>10}{'best':>10}")
        medians = []
        for fmt in ("S16_LE", "S24_3LE", "S32_LE", "FLOAT_LE"):
            sp = speed(work, s1, fmt, runs)
            medians.append(statistics.median(sp))
            print(f"  {fmt:<26}{statistics.median(sp):>9.0f}x{min(sp):>9.0f}x{max(sp):>9.0f}x")

        print(f"\n{'peak RSS, fresh process':<28}{'median':>10}{'worst':>10}  (runs: {runs})")
        base = [child_rss_kib([]) for _ in range(runs)]
        print(f"  {'imports only':<26}{statistics.median(base) / 1024:>8.1f}MB"
              f"{max(base) / 1024:>8.1f}MB")
        song_rss = []
        for minutes in lengths:
            folder = work / f"stems-{minutes}min"
            if minutes == 1:
                folder = s1
            elif not (folder / "guitar.wav").exists():
                make_stems(folder, 60 * minutes)
            cfg = write_config(folder, folder, "S32_LE")
            out = work / "rss-out.wav"
            rss = []
            for _ in range(runs):
                rss.append(child_rss_kib(["render", "--config", str(cfg), "--song", "1",
                                          "--out", str(out)]))
                out.unlink()
            print(f"  {f'{minutes}-minute song':<26}{statistics.median(rss) / 1024:>8.1f}MB"
                  f"{max(rss) / 1024:>8.1f}MB")
            song_rss.append(max(rss))
        spread = (max(song_rss) - min(song_rss)) / 1024
        print(f"\nslowest format median {min(medians):.0f}x (goal >= 200x); worst-case RSS "
              f"spread across song lengths {spread:.1f} MB (goal: flat)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

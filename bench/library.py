"""The song library at size (issue 11): a 300-song library with a 25-song setlist against
the same 25 songs written inline, in the same run.

1. daemon start -> READY=1 (goal <= 1 s: the song files read, the cued song decoded,
   nothing else) and the daemon's RSS at READY without the virtual card's JACK segment
   (goal <= 80 MB);
2. `backtrack check --no-device` of the whole library (every song file, every stem
   probed) against the 25-song inline set: time and peak RSS.

    .venv/bin/python bench/library.py [--runs 5] [--songs 300] [--setlist 25]

Each song has its own folder, song.yaml and six stem files (hard links to six files, as
in bench/startup.py: what is timed depends on the number of files, not their length).
Prints figures; asserts nothing.
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

from common import rss_without_jack_mb
from startup import ROOT, STEMS, make_set, one_start, show_head, write_base

from tests.conftest import start_jack_audio


def make_library(folder: Path, songs: int, setlist: int, seconds: float) -> Path:
    base = write_base(folder, 48000, seconds)
    lib = folder / "songs"
    for i in range(songs):
        d = lib / f"song{i + 1:03d}"
        d.mkdir(parents=True, exist_ok=True)
        body = [f'title: "Song {i + 1}"', "after: stop", "tempo: 120", "stems:"]
        for name, _ch, out in STEMS:
            os.link(base / f"{name}.wav", d / f"{name}.wav")
            body.append(f"  - {{file: {name}.wav, to: {out}}}")
        (d / "song.yaml").write_text("\n".join(body) + "\n")
    step = max(1, songs // setlist)
    names = [f'"Song {1 + k * step}"' for k in range(setlist)]
    lines = [*show_head(folder, "backtrack_test"), "library: songs", "setlists:",
             f"  tonight: [{', '.join(names)}]", "  all_of_it: [song001, song002]"]
    cfg = folder / "show.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def timed_check(cfg: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit status) of `backtrack check --no-device`."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "check", "--config", str(cfg),
                             "--no-device"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    return time.monotonic() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--songs", type=int, default=300)
    ap.add_argument("--setlist", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bt-library-"))
    audio = None
    try:
        lib = make_library(tmp / "lib", args.songs, args.setlist, args.seconds)
        inline = make_set(tmp / "inline", args.setlist, 48000, args.seconds)
        audio = start_jack_audio(channels=8, seconds=900)
        env = audio.environ()
        ready: dict[str, list[float]] = {"inline": [], "library": []}
        rss: dict[str, list[float]] = {"inline": [], "library": []}
        for _ in range(args.runs):  # alternating, so a busy spell hits both alike
            for label, cfg in (("inline", inline), ("library", lib)):
                total, _own, _status = one_start(
                    cfg, env, cfg.parent,
                    at_ready=lambda pid, label=label: rss[label].append(rss_without_jack_mb(pid)))
                ready[label].append(total)
        print(f"1. start -> READY=1, {args.runs} runs each, alternating; {os.cpu_count()} CPUs")
        for label, what in (("inline", f"{args.setlist} songs inline (baseline)"),
                            ("library", f"{args.songs}-song library, {args.setlist}-song setlist")):
            r = ready[label]
            print(f"  {what:<40} median {statistics.median(r):6.3f} s  max {max(r):6.3f} s   "
                  f"RSS at READY (no JACK segment) median {statistics.median(rss[label]):6.1f} MB")
        print(f"  ratio library/inline (medians) "
              f"{statistics.median(ready['library']) / statistics.median(ready['inline']):.2f}x"
              "   (goals: <= 1 s, <= 80 MB)")
        print(f"2. backtrack check --no-device, {args.runs} runs each")
        for cfg, what in ((inline, f"{args.setlist} songs inline (baseline)"),
                          (lib, f"{args.songs}-song library")):
            runs = [timed_check(cfg) for _ in range(max(1, args.runs // 2))]
            secs = [r[0] for r in runs]
            print(f"  {what:<40} median {statistics.median(secs):6.2f} s  max {max(secs):6.2f} s"
                  f"   peak RSS {max(r[1] for r in runs):6.1f} MB   exit {runs[-1][2]}")
    finally:
        if audio is not None:
            audio.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

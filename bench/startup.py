"""Daemon start -> READY=1: how long a box takes, once systemd starts the player, before
it can play (goal: <= 1 s for a 20-song set on this machine).

Prints figures; asserts nothing (machines differ).

    .venv/bin/python bench/startup.py [--runs 5] [--songs 20]

What is timed: from just before the `python -m appliance run` process is spawned to the
READY=1 datagram arriving on a NOTIFY_SOCKET this script listens on, exactly as systemd
would see it. READY=1 means: config loaded, engine threads and control socket up, the first
attempt to open the device over, and the cued song decoded (see appliance/service.py).
"in run()" is the daemon's own figure from its log: the same span minus interpreter start
and imports.

The set: `--songs` songs of 6 stems (4 mono, 2 stereo, 24-bit WAV, `--seconds` long) routed to 8
outputs. Every song has its own file names; they are hard links to six files, because
only the cued song and its neighbours are opened before READY=1 (song length and the
number of distinct files on disk do not enter into it; a 20-song set of 4-minute songs
would be 1.5 GB of scratch files for the same figure). Cases:

- device present: the JACK dummy server behind the ALSA `backtrack_test` PCM;
- device missing: an ALSA PCM name that does not exist (READY=1 with "waiting for the
  audio interface");
- 44.1 kHz stems on a 48 kHz device, empty resample cache: the first start after a new
  set was copied (the cued song's stems are resampled before READY=1), then warm.

The page cache is warm after the first run of each case (dropping it would disturb
other work on a shared machine); a Pi reading from an SD card will be slower on a cold
boot, by the time it takes to read the interpreter, the libraries and the first song.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
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

from tests.conftest import start_jack_audio  # noqa: E402

STEMS = [("click", 1, "click"), ("cues", 1, "cues"), ("bass", 1, "bass"), ("kick", 1, "kick"),
         ("tracks", 2, "tracks"), ("keys", 2, "keys")]
OUTPUTS = "{click: 1, cues: 2, bass: 3, kick: 4, tracks: [5, 6], keys: [7, 8]}"


def write_base(folder: Path, rate: int, seconds: float) -> Path:
    """The six stems every song's files are hard links to."""
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base"
    base.mkdir(exist_ok=True)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(3)
    for k, (name, ch, _out) in enumerate(STEMS):
        tone = 0.1 * np.sin(2 * np.pi * (110 + 55 * k) * t)
        data = np.stack([tone + 0.01 * rng.standard_normal(n) for _ in range(ch)], axis=1)
        data[0] = 0.5
        sf.write(str(base / f"{name}.wav"), data.astype(np.float32), rate, subtype="PCM_24")
    return base


def show_head(folder: Path, pcm: str) -> list[str]:
    return [f'device: {{name: "{pcm}", channels: 8, rate: 48000, format: S32_LE, '
            f"period: 256, periods: 3}}",
            f"outputs: {OUTPUTS}",
            f'control: {{socket: "{folder / "ctl.sock"}"}}',
            f'engine: {{readahead: 2.0, cache_dir: "{folder / "cache"}"}}']


def make_set(folder: Path, songs: int, rate: int, seconds: float = 30.0,
             pcm: str = "backtrack_test") -> Path:
    base = write_base(folder, rate, seconds)
    lines = [*show_head(folder, pcm), "songs:"]
    for i in range(songs):
        song_dir = folder / f"song{i + 1:02d}"
        song_dir.mkdir(exist_ok=True)
        lines += [f'  - title: "Song {i + 1}"', "    after: stop", "    stems:"]
        for name, _ch, out in STEMS:
            link = song_dir / f"{name}.wav"
            if not link.exists():
                os.link(base / f"{name}.wav", link)
            lines.append(f"      - {{file: {song_dir.name}/{name}.wav, to: {out}}}")
    cfg = folder / "show.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def one_start(cfg: Path, env: dict[str, str], folder: Path,
              at_ready=None) -> tuple[float, float | None, str]:
    """(seconds to READY=1, the daemon's own 'READY after' figure, STATUS text).
    `at_ready(pid)` is called once READY=1 came, before the daemon is stopped."""
    path = folder / "notify.sock"
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        log = folder / "daemon.log"
        with open(log, "wb") as logf:
            t0 = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config",
                                     str(cfg)], cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                    env={**env, "NOTIFY_SOCKET": str(path)})
            status = ""
            ready = None
            try:
                while ready is None:
                    msg = sock.recv(65536).decode()
                    now = time.monotonic()
                    for line in msg.split("\n"):
                        if line == "READY=1":
                            ready = now - t0
                        elif line.startswith("STATUS="):
                            status = line[7:]
                if at_ready is not None:
                    at_ready(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        m = re.search(r"READY after ([0-9.]+) s", log.read_text(errors="replace"))
        return ready, (float(m.group(1)) if m else None), status


def case(label: str, cfg: Path, env: dict[str, str], folder: Path, runs: int,
         clear_cache: bool = False) -> None:
    totals, inner, status = [], [], ""
    for _ in range(runs):
        if clear_cache:
            shutil.rmtree(folder / "cache", ignore_errors=True)
        total, own, status = one_start(cfg, env, folder)
        totals.append(total)
        if own is not None:
            inner.append(own)
    med = statistics.median(totals)
    own_med = statistics.median(inner) if inner else float("nan")
    print(f"| {label} | {runs} | {med:.3f} | {max(totals):.3f} | {own_med:.3f} | "
          f"{status[:60]} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--songs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0,
                    help="stem length (matters only for the empty-resample-cache case)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bt-startup-"))
    audio = None
    try:
        print(f"Daemon start -> READY=1, {args.songs}-song set (6 stems of {args.seconds:g} s each), "
              f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        print("| case | runs | median s | max s | in run() s (median) | STATUS= |")
        print("|---|---|---|---|---|---|")
        audio = start_jack_audio(channels=8, seconds=600)
        env = audio.environ()
        present = make_set(tmp / "a", args.songs, 48000, args.seconds)
        case("device present, 48 kHz stems", present, env, tmp / "a", args.runs)
        missing = make_set(tmp / "b", args.songs, 48000, args.seconds,
                           pcm="backtrack_no_such_pcm")
        case("device missing, 48 kHz stems", missing, env, tmp / "b", args.runs)
        conv = make_set(tmp / "c", args.songs, 44100, args.seconds)
        case("44.1 kHz stems, empty resample cache", conv, env, tmp / "c", max(1, args.runs // 2),
             clear_cache=True)
        case("44.1 kHz stems, warm resample cache", conv, env, tmp / "c", args.runs)
    finally:
        if audio is not None:
            audio.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

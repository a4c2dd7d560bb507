"""`backtrack render`: write exactly what `run` would play, offline and much faster than real
time, so a band can listen to its show at home.

Uses the live engine's own pieces (SongReader, mix_into, Converter); the WAV holds the
device's samples bit for bit (S16 -> PCM_16, S24_3LE -> PCM_24, S32 -> PCM_32, FLOAT).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio.formats import WAV_SUBTYPE, Converter
from .audio.source import SongReader
from .config import Config, load
from .errors import UserError

BLOCK = 65536


def song_numbers(spec: str, nsongs: int) -> list[int]:
    """'all' or a 1-based song number -> 0-based indexes."""
    if spec == "all":
        return list(range(nsongs))
    try:
        n = int(spec)
    except ValueError:
        raise UserError(f"--song must be a song number (1 to {nsongs}) or 'all', not '{spec}'") from None
    if not 1 <= n <= nsongs:
        raise UserError(f"there is no song {n}; songs are numbered 1 to {nsongs}")
    return [n - 1]


def render(cfg: Config, songs: list[int], out: Path, progress=None) -> dict:
    """Render the songs back to back (as `after: next` would play them) into one WAV."""
    dev = cfg.device
    conv = Converter(dev.format, dev.channels, BLOCK)
    block = np.zeros((BLOCK, dev.channels), np.float32)
    readers = [SongReader(cfg.songs[i], dev, cfg.cache_dir, BLOCK) for i in songs]
    total = sum(r.frames for r in readers)
    problems: list[str] = []
    done = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(out), "w", samplerate=dev.rate, channels=dev.channels,
                      subtype=WAV_SUBTYPE[dev.format], format="WAV" if total < 2**28 else "RF64"
                      ) as f:
        for reader in readers:
            while True:
                n = reader.read_into(block)
                if n == 0:
                    break
                f.write(conv.for_wav(block[:n]))
                done += n
                if progress:
                    progress(done, total)
            problems.extend(reader.problems)
            reader.close()
    return {"frames": done, "seconds": done / dev.rate, "clipped": conv.clipped,
            "problems": problems}


def main(config: str, song: str, out: str) -> int:
    cfg = load(config)
    idx = song_numbers(song, len(cfg.songs))
    tty = sys.stderr.isatty()
    t0 = time.monotonic()

    def progress(done: int, total: int) -> None:
        if tty and total:
            print(f"\rrendering {done / cfg.device.rate:7.1f} s of {total / cfg.device.rate:.1f} s"
                  f" ({100 * done / total:3.0f}%)", end="", file=sys.stderr, flush=True)

    try:
        result = render(cfg, idx, Path(out), progress)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    if tty:
        print(file=sys.stderr)
    took = time.monotonic() - t0
    for p in result["problems"]:
        print(f"warning: {p} (rendered as silence)", file=sys.stderr)
    if result["clipped"]:
        print(f"warning: {result['clipped']} samples clipped in the mix", file=sys.stderr)
    speed = result["seconds"] / took if took > 0 else float("inf")
    print(f"wrote {out}: {result['seconds']:.2f} s, {cfg.device.channels} channels, "
          f"{cfg.device.format}, {speed:.0f}x real time")
    return 0

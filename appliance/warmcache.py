"""Convert the setlist's stems into the cache before any song needs them, in the background.

A stem at another sample rate, or in a format only PyAV reads, is converted once into the
cache (appliance.audio.source). If `check` was not run after the stems were copied, that
happens the first time a song is prepared, in the decoder thread, while the playing song's
ring drains: a 4-minute AAC stem took 1.2 s here, a Pi is slower, and a song with several
such stems could starve the song that plays. So the daemon starts this module as a child
process once it is ready (and again when another setlist is chosen): it converts what the
setlist in use still needs, at the lowest CPU priority (SCHED_IDLE: only time no one else
wants), and exits. The decoder then finds the files in the cache. Both write the same file
atomically, so a song prepared while this runs is still right, only converted twice.

The voice guide's spoken cues are made here too (espeak-ng, into the same cache), before
the stems: the decode thread never runs a synthesiser, it only reads a cue the cache
already holds, and a cue takes a fraction of a second where a stem may take seconds.

    python -m appliance.warmcache --config FILE [--setlist NAME] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from .audio.overlays import make_spoken_cues
from .audio.source import cache_path, decode_to_cache, probe, resample_to_cache
from .config import Config, Stem

log = logging.getLogger("backtrack.cache")

_PR_SET_PDEATHSIG = 1


def pending(cfg: Config) -> list[Stem]:
    """Stems of the setlist in use that need converting and are not in the cache yet."""
    out: list[Stem] = []
    seen: set[Path] = set()
    rate = cfg.device.rate
    for song in cfg.songs:
        for stem in song.stems:
            if stem.file in seen:
                continue
            seen.add(stem.file)
            info = probe(stem)
            if info.problem and not info.damaged:
                continue  # check and the decoder say what is wrong with it
            if info.decoder != "pyav" and info.rate == rate:
                continue
            try:
                if cache_path(cfg.cache_dir, stem.file, rate).exists():
                    continue
            except OSError:
                continue
            out.append(stem)
    return out


def warm(cfg: Config) -> tuple[int, list[str]]:
    """Convert what `pending` lists; (how many were converted, what failed and why). Never
    raises for a bad file: the decoder reports it when the song is prepared."""
    done, failed = 0, []
    for stem in pending(cfg):
        try:
            if probe(stem).decoder == "pyav":
                decode_to_cache(stem.file, cfg.device.rate, cfg.cache_dir)
            else:
                resample_to_cache(stem.file, cfg.device.rate, cfg.cache_dir)
            done += 1
        except Exception as exc:  # noqa: BLE001 - any failure is the decoder's to report
            failed.append(f"{stem.file}: {exc}")
    return done, failed


def warm_cues(cfg: Config) -> tuple[int, list[str]]:
    """Speak the section names of the setlist's songs into the cache (those the voice
    guide announces without a recording of the user's); (how many are there now, what
    could not be made and why). Never raises."""
    made, failed = make_spoken_cues(cfg.songs, cfg.device.rate, cfg.cache_dir)
    return len(made), [f"song '{song.title}': no spoken cue for section '{name}': {why}"
                       for song, name, why in failed]


def start(cfg: Config) -> subprocess.Popen | None:
    """Start the background conversion for the setlist in use (None when it cannot be)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "appliance.warmcache", "--config", str(cfg.path),
             "--setlist", cfg.setlist, "--cache-dir", str(cfg.cache_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            close_fds=True)
    except OSError as exc:
        log.warning("stems are not converted ahead (%s): run `backtrack check`", exc)
        return None


def _lowest_priority() -> None:
    """Only CPU time nobody else wants, and gone with the daemon that started it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--setlist", default=None)
    ap.add_argument("--cache-dir", default=None, help="the daemon's (default: the config's)")
    args = ap.parse_args(argv)
    _lowest_priority()
    from dataclasses import replace

    from . import config as config_mod
    try:
        cfg = config_mod.load(args.config)
        if args.cache_dir:
            cfg = replace(cfg, engine=replace(cfg.engine, cache_dir=Path(args.cache_dir)))
        if args.setlist and args.setlist in cfg.setlists:
            cfg = cfg.with_setlist(args.setlist)
    except Exception as exc:  # noqa: BLE001 - the daemon has loaded it; nothing to add here
        print(f"not converting ahead: {exc}", file=sys.stderr)
        return 1
    _cues, unspoken = warm_cues(cfg)
    for u in unspoken:
        print(u, file=sys.stderr)
    done, failed = warm(cfg)
    for f in failed:
        print(f"not converted: {f}", file=sys.stderr)
    return 0 if not (failed or unspoken) else 1


if __name__ == "__main__":
    sys.exit(main())

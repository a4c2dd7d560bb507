"""Spoken cues ("chorus", "bridge") added into the in-ear mix a bar before each section.

Speech is made with espeak-ng (small, offline, in Debian) once per text, voice and device
rate, and kept in the cache as a float WAV at the device rate: the song load then only reads
a small file, and a box without espeak-ng still speaks every cue its cache holds. A user's
own recording of a cue is used as it is (mono, resampled).

Cues are added at song frames, like the click: a jump or a loop replays them exactly.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from .click import read_sample

CACHE_VERSION = 1
ESPEAK_TIMEOUT = 30.0  # seconds; a word takes well under one
MAX_CUE_SECONDS = 30.0
PEAK = 10 ** (-1 / 20)  # speech normalized to -1 dBFS: espeak-ng's level varies by voice
_QUIET = 10 ** (-50 / 20)  # what counts as the silence around the speech
_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+\-]*$")


def spoken_path(text: str, rate: int, cache_dir: Path, voice: str = "en") -> Path:
    """Where the spoken `text` lives in the cache (a hash: any text makes a safe name)."""
    key = f"{CACHE_VERSION}|{voice}|{rate}|{' '.join(text.split())}"
    return Path(cache_dir) / f"spoken-{hashlib.sha1(key.encode()).hexdigest()[:20]}.wav"


def cached_spoken(text: str, rate: int, cache_dir: Path,
                  voice: str = "en") -> tuple[np.ndarray | None, str]:
    """The spoken `text` if the cache holds it, without ever running espeak-ng (for the
    song load, which must not wait for a synthesiser): (samples, "") or (None, why not)."""
    path = spoken_path(text, rate, cache_dir, voice)
    if not path.exists():
        return None, (f"not in the cache {cache_dir} yet (spoken cues are made there with "
                      "espeak-ng by `backtrack check` and the cache warmer)")
    return _read_cached(path, rate)


def spoken(text: str, rate: int, cache_dir: Path,
           voice: str = "en") -> tuple[np.ndarray | None, str]:
    """`text` spoken by espeak-ng, float32 mono at `rate`: from the cache, or made once
    into it. (samples, "") or (None, why not); never raises for a missing or failing
    espeak-ng or an unwritable cache."""
    words = " ".join(text.split())
    if not words:
        return None, "nothing to say (empty text)"
    if not _VOICE.match(voice):
        return None, f"{voice!r} is not an espeak-ng voice name (e.g. en, en-us, de)"
    path = spoken_path(words, rate, cache_dir, voice)
    if path.exists():
        samples, why = _read_cached(path, rate)
        if samples is not None:
            return samples, why
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None, "espeak-ng is not installed (apt install espeak-ng)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, f"cannot make the cache folder {path.parent}: {exc.strerror or exc}"
    tag = f"tmp{os.getpid()}-{threading.get_ident()}"
    raw = path.with_name(f"{path.stem}.espeak-{tag}.wav")
    tmp = path.with_name(f"{path.name}.{tag}")
    try:
        # the text on stdin, not as an argument: a section called "-x" is words, not an option
        done = subprocess.run([exe, "-v", voice, "-w", str(raw), "--stdin"], input=words,
                              capture_output=True, text=True, timeout=ESPEAK_TIMEOUT,
                              check=False)
        if done.returncode != 0 or not raw.exists():
            why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            return None, f"espeak-ng failed: {why[0].removeprefix('Error: ')}"
        samples = _speech(raw, rate)
        if samples is None:
            return None, "espeak-ng made only silence"
        with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=1, subtype="FLOAT",
                          format="WAV") as dst:
            dst.write(samples)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # never half a file under the final name
        return samples, ""
    except subprocess.TimeoutExpired:
        return None, f"espeak-ng took longer than {ESPEAK_TIMEOUT:g} s"
    except Exception as exc:  # noqa: BLE001 - OS, libsndfile, libsoxr: a cue is not worth a crash
        return None, f"making the spoken cue failed: {exc}"
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _speech(raw: Path, rate: int) -> np.ndarray | None:
    """espeak-ng's output at `rate`, its silence before and after cut (the cue's first
    sample is the first sound), normalized."""
    samples, _ = read_sample(raw, rate, "speech", max_seconds=MAX_CUE_SECONDS, trim=False)
    if samples is None:
        return None
    peak = float(np.abs(samples).max())
    if peak <= 0.0:
        return None
    loud = np.flatnonzero(np.abs(samples) >= _QUIET * peak)
    samples = samples[loud[0]:loud[-1] + 1]
    return (samples * np.float32(PEAK / peak)).astype(np.float32)


def _read_cached(path: Path, rate: int) -> tuple[np.ndarray | None, str]:
    return read_sample(path, rate, "cached spoken cue", max_seconds=MAX_CUE_SECONDS,
                       trim=False)


def load_cue(path: Path, rate: int) -> tuple[np.ndarray | None, str]:
    """A user's recording of a cue as float32 mono at `rate`, used as recorded (its timing
    is the user's); (samples, "" or a note) or (None, why not). Never raises."""
    return read_sample(Path(path), rate, "cue", max_seconds=MAX_CUE_SECONDS, trim=False)


class GuideRenderer:
    """Adds the cues into blocks: (song frame where a cue starts, samples) each."""

    def __init__(self, cues: Sequence[tuple[int, np.ndarray]], level: float):
        ordered = sorted(cues, key=lambda c: c[0])
        gain = np.float32(level)
        self._starts = [int(start) for start, _ in ordered]
        self._samples = [(np.asarray(s, np.float32) * gain).astype(np.float32)
                         for _, s in ordered]
        self._reach = max((len(s) for s in self._samples), default=0)

    def render(self, song_frame0: int, out: np.ndarray) -> None:
        """Add the cues sounding in song frames [song_frame0, song_frame0 + len(out)) into
        `out`: a bisection finds the cues that started within the longest cue's length
        before the block, so the cost does not grow with the song."""
        end = song_frame0 + len(out)
        lo = bisect.bisect_right(self._starts, song_frame0 - self._reach)
        hi = bisect.bisect_left(self._starts, end)
        for i in range(lo, hi):
            start, sound = self._starts[i], self._samples[i]
            first = max(song_frame0, start)
            last = min(end, start + len(sound))
            if first < last:
                out[first - song_frame0:last - song_frame0] += sound[first - start:last - start]

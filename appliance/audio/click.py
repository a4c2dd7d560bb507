"""The generated click: a sound per beat, added into the mix at the song frames the tempo map
gives, so the click can never drift from the song, and a vamp or a jump replays it exactly.

The sounds are made (or loaded and resampled) once, before the song plays; rendering only
adds slices of them, which is a few NumPy additions per block.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# A user's click sample longer than this is cut: it is a click, and every onset whose sound
# still rings is handed to each block, so a long tail costs in the decode thread.
MAX_SECONDS = 1.0
# Leading samples below this (-60 dBFS) are cut from a user's sample: its first sample is
# the beat, and the silence many sample packs start with would make the click late.
SILENCE = 1e-3


def _tone(rate: int, freq: float, peak: float, seconds: float) -> np.ndarray:
    """A cosine from its peak (the onset is the first sample and is loud at once, so the
    ear and a recorder both place it exactly), an attack from half to full level over
    1.5 ms, an exponential decay and a 2 ms fade so it never ends on a step."""
    n = max(int(round(seconds * rate)), 8)
    t = np.arange(n) / rate
    attack = np.minimum(t / 1.5e-3, 1.0)
    env = (0.5 + 0.5 * np.sin(0.5 * np.pi * attack)) * np.exp(-t / (seconds / 4))
    fade = np.minimum((n - np.arange(n)) / max(2e-3 * rate, 1.0), 1.0)
    return (peak * np.cos(2 * np.pi * freq * t) * env * fade).astype(np.float32)


def _load_mono(path: Path, rate: int, trim: bool, max_seconds: float) -> np.ndarray:
    """A file as float32 mono at `rate` (channels averaged; libsoxr resamples); raises.
    Leading silence is cut before resampling: after it, the filter's pre-ringing would
    count as sound. Only the start of a long file is read (a whole song picked as a click
    sound must not fill the memory)."""
    with sf.SoundFile(str(path)) as f:
        src_rate = f.samplerate
        data = f.read(min(f.frames, int((max_seconds + 10.0) * src_rate)) + 1,
                      dtype="float32", always_2d=True)
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if trim:
        loud = np.flatnonzero(np.abs(mono) >= SILENCE)
        mono = mono[loud[0]:] if len(loud) else mono[:0]
    if src_rate != rate and len(mono):
        import soxr

        mono = soxr.resample(mono, src_rate, rate, quality="VHQ")
    return np.ascontiguousarray(mono, np.float32)


def read_sample(path: Path, rate: int, what: str = "sample", *,
                max_seconds: float = MAX_SECONDS,
                trim: bool = True) -> tuple[np.ndarray | None, str]:
    """A user's sound as float32 mono at `rate` and "", or (None, why not); a usable sound
    with a note comes with the note. Never raises: a bad file on stage means the built-in
    sound, not a stopped show. `trim` cuts leading silence (see SILENCE)."""
    try:
        if not path.exists():
            return None, f"{what} {path}: file not found"
        mono = _load_mono(path, rate, trim, max_seconds)
    except PermissionError:
        return None, f"{what} {path}: permission denied"
    except Exception as exc:  # noqa: BLE001 - libsndfile and libsoxr say many things
        return None, f"{what} {path}: not a readable audio file ({exc})"
    if not np.isfinite(mono).all():
        return None, f"{what} {path}: holds non-finite samples (NaN or infinity)"
    if not (np.abs(mono) >= SILENCE).any():
        return None, f"{what} {path}: silent (or empty)"
    limit = int(max_seconds * rate)
    if len(mono) > limit:
        return mono[:limit].copy(), (f"{what} {path}: longer than {max_seconds:g} s; "
                                     "only its start plays")
    return mono, ""


@dataclass(frozen=True, eq=False)
class ClickSounds:
    """accent (downbeat), beat, sub (subdivision) sounds as float32 mono at the device rate;
    the first sample of each is the onset."""

    accent: np.ndarray
    beat: np.ndarray
    sub: np.ndarray
    rate: int

    @property
    def longest(self) -> int:
        """Frames of the longest sound: how far back an onset can still ring into a block."""
        return max(len(self.accent), len(self.beat), len(self.sub))

    @classmethod
    def built_in(cls, rate: int) -> ClickSounds:
        """A high downbeat and a lower beat (told apart by pitch, which cuts through a
        loud in-ear mix better than level), and a quieter subdivision."""
        return cls(accent=_tone(rate, 2000.0, 1.0, 0.025),
                   beat=_tone(rate, 1000.0, 0.8, 0.020),
                   sub=_tone(rate, 1000.0, 0.8 * 10 ** (-9 / 20), 0.015),
                   rate=rate)

    @classmethod
    def from_files(cls, rate: int, accent: Path | None, beat: Path | None,
                   sub: Path | None) -> tuple[ClickSounds, list[str]]:
        """The user's samples where given and usable, the built-in sounds elsewhere, and
        what was wrong with the others as readable strings."""
        built = cls.built_in(rate)
        sounds = {"accent": built.accent, "beat": built.beat, "sub": built.sub}
        problems: list[str] = []
        for name, path in (("accent", accent), ("beat", beat), ("sub", sub)):
            if path is None:
                continue
            samples, why = read_sample(Path(path), rate, f"{name} sound")
            if why:
                problems.append(why)
            if samples is not None:
                sounds[name] = samples
        return cls(rate=rate, **sounds), problems


class ClickRenderer:
    """Adds click sounds at onsets into a block; holds no state between blocks, so any
    block that covers the same song frames gets the same samples."""

    def __init__(self, sounds: ClickSounds, level: float, accent: bool = True):
        self.sounds = sounds
        self.level = float(level)
        self.accent = accent
        # scaled once here, not per onset
        self._accent = (sounds.accent * np.float32(level)).astype(np.float32)
        self._beat = (sounds.beat * np.float32(level)).astype(np.float32)
        self._sub = (sounds.sub * np.float32(level)).astype(np.float32)
        if not accent:
            self._accent = self._beat

    @property
    def longest(self) -> int:
        return self.sounds.longest

    def render(self, song_frame0: int, out: np.ndarray,
               onsets: Iterable[tuple[int, int, int, int]]) -> None:
        """Add the sounds of `onsets` (song frame, bar, beat, subdivision) into `out`, which
        covers song frames [song_frame0, song_frame0 + len(out)). An onset before the block
        adds the rest of its sound; one after it adds nothing."""
        n = len(out)
        for frame, _bar, beat, sub in onsets:
            if sub > 0:
                sound = self._sub
            elif beat == 1:
                sound = self._accent
            else:
                sound = self._beat
            first = max(song_frame0, frame)
            last = min(song_frame0 + n, frame + len(sound))
            if first < last:
                out[first - song_frame0:last - song_frame0] += sound[first - frame:last - frame]

"""Stem files -> the device's channel layout, block by block.

Memory stays flat whatever the song length: each stem is read in blocks into arrays that
are allocated once. A stem at another sample rate is resampled once, with libsoxr, into a
cache file beside the config (keyed by path, size, mtime and rate), so the real-time path
only ever reads audio at the device rate and the next start pays nothing.

A stem that is missing, unreadable or fails mid-song becomes silence with a problem
recorded; the rest of the song plays on. That is the contract on stage: never stop.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..config import Device, Song, Stem
from .mixer import Route, mix_into

CACHE_VERSION = 1


@dataclass
class StemInfo:
    """What opening a stem found out; `problem` is None when it plays."""

    file: Path
    frames: int = 0
    channels: int = 0
    rate: int = 0
    format: str = ""
    problem: str | None = None
    resampled_from: int | None = None
    # The problem is damage, not a failure: the frames that are there still play (a file
    # whose header promises more audio than it holds, e.g. a copy cut off mid-way).
    damaged: bool = False


def probe(stem: Stem) -> StemInfo:
    """Open a stem's header only (cheap: used by `check` and for song lengths)."""
    info = StemInfo(stem.file)
    try:
        if not stem.file.exists():
            info.problem = "file not found"
            return info
        if stem.file.is_dir():
            info.problem = "is a folder, not an audio file"
            return info
        if stem.file.stat().st_size == 0:
            info.problem = "file is empty (0 bytes)"
            return info
        with open(stem.file, "rb"):  # libsndfile reports an unreadable file as "System error."
            pass
        with sf.SoundFile(str(stem.file)) as f:
            info.frames, info.channels, info.rate = f.frames, f.channels, f.samplerate
            info.format = f"{f.format}/{f.subtype}"
            promised = _promised_frames(f.extra_info, f.frames)
    except PermissionError:
        info.problem = ("permission denied: this user cannot read the file (check its owner "
                        "and mode)")
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        info.problem = f"not a readable audio file ({_reason(exc)})"
    else:
        if info.frames <= 0:
            info.problem = "holds no audio frames"
        elif not _routable(info.channels, len(stem.channels)):
            info.problem = (f"has {info.channels} channels but is routed to "
                            f"{len(stem.channels)} output channel(s) ({', '.join(stem.to)}); "
                            "route a mono stem anywhere, or N channels to N outputs")
        elif promised is not None:
            info.problem = (f"truncated: holds {info.frames} frames but its header promises "
                            f"about {promised} (the file was cut off, e.g. an interrupted "
                            "copy); the part that is there plays")
            info.damaged = True
    return info


# libsndfile clamps the frame count of a truncated WAV/AIFF/W64/RF64 file to what it holds and
# reads it without complaint; only its header log says so. Sizes of 0 or 0xFFFFFFFF mean
# "unknown" (streamed files), not a promise.
_CHUNK_SHORT = re.compile(r"^\s*(data|SSND|riff)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
_BLOCK_ALIGN = re.compile(r"Block Align\s*:\s*(\d+)")
_DS64_SHORT = re.compile(r"Calculated frame count (\d+) does not match value from 'ds64' "
                         r"chunk of (\d+)")


def _promised_frames(log: str, frames: int) -> int | None:
    """About how many frames the header promises when the file holds fewer, else None."""
    for m in _CHUNK_SHORT.finditer(log):
        declared, actual = int(m.group(2)), int(m.group(3))
        if not 0 < actual < declared < 0xFFFFFFFF or frames <= 0:
            continue
        if m.group(1) == "riff":  # W64: only the container size tells
            ba = _BLOCK_ALIGN.search(log)
            bpf = int(ba.group(1)) if ba else max(1, actual // frames)
            return frames + (declared - actual) // max(1, bpf)
        return max(frames + 1, declared // max(1, actual // frames))
    m = _DS64_SHORT.search(log)
    if m and int(m.group(1)) < int(m.group(2)):
        return int(m.group(2))
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "Error opening" in text and ":" in text:
        text = text.rsplit(":", 1)[-1].strip()
    return text or type(exc).__name__


def _routable(stem_channels: int, route_channels: int) -> bool:
    return stem_channels == 1 or stem_channels == route_channels


def cache_path(cache_dir: Path, file: Path, rate: int) -> Path:
    st = file.stat()
    key = f"{CACHE_VERSION}|{file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{rate}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir / f"{file.stem}-{rate}-{digest}.wav"


def resample_to_cache(file: Path, rate: int, cache_dir: Path, block: int = 65536) -> Path:
    """Convert a stem to `rate` once (libsoxr, very high quality), streaming, and return the
    cached file. Written to a temp name and renamed, so a power cut never leaves a half file
    that would be taken for a finished one."""
    import soxr

    out = cache_path(cache_dir, file, rate)
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    with sf.SoundFile(str(file)) as src:
        stream = soxr.ResampleStream(src.samplerate, rate, src.channels, dtype="float32",
                                     quality="VHQ")
        with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=src.channels,
                          subtype="FLOAT", format="WAV") as dst:
            buf = np.zeros((block, src.channels), np.float32)
            while True:
                got = src.read(out=buf)
                last = got.shape[0] < block
                y = stream.resample_chunk(got, last=last)
                if y.shape[0]:
                    dst.write(y)
                if last:
                    break
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, out)
    return out


class StemReader:
    """Reads one stem at the device rate into a reused block; silence past its end or after
    any failure (recorded in `info.problem`)."""

    def __init__(self, stem: Stem, rate: int, cache_dir: Path, block: int):
        self.stem = stem
        self.info = probe(stem)
        self.block = block
        self._file: sf.SoundFile | None = None
        self._buf = np.zeros((block, max(self.info.channels, 1)), np.float32)
        self.frames = 0
        self._pos = 0
        if self.info.problem and not self.info.damaged:
            return
        try:
            path = stem.file
            if self.info.rate != rate:
                path = resample_to_cache(stem.file, rate, cache_dir)
                self.info.resampled_from = self.info.rate
            self._file = sf.SoundFile(str(path))
            self.frames = self._file.frames
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            self._fail(exc)

    @property
    def ok(self) -> bool:
        return self._file is not None

    def _fail(self, exc: BaseException) -> None:
        self.info.problem = f"read failed: {_reason(exc)}"
        self.close()

    def seek(self, frame: int) -> None:
        self._pos = frame
        if self._file is not None and frame < self.frames:
            try:
                self._file.seek(frame)
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                self._fail(exc)

    def read(self, n: int) -> np.ndarray | None:
        """Up to `n` frames (n <= block) as a view of the reused buffer, zero-padded past the
        stem's end; None when the stem is silent from here on."""
        if self._file is None or self._pos >= self.frames:
            self._pos += n
            return None
        out = self._buf[:n]
        try:
            got = self._file.read(out=out).shape[0]
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            self._fail(exc)
            self._pos += n
            return None
        if got < n:
            out[got:] = 0.0
            if self._pos + got < self.frames:
                # The header promised more than the file holds: truncated on disk.
                self.info.problem = (f"truncated: ends at frame {self._pos + got} of "
                                     f"{self.frames}")
                self.frames = self._pos + got
        self._pos += n
        return out

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing a broken file must not stop the show
                pass
            self._file = None


@dataclass
class SongReader:
    """A song's stems mixed into device channels, block by block.

    The song lasts as long as its longest stem; shorter stems end in silence."""

    song: Song
    device: Device
    cache_dir: Path
    block: int = 4096
    stems: list[StemReader] = field(init=False)
    routes: list[Route] = field(init=False)
    frames: int = field(init=False)
    position: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.stems = [StemReader(s, self.device.rate, self.cache_dir, self.block)
                      for s in self.song.stems]
        self.routes = [Route.for_stem(s.stem, s.info.channels) for s in self.stems]
        self.frames = max((s.frames for s in self.stems), default=0)
        self._scratch = np.zeros(self.block, np.float32)

    @property
    def problems(self) -> list[str]:
        return [f"{s.stem.file}: {s.info.problem}" for s in self.stems if s.info.problem]

    def seek(self, frame: int) -> None:
        self.position = max(0, min(frame, self.frames))
        for s in self.stems:
            s.seek(self.position)

    def read_into(self, out: np.ndarray) -> int:
        """Mix the next frames into `out` (frames x device channels, float32, overwritten);
        returns how many frames were produced (0 at the end of the song)."""
        n = min(out.shape[0], self.frames - self.position, self.block)
        if n <= 0:
            return 0
        dst = out[:n]
        dst.fill(0.0)
        for reader, route in zip(self.stems, self.routes, strict=True):
            data = reader.read(n)
            if data is not None:
                mix_into(dst, data, route, self._scratch)
        self.position += n
        return n

    def close(self) -> None:
        for s in self.stems:
            s.close()

"""Stem files -> the device's channel layout, block by block.

Memory stays flat whatever the song length: each stem is read in blocks into arrays that
are allocated once. A stem at another sample rate is resampled once, with libsoxr, into a
cache file beside the config (keyed by path, size, mtime and rate), so the real-time path
only ever reads audio at the device rate and the next start pays nothing. A stem libsndfile
cannot open (AAC/ALAC in M4A, Opus in MP4/MKV, MP3 on an old libsndfile) is decoded once
with PyAV (FFmpeg's decoders) into the same cache, so every stem the real-time path reads
is a WAV at the device rate.

A stem that is missing, unreadable or fails mid-song becomes silence with a problem
recorded; the rest of the song plays on. That is the contract on stage: never stop.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
    # Who opens it: "libsndfile" reads the file itself in the real-time path; "pyav" means
    # libsndfile cannot, so it is decoded once into the cache (frames are then an estimate
    # from the container until the decoded file exists, which holds the exact count).
    decoder: str = "libsndfile"
    cache_file: Path | None = None  # what StemReader really reads, when not the stem itself
    # The problem is damage, not a failure: the frames that are there still play (a file
    # whose header promises more audio than it holds, e.g. a copy cut off mid-way).
    damaged: bool = False


def probe(stem: Stem) -> StemInfo:
    """Open a stem's header only (cheap: used by `check` and for song lengths)."""
    info, promised = probe_file(stem.file)
    if info.problem is not None:
        return info
    if info.frames <= 0:
        info.problem = "holds no audio frames"
    elif not _routable(info.channels, len(stem.channels)):
        info.problem = _unroutable(info.channels, stem)
    elif promised is not None:
        info.problem = (f"truncated: holds {info.frames} frames but its header promises "
                        f"about {promised} (the file was cut off, e.g. an interrupted "
                        "copy); the part that is there plays")
        info.damaged = True
    return info


def probe_file(file: Path) -> tuple[StemInfo, int | None]:
    """What the file is, routes aside (`backtrack import` asks before there is a route):
    the info, and the frames its header promises when it holds fewer."""
    info = StemInfo(file)
    promised = None
    try:
        if not file.exists():
            info.problem = "file not found"
            return info, None
        if file.is_dir():
            info.problem = "is a folder, not an audio file"
            return info, None
        if file.stat().st_size == 0:
            info.problem = "file is empty (0 bytes)"
            return info, None
        with open(file, "rb"):  # libsndfile reports an unreadable file as "System error."
            pass
        with sf.SoundFile(str(file)) as f:
            info.frames, info.channels, info.rate = f.frames, f.channels, f.samplerate
            info.format = f"{f.format}/{f.subtype}"
            promised = _promised_frames(f.extra_info, f.frames)
    except PermissionError:
        info.problem = ("permission denied: this user cannot read the file (check its owner "
                        "and mode)")
    except (sf.LibsndfileError, RuntimeError) as exc:
        # libsndfile does not know the format; FFmpeg may (AAC, ALAC, Opus in MP4...).
        why = _probe_pyav(file, info)
        if why is not None:
            info.problem = f"not a readable audio file ({_reason(exc)}; PyAV: {why})"
    except OSError as exc:
        info.problem = f"not a readable audio file ({_reason(exc)})"
    return info, promised


def _unroutable(channels: int, stem: Stem) -> str:
    return (f"has {channels} channels but is routed to {len(stem.channels)} output "
            f"channel(s) ({', '.join(stem.to)}); route a mono stem anywhere, or N channels "
            "to N outputs")


def _probe_pyav(file: Path, info: StemInfo) -> str | None:
    """Fill `info` from FFmpeg's view of the file; the reason it cannot, or None.

    PyAV is imported here, not at the top: it takes a while to load and the daemon must
    start fast (most shows never need it)."""
    try:
        import av
    except ImportError:
        return "not installed"
    try:
        with av.open(str(file)) as container:
            if not container.streams.audio:
                return "no audio stream"
            stream = container.streams.audio[0]
            cc = stream.codec_context
            rate = int(stream.rate or cc.sample_rate or 0)
            channels = int(cc.channels or len(cc.layout.channels))
            if rate <= 0 or channels <= 0:
                return "no sample rate or channel count"
            frames = _estimated_frames(container, stream, rate)
            names = container.format.name.split(",")
            ext = file.suffix.lower().lstrip(".")
            codec = getattr(stream.codec, "canonical_name", None) or cc.name
    except Exception as exc:  # noqa: BLE001 - whatever FFmpeg says, the file is unreadable
        return _av_reason(exc)
    info.frames, info.channels, info.rate = frames, channels, rate
    info.format = f"{ext if ext in names else names[0]}/{codec}"
    info.decoder = "pyav"
    return None


def _estimated_frames(container: Any, stream: Any, rate: int) -> int:
    """Length from the container's bookkeeping (close, not exact: encoder delay and padding
    are the decoder's business); summing packet durations when it keeps none."""
    import av

    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    if container.duration:
        return round(container.duration * rate / av.time_base)
    ticks = sum(p.duration or 0 for p in container.demux(stream))
    return round(ticks * stream.time_base * rate) if stream.time_base else 0


def _av_reason(exc: BaseException) -> str:
    """FFmpeg's words without PyAV's errno and call site ("[Errno 1094995529] Invalid data
    found when processing input: 'avcodec_send_packet()'")."""
    return getattr(exc, "strerror", None) or _reason(exc)


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


@contextmanager
def _cache_writer(out: Path, rate: int, channels: int) -> Iterator[sf.SoundFile]:
    """A FLOAT WAV written under a temp name, synced and renamed into place only when the
    block finished without error: a power cut or a failed conversion never leaves a half
    file that the next start would take for a finished one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=channels,
                          subtype="FLOAT", format="WAV") as dst:
            yield dst
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_at_rate(dst: sf.SoundFile, blocks: Iterable[np.ndarray], src_rate: int,
                   channels: int) -> None:
    """Stream float32 blocks into `dst`, through libsoxr (very high quality) when the source
    rate differs; blocks may be views of a reused buffer (soxr copies what it keeps)."""
    if src_rate == dst.samplerate:
        for b in blocks:
            dst.write(b)
        return
    import soxr

    stream = soxr.ResampleStream(src_rate, dst.samplerate, channels, dtype="float32",
                                 quality="VHQ")
    for b in blocks:
        y = stream.resample_chunk(b)
        if y.shape[0]:
            dst.write(y)
    y = stream.resample_chunk(np.zeros((0, channels), np.float32), last=True)
    if y.shape[0]:
        dst.write(y)


def resample_to_cache(file: Path, rate: int, cache_dir: Path, block: int = 65536) -> Path:
    """Convert a stem to `rate` once, streaming, and return the cached file."""
    out = cache_path(cache_dir, file, rate)
    if out.exists():
        return out
    with sf.SoundFile(str(file)) as src:
        buf = np.zeros((block, src.channels), np.float32)

        def blocks() -> Iterator[np.ndarray]:
            while True:
                got = src.read(out=buf)
                if got.shape[0]:
                    yield got
                if got.shape[0] < block:
                    return

        with _cache_writer(out, rate, src.channels) as dst:
            _write_at_rate(dst, blocks(), src.samplerate, src.channels)
    return out


# A decode that broke off part-way keeps what came before (the contract for a truncated
# file: the part that is there plays); the cached WAV says so in its comment, so every later
# start and `check` report it, not only the run that decoded it.
DAMAGE_TAG = "backtrack-damaged: "


def decode_to_cache(file: Path, rate: int, cache_dir: Path) -> Path:
    """Decode a stem libsndfile cannot read with PyAV, once, into a FLOAT WAV at `rate` in
    the cache, and return it. Same key as resample_to_cache: a source takes one of the two
    paths, and both give the same audio at that rate, so sharing the name is right.

    Decoded at the source rate and converted with libsoxr like any other stem (FFmpeg's
    resampler is only asked for float samples). Slow enough (seconds for a song on a Pi)
    that it belongs to `check` or the first load, never to the real-time path."""
    import av

    out = cache_path(cache_dir, file, rate)
    if out.exists():
        return out
    with av.open(str(file)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        damage: list[str] = []
        decoded = _decoded(container, stream, damage)
        try:
            src_rate, first = next(decoded)
        except StopIteration:
            raise ValueError("no audio decoded") from None
        channels = first.shape[1]
        with _cache_writer(out, rate, channels) as dst:
            _write_at_rate(dst, itertools.chain([first], (b for _, b in decoded)), src_rate,
                           channels)
            if damage:
                expected = _estimated_frames(container, stream, src_rate) / src_rate
                of = f" of about {expected:.1f} s" if expected > 0 else ""
                dst.comment = (f"{DAMAGE_TAG}truncated or damaged: decoding stopped after "
                               f"{dst.frames / rate:.1f} s{of} ({damage[0]}); the part "
                               "before plays")
    return out


def _decoded(container: Any, stream: Any, damage: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """(source rate, float32 frames x channels) per decoded frame. An FFmpeg error after
    some audio came out ends the stream and is noted in `damage`; before any, it is raised."""
    import av

    to_float = av.AudioResampler(format="flt")  # packed float, same rate and layout
    got = 0
    try:
        for frame in container.decode(stream):
            for f in to_float.resample(frame):
                a = f.to_ndarray().reshape(-1, len(f.layout.channels))
                got += a.shape[0]
                yield f.sample_rate, a
        for f in to_float.resample(None):
            a = f.to_ndarray().reshape(-1, len(f.layout.channels))
            yield f.sample_rate, a
    except av.error.FFmpegError as exc:
        if not got:
            raise
        damage.append(_av_reason(exc))


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
        path = stem.file
        if self.info.decoder == "pyav":
            try:
                path = decode_to_cache(stem.file, rate, cache_dir)
            except Exception as exc:  # noqa: BLE001 - FFmpeg's errors are many; the show goes on
                self.info.problem = f"decoding failed (PyAV): {_av_reason(exc)}"
                return
        try:
            if self.info.decoder == "libsndfile" and self.info.rate != rate:
                path = resample_to_cache(stem.file, rate, cache_dir)
            if self.info.rate != rate:
                self.info.resampled_from = self.info.rate
            if path != stem.file:
                self.info.cache_file = path
            self._file = sf.SoundFile(str(path))
            self.frames = self._file.frames
            if self.info.decoder == "pyav":
                self._adopt_decoded(self._file)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            self._fail(exc)

    def _adopt_decoded(self, f: sf.SoundFile) -> None:
        """The decoded file is the truth, not the container's header: its frame count is
        exact (`self.frames`), its channels are what FFmpeg produced (mono AAC with
        parametric stereo decodes to two), and its comment says whether the decode broke
        off."""
        if f.channels != self.info.channels:
            self.info.channels = f.channels
            self._buf = np.zeros((self.block, f.channels), np.float32)
            if not _routable(f.channels, len(self.stem.channels)):
                self.info.problem = _unroutable(f.channels, self.stem)
                self.close()
                self.frames = 0  # as when the probe finds it: silent and no length
                return
        if f.comment.startswith(DAMAGE_TAG):
            self.info.problem = f.comment[len(DAMAGE_TAG):]
            self.info.damaged = True

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
        self._base = list(self.routes)

    def set_gains(self, gains: list[float]) -> None:
        """The live mix's factor per stem (appliance.livemix), on top of each stem's gain
        from the song file; a stem at 0 is still read (it keeps its place) but not mixed."""
        self.routes = [replace(r, gain=np.float32(r.gain * g))
                       for r, g in zip(self._base, gains, strict=True)]

    @property
    def problems(self) -> list[str]:
        return [f"{s.stem.file}: {s.info.problem}" for s in self.stems if s.info.problem]

    def seek(self, frame: int) -> None:
        """A negative frame is before the audio (a count-in): silence until frame 0."""
        self.position = min(frame, self.frames)
        for s in self.stems:
            s.seek(max(0, self.position))

    def read_into(self, out: np.ndarray) -> int:
        """Mix the next frames into `out` (frames x device channels, float32, overwritten);
        returns how many frames were produced (0 at the end of the song)."""
        n = min(out.shape[0], self.frames - self.position, self.block)
        if n <= 0:
            return 0
        dst = out[:n]
        dst.fill(0.0)
        if self.position < 0:
            n = min(n, -self.position)
            self.position += n
            return n
        for reader, route in zip(self.stems, self.routes, strict=True):
            data = reader.read(n)
            if data is not None and route.gain != 0.0:
                mix_into(dst, data, route, self._scratch)
        self.position += n
        return n

    def close(self) -> None:
        for s in self.stems:
            s.close()

"""`backtrack render`: write exactly what `run` would play, offline and much faster than real
time, so a band can listen to its show at home.

Uses the live engine's own pieces (SongReader, mix_into, Converter); the WAV's data chunk is
the very byte stream the sound card would be handed (`Converter.convert`), so it holds the
device's samples bit for bit (S16 -> 16-bit PCM, S24_3LE -> 24-bit, S32 -> 32-bit, FLOAT ->
32-bit float; RF64 beyond 4 GiB).
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import numpy as np

from .audio.formats import FORMAT_INFO, Converter
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


_GUID_TAIL = bytes.fromhex("00001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_* after Data1


class WavWriter:
    """Device-format bytes straight into a WAV file, header patched on close.

    libsndfile would convert the samples once more on the way out (for 24-bit that cost as
    much as the whole mix); here the bytes are written as they are. WAVE_FORMAT_EXTENSIBLE
    for more than 2 channels or more than 16 bits (as Microsoft asks), RF64 when
    the data may exceed 4 GiB (decided from `frames_hint`, the length known in advance)."""

    def __init__(self, path: Path, rate: int, channels: int, fmt: str, frames_hint: int = 0):
        sample_bytes, bits = FORMAT_INFO[fmt]
        self.rate, self.channels = rate, channels
        self.float = bits == 0
        self.bits = 8 * sample_bytes
        self.block_align = sample_bytes * channels
        self.rf64 = frames_hint * self.block_align > 0xFFFFFFFF - (1 << 20)
        self.frames = 0
        self._bytes = 0
        self._fh = open(path, "wb")  # closed in close()
        self._fh.write(self._header())

    def _header(self) -> bytes:
        extensible = self.channels > 2 or self.bits > 16
        tag = 3 if self.float else 1
        fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, self.channels, self.rate,
                          self.rate * self.block_align, self.block_align, self.bits)
        if extensible:
            fmt += struct.pack("<HHI", 22, self.bits, 0) + struct.pack("<I", tag) + _GUID_TAIL
        elif self.float:
            fmt += struct.pack("<H", 0)
        data = self._bytes
        big = self.rf64
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
        if self.float and not big:  # RF64 keeps the frame count in ds64 instead
            chunks += b"fact" + struct.pack("<II", 4, self.frames)
        head = b"WAVE"
        if big:
            head += b"ds64" + struct.pack("<I", 28)
            riff_size = 4 + 36 + len(chunks) + 8 + data + (data & 1)
            head += struct.pack("<QQQI", riff_size, data, self.frames, 0)
        riff_size = 4 + (36 if big else 0) + len(chunks) + 8 + data + (data & 1)
        return ((b"RF64" if big else b"RIFF")
                + struct.pack("<I", 0xFFFFFFFF if big else riff_size)
                + head + chunks + b"data" + struct.pack("<I", 0xFFFFFFFF if big else data))

    def write(self, data: memoryview | bytes) -> None:
        self._fh.write(data)
        self._bytes += len(data)
        self.frames = self._bytes // self.block_align

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            if self._bytes & 1:
                self._fh.write(b"\0")  # chunks are word-aligned; the pad is not data
            if not self.rf64 and self._bytes > 0xFFFFFFFF - 1024:
                raise OSError("more than 4 GiB of audio; cannot write it as WAV")
            self._fh.seek(0)
            self._fh.write(self._header())
        finally:
            self._fh.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



"""Float mix -> device sample format, with correct rounding and no allocation per block.

One converter serves the offline render and the live writer, so what `render` writes is
bit-for-bit what the sound card receives.
"""

from __future__ import annotations

import numpy as np

# format -> (bytes per sample, integer bits or 0 for float)
FORMAT_INFO = {
    "S16_LE": (2, 16),
    "S24_3LE": (3, 24),
    "S32_LE": (4, 32),
    "FLOAT_LE": (4, 0),
}


class Converter:
    """Converts float32 blocks of up to `max_frames` x `channels` into device bytes.

    Full scale is +-1.0 -> +-2^(bits-1), rounded half to even; values beyond full scale are
    clipped and counted (a clipped mix is something the engineer must hear about before the
    show, not discover in the PA)."""

    def __init__(self, fmt: str, channels: int, max_frames: int, count_clips: bool = True):
        self.fmt = fmt
        # The live writer does not count (check and render do): three NumPy passes a period
        # are a third of its conversion cost, and nobody reads the count mid-show.
        self.count_clips = count_clips
        self.channels = channels
        self.max_frames = max_frames
        self.sample_bytes, bits = FORMAT_INFO[fmt]
        self.bits = bits
        self.clipped = 0
        self._work = np.zeros((max_frames, channels), np.float32)
        self._mask = np.zeros((max_frames, channels), np.bool_)
        self._out = bytearray(max_frames * channels * self.sample_bytes)
        if bits:
            scale = float(2 ** (bits - 1))
            self._scale = np.float32(scale)
            self._inv = np.float32(1.0 / scale)
            # The largest float32 not above 2^(bits-1) - 1: for 32 bits, 2^31 - 1 rounds up to
            # 2^31 in float32, which would wrap to INT_MIN on the cast.
            self._hi = np.float32(np.nextafter(np.float32(scale), np.float32(0))
                                  if bits > 24 else scale - 1)
            self._lo = np.float32(-scale)
            dtype = np.int16 if bits == 16 else np.int32
            self._ints = np.zeros((max_frames, channels), dtype)
        self._out_np = np.frombuffer(self._out, np.uint8)
        # the output buffer seen as device samples, for the formats NumPy has a type for
        if self.sample_bytes != 3:
            dtype = np.float32 if not bits else (np.int16 if bits == 16 else np.int32)
            self._typed = self._out_np.view(dtype).reshape(max_frames, channels)

    def _scaled(self, block: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Clip-count, scale, round and limit `block` into `out` (float work buffer or the
        typed output). np.minimum/np.maximum rather than np.clip: same result, without
        np.clip's Python-level wrapper (it shows up at one call per period)."""
        n = block.shape[0]
        w = self._work[:n]
        if self.count_clips:
            m = self._mask[:n]
            np.abs(block, out=w)
            np.greater(w, 1.0, out=m)
            self.clipped += int(np.count_nonzero(m))
        if not self.bits:
            np.minimum(block, 1.0, out=w)
            np.maximum(w, -1.0, out=out)
            return out
        np.multiply(block, self._scale, out=w)
        np.rint(w, out=w)
        np.minimum(w, self._hi, out=w)
        np.maximum(w, self._lo, out=w)
        np.copyto(out, w, casting="unsafe")
        return out

    def quantize(self, block: np.ndarray) -> np.ndarray:
        """The block as the integer (or float) samples the device format holds; a view into
        a reused buffer, valid until the next call. S24 comes back as int32 in the low 24
        bits' range (-2^23 .. 2^23-1)."""
        n = block.shape[0]
        return self._scaled(block, self._work[:n] if not self.bits else self._ints[:n])

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.sample_bytes

    def convert(self, block: np.ndarray, out: np.ndarray | None = None) -> memoryview:
        """Device bytes for the block: into `out` (uint8, frames x frame_bytes, contiguous)
        when given, else into a reused buffer valid until the next call."""
        n = block.shape[0]
        nbytes = n * self.channels * self.sample_bytes
        dst_np = self._out_np[:nbytes] if out is None else out.reshape(-1)
        if self.sample_bytes == 3:
            q = self.quantize(block)
            # Low three bytes of each little-endian int32, one byte column at a time: about
            # 6x faster than copying 3-byte rows (numpy copies those item by item).
            dst = dst_np.reshape(n * self.channels, 3)
            src = q.reshape(-1).view(np.uint8).reshape(-1, 4)
            for i in range(3):
                dst[:, i] = src[:, i]
        elif out is None:
            self._scaled(block, self._typed[:n])
        else:
            self._scaled(block, dst_np.view(self._typed.dtype).reshape(n, self.channels))
        return memoryview(self._out)[:nbytes] if out is None else memoryview(dst_np)

    def dequantize(self, raw: np.ndarray, out: np.ndarray) -> None:
        """Device bytes (uint8, frames x frame_bytes, contiguous) back to float32 frames in
        `out`: the exact inverse of `convert` for every value it produces (a power-of-two
        scale), so a period the writer has to touch (a fade, a frame correction) keeps the
        untouched frames bit for bit."""
        n = raw.shape[0]
        if self.sample_bytes == 3:
            m = n * self.channels
            ints = self._ints.reshape(-1)[:m]
            wide = ints.view(np.uint8).reshape(m, 4)
            wide[:, 0] = 0
            wide[:, 1:] = raw.reshape(m, 3)
            np.right_shift(ints, 8, out=ints)  # arithmetic: the sign comes back
            np.multiply(ints.reshape(n, self.channels), self._inv, out=out)
        elif not self.bits:
            np.copyto(out, raw.reshape(-1).view(np.float32).reshape(n, self.channels))
        else:
            typed = raw.reshape(-1).view(self._typed.dtype).reshape(n, self.channels)
            np.multiply(typed, self._inv, out=out)

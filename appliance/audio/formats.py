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

    def convert(self, block: np.ndarray) -> memoryview:
        """Device bytes for the block; a view into a reused buffer, valid until the next call."""
        n = block.shape[0]
        nbytes = n * self.channels * self.sample_bytes
        if self.sample_bytes == 3:
            q = self.quantize(block)
            # Low three bytes of each little-endian int32, one byte column at a time: about
            # 6x faster than copying 3-byte rows (numpy copies those item by item).
            dst = self._out_np[:nbytes].reshape(n * self.channels, 3)
            src = q.reshape(-1).view(np.uint8).reshape(-1, 4)
            for i in range(3):
                dst[:, i] = src[:, i]
        else:
            self._scaled(block, self._typed[:n])
        return memoryview(self._out)[:nbytes]

"""Single-producer single-consumer ring of device-format frames, allocated once.

It holds the bytes the sound card takes (the decode thread converts in big blocks), so the
writer hands most periods to ALSA straight from the ring: no per-period mixing or format
conversion in the real-time thread.

The decode thread writes, the writer thread reads; each side only ever advances its own
counter (`written` / `read`, monotonic frame counts), so no lock is needed: under CPython an
attribute store is atomic, and a side only trusts frames the other side has published.
"""

from __future__ import annotations

import numpy as np


class Ring:
    def __init__(self, frames: int, frame_bytes: int):
        self.capacity = frames
        self.frame_bytes = frame_bytes
        self.buf = np.zeros((frames, frame_bytes), np.uint8)
        self.written = 0  # producer's counter
        self.read = 0     # consumer's counter

    def readable(self) -> int:
        return self.written - self.read

    def writable(self) -> int:
        return self.capacity - (self.written - self.read)

    def write_region(self) -> np.ndarray:
        """The contiguous free space after the write point (may be shorter than writable()
        at the wrap); fill it, then `commit`."""
        start = self.written % self.capacity
        n = min(self.writable(), self.capacity - start)
        return self.buf[start:start + n]

    def commit(self, n: int) -> None:
        self.written += n

    def read_into(self, out: np.ndarray, n: int) -> None:
        """Copy the next n frames (n <= readable()) into out[:n] and consume them."""
        start = self.read % self.capacity
        first = min(n, self.capacity - start)
        np.copyto(out[:first], self.buf[start:start + first])
        if first < n:
            np.copyto(out[first:n], self.buf[:n - first])
        self.read += n

    def peek(self, n: int, scratch: np.ndarray) -> np.ndarray:
        """The next n frames (n <= readable()) without consuming them: a view into the ring,
        or a copy in `scratch` where they wrap. Valid until `skip(n)`, which the caller does
        once it is done with them (the producer may overwrite them from then on)."""
        start = self.read % self.capacity
        if start + n <= self.capacity:
            return self.buf[start:start + n]
        first = self.capacity - start
        np.copyto(scratch[:first], self.buf[start:])
        np.copyto(scratch[first:n], self.buf[:n - first])
        return scratch[:n]

    def skip(self, n: int) -> None:
        """Consume n frames (n <= readable()) without reading them."""
        self.read += max(0, n)

    def reset(self) -> None:
        """Only while neither side is using the ring (see Slot ownership in engine)."""
        self.written = 0
        self.read = 0

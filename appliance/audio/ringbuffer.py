"""Single-producer single-consumer ring of float32 frames, allocated once.

The decode thread writes, the writer thread reads; each side only ever advances its own
counter (`written` / `read`, monotonic frame counts), so no lock is needed: under CPython an
attribute store is atomic, and a side only trusts frames the other side has published.
"""

from __future__ import annotations

import numpy as np


class Ring:
    def __init__(self, frames: int, channels: int):
        self.capacity = frames
        self.channels = channels
        self.buf = np.zeros((frames, channels), np.float32)
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

    def skip(self, n: int) -> None:
        """Consume n frames (n <= readable()) without reading them."""
        self.read += max(0, n)

    def reset(self) -> None:
        """Only while neither side is using the ring (see Slot ownership in engine)."""
        self.written = 0
        self.read = 0

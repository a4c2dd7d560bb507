"""Stem channels -> device channels with gain.

Routing rule (documented in config/README.md): a mono stem feeds every channel of its
route; an N-channel stem routed to N channels feeds them in order. Anything else is an
error reported by `check` and played as silence.

The same `mix_into` runs in `render` and in the live decode thread, so the offline render
is what the box plays. It works in place with NumPy (no per-block allocation, and NumPy
releases the GIL for the arithmetic, which keeps the writer thread responsive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Stem


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


@dataclass(frozen=True)
class Route:
    """(stem channel, device channel) pairs and one linear gain; empty = silent stem."""

    pairs: tuple[tuple[int, int], ...]
    gain: np.float32

    @classmethod
    def for_stem(cls, stem: Stem, stem_channels: int) -> Route:
        gain = np.float32(db_to_gain(stem.gain_db))
        if stem_channels == 1:
            return cls(tuple((0, ch) for ch in stem.channels), gain)
        if stem_channels == len(stem.channels):
            return cls(tuple(enumerate(stem.channels)), gain)
        return cls((), gain)


def mix_into(out: np.ndarray, data: np.ndarray, route: Route, scratch: np.ndarray) -> None:
    """out[:, dev] += gain * data[:, src] for each pair of the route, in place. `scratch` is
    a float32 vector at least as long as the block, owned by the caller (one per thread)."""
    n = out.shape[0]
    unity = route.gain == 1.0
    for src, dev in route.pairs:
        col = out[:n, dev]
        if unity:
            np.add(col, data[:n, src], out=col)
        else:
            tmp = np.multiply(data[:n, src], route.gain, out=scratch[:n])
            np.add(col, tmp, out=col)

"""The equal-power crossfade of a jump or a vamp's turn, in one place.

The live writer and `backtrack render --script` both apply it, and a render is only worth
listening to if it is sample for sample what the box plays: so neither computes the gains
itself, both take them from here.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MS = 10.0  # a song without a structure (the song-file default is the same)


def fade_frames(crossfade_ms: float | None, rate: int) -> int:
    """Frames a crossfade of `crossfade_ms` lasts at `rate`; at least one, so a switch
    always has a fade to run (truncated, not rounded: what the writer has always used)."""
    ms = DEFAULT_MS if crossfade_ms is None else float(crossfade_ms)
    return max(1, int(ms * rate / 1000))


def equal_power(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(gain out, gain in), float32 (n, 1) columns for broadcasting over channels: cos and
    sin of a quarter turn sampled at the middle of each frame, so the two sum to constant
    power, neither side is ever exactly 0 or 1 inside the fade, and the fade is symmetric
    (gain out at frame k is gain in at frame n - 1 - k). Computed in float64, rounded once."""
    if n < 1:
        raise ValueError("a crossfade lasts one frame or more")
    t = (np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)
    g_out = np.cos(t).astype(np.float32).reshape(-1, 1)
    g_in = np.sin(t).astype(np.float32).reshape(-1, 1)
    return g_out, g_in


def linear(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(gain out, gain in) summing to one at every frame: for a switch between two slots of
    the same audio under different mixes (a live mute or trim), where an equal-power fade
    would lift the level by 3 dB in its middle. Same (n, 1) columns as `equal_power`."""
    if n < 1:
        raise ValueError("a crossfade lasts one frame or more")
    g_in = ((np.arange(n, dtype=np.float64) + 0.5) / n).astype(np.float32).reshape(-1, 1)
    return (np.float32(1.0) - g_in).astype(np.float32), g_in

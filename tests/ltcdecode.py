"""An LTC reader for the tests, written from the standard and not from the encoder (a bug
copied into both halves would otherwise pass): zero crossings -> intervals -> biphase-mark
bits -> sync words -> BCD fields.

It reads a recording as a hardware reader would, so it copes with what a recording holds:
the signal may start and stop mid-frame, with silence around it, at any level.
"""

from __future__ import annotations

import numpy as np

SYNC = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1], np.int8)  # bits 64..79


def crossings(x: np.ndarray, rate: int) -> list[float]:
    """Times (fractional sample indices) of the signal's transitions: zero crossings found
    with hysteresis, plus where it starts out of and stops into silence (the first edge of a
    signal that starts from silence is only half an edge)."""
    x = np.asarray(x, np.float64)
    mag = np.abs(x)
    peak = float(mag.max()) if len(x) else 0.0
    if peak <= 0.0:
        return []
    level = float(np.median(mag[mag > 0.1 * peak]))
    high, quiet_below = 0.4 * level, 0.05 * level
    state = np.zeros(len(x), np.int8)
    state[x > high] = 1
    state[x < -high] = -1
    # silence: a run of quiet samples longer than any edge (1 ms: two half-bits at 24 fps),
    # or any at either end of the recording (what came before or after is unknown)
    quiet = np.concatenate(([0], (mag < quiet_below).astype(np.int8), [0]))
    starts = np.flatnonzero(np.diff(quiet) == 1)
    ends = np.flatnonzero(np.diff(quiet) == -1)
    for a, b in zip(starts, ends, strict=True):
        if b - a >= rate // 1000 or a == 0 or b == len(x):
            state[a:b] = 2
    where = np.flatnonzero(state)
    seq = state[where]
    xs = x.tolist()
    out: list[float] = []
    for c in np.flatnonzero(seq[1:] != seq[:-1]).tolist():
        old, new = int(seq[c]), int(seq[c + 1])
        a, b = int(where[c]), int(where[c + 1])
        if old == 2:  # out of silence: the last silent sample is the edge
            out.append(float(a))
        elif new == 2:  # into silence: the first silent sample
            out.append(float(b))
        else:
            j = a + 1
            while j < b and xs[j] * new < 0:
                j += 1
            y0, y1 = xs[j - 1], xs[j]
            out.append(j - 1 + y0 / (y0 - y1) if y0 != y1 else float(j))
    return out


def bit_runs(times: list[float]) -> list[list[tuple[float, int]]]:
    """Runs of (start time, bit) from transition times: one interval of a bit period is a 0,
    two of half a period a 1. The bit period is estimated, then tracked; an interval that
    fits neither (a gap of silence, a glitch) ends the run."""
    if len(times) < 3:
        return []
    d = np.diff(np.asarray(times))
    typical = d[d < 5 * np.median(d)]
    period = float(np.percentile(typical, 90))
    runs: list[list[tuple[float, int]]] = [[]]
    pending: float | None = None  # start of a first half-period interval
    for t0, dt in zip(times[:-1], d.tolist(), strict=True):
        if dt > 1.5 * period or dt < 0.25 * period:
            if runs[-1]:
                runs.append([])
            pending = None
        elif dt > 0.75 * period:
            runs[-1].append((t0, 0))
            pending = None  # a half period before a whole one: out of step, now in step
            period += 0.1 * (dt - period)
        elif pending is None:
            pending = t0
        else:
            runs[-1].append((pending, 1))
            period += 0.1 * (dt + (t0 - pending) - period)
            pending = None
    return [r for r in runs if r]


def _field(bits: np.ndarray, first: int, width: int) -> int:
    return sum(int(bits[first + i]) << i for i in range(width))


def frames_with_bits(x: np.ndarray, rate: int) -> list[tuple[float, np.ndarray]]:
    """(start time of bit 0, the 80 bits) of each complete frame, in order."""
    found: list[tuple[float, np.ndarray]] = []
    for run in bit_runs(crossings(x, rate)):
        bits = np.array([b for _, b in run], np.int8)
        if len(bits) < 80:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(bits, 16)
        for p in np.flatnonzero((windows == SYNC).all(axis=1)).tolist():
            if p >= 64:
                found.append((run[p - 64][0], bits[p - 64:p + 16].copy()))
    return found


def decode(x: np.ndarray, rate: int) -> list[tuple[float, str, bool]]:
    """(sample index where the frame's first bit starts, fractional; "HH:MM:SS:FF" with ";"
    before FF for drop frame; drop-frame flag) of each complete frame."""
    out: list[tuple[float, str, bool]] = []
    for start, bits in frames_with_bits(x, rate):
        ff = _field(bits, 0, 4) + 10 * _field(bits, 8, 2)
        ss = _field(bits, 16, 4) + 10 * _field(bits, 24, 3)
        mm = _field(bits, 32, 4) + 10 * _field(bits, 40, 3)
        hh = _field(bits, 48, 4) + 10 * _field(bits, 56, 2)
        drop = bool(bits[10])
        out.append((start, f"{hh:02d}:{mm:02d}:{ss:02d}{';' if drop else ':'}{ff:02d}", drop))
    return out

"""SMPTE/EBU linear timecode (LTC) as audio, a pure function of the song frame.

Lights, video and DAWs chase the song position from this signal, so it has to say exactly
where the song is, on both units of a pair and after every loop or jump. Hence no state
between calls: the value of each output sample is computed from its song frame alone, in
integer arithmetic (so rendering a stretch in one call or in any pieces gives the same bits,
and a float rounding can never move an edge by a sample on one unit and not the other).

Timing: the edges sit at their exact times, not at the nearest sample. Timecode frame k
starts at song frame k * rate / fps (29.97 is 30000/1001), which a reader sees as the
zero crossing between two samples; the frames are 1601 or 1602 samples long at 29.97 fps
and 48 kHz, and do not drift. Edges are raised-cosine ramps with a 25 us rise time
(10-90 %, SMPTE 12M), not steps: a square wave rings in the converter's filters and some
readers miscount the overshoot.

Every frame carries its polarity correction bit (bit 27, or bit 59 at 25 fps), which makes
its count of zeros even. A biphase-mark frame then has an even number of transitions, so
every frame starts on the same polarity and its waveform depends on its own bits only.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

import numpy as np

FPS = (24.0, 25.0, 29.97, 30.0)

# (numerator, denominator, nominal frames per second counted in the labels)
_RATES = {24.0: (24, 1, 24), 25.0: (25, 1, 25), 29.97: (30000, 1001, 30), 30.0: (30, 1, 30)}
SYNC = (0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1)  # bits 64..79, in transmission order
RISE_US = 25.0
_Q_BITS = 10  # each half-bit split into 2**10 steps for the edge shape: ~0.01 sample
_Q = 1 << _Q_BITS
_CHUNK = 8192  # samples per pass: the work arrays stay in the CPU's cache



def _half_bit_table() -> np.ndarray:
    """Table offsets of a byte's 16 half-bits, by (parity of the transitions before it,
    byte): biphase mark has a transition at every bit boundary and one mid-bit for a 1, so
    a byte's waveform depends only on its bits and the level it starts from."""
    table = np.zeros((2, 256, 16), np.int64)
    for parity in range(2):
        for byte in range(256):
            count = parity
            for bit in range(8):
                one = (byte >> bit) & 1
                count += 1  # the bit boundary
                # the last half-bit of every bit ends on a boundary: a transition
                table[parity, byte, 2 * bit] = (count & 1) << 2 | 1 << 1 | one
                count += one
                table[parity, byte, 2 * bit + 1] = (count & 1) << 2 | one << 1 | 1
    return (table << _Q_BITS).reshape(512, 16)


_HALF_BITS = _half_bit_table()
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.int64)
# the sync word, bits 64..79 as two bytes (bit 64 is the least significant of the first)
_SYNC_BYTES = np.array([sum(b << i for i, b in enumerate(SYNC[:8])),
                        sum(b << i for i, b in enumerate(SYNC[8:]))], np.uint8)



@functools.cache
def _second_bytes() -> np.ndarray:
    """Bits 16..63 by second of the day: BCD seconds, minutes, hours; user bits and flags
    zero (the polarity bit is set per frame)."""
    secs = np.arange(86400)
    hh, mm, ss = secs // 3600, secs // 60 % 60, secs % 60
    return np.stack([ss % 10, ss // 10, mm % 10, mm // 10, hh % 10, hh // 10],
                    axis=1).astype(np.uint8)


@functools.cache
def _drop_skips() -> np.ndarray:
    """Labels skipped before frame `rest` of a ten-minute block of 29.97 drop-frame: two at
    each minute but the first (17982 frames: 1800 + 9 * 1798)."""
    rest = np.arange(17982)
    return np.where(rest > 1, 2 * ((rest - 2) // 1798), 0)


_LABEL = re.compile(r"^\s*(\d{1,2})[:.;](\d{2})[:.;](\d{2})[:.;,](\d{2})\s*$")


class LtcEncoder:
    """LTC for song frames 0 onwards (before song frame 0, a count-in, it is silent)."""

    def __init__(self, fps: float, rate: int, *, drop_frame: bool | None = None,
                 start: str = "00:00:00:00", level: float = 0.5):
        key = next((f for f in FPS if abs(float(fps) - f) < 1e-6), None)
        if key is None:
            raise ValueError(f"LTC frame rate {fps!r} is not one of "
                             f"{', '.join(f'{f:g}' for f in FPS)}")
        if rate < 8000:
            raise ValueError(f"sample rate {rate} is too low for LTC (8000 or more)")
        num, den, nominal = _RATES[key]
        if drop_frame is None:
            drop_frame = key == 29.97
        if drop_frame and key != 29.97:
            raise ValueError(f"drop-frame timecode exists at 29.97 fps only, not {fps:g}")
        self.fps = key
        self.rate = int(rate)
        self.drop_frame = bool(drop_frame)
        self.level = float(level)
        self._nominal = nominal
        self._fps_ratio = (num, den)
        self._per_day = 24 * 3600 * nominal - (24 * 6 * 9 * 2 if drop_frame else 0)
        self._start = self._count_of(start)
        # half-bit index * 2**_Q_BITS of song frame n = floor(n * _mul / _div), exactly
        step = Fraction(160 * num * _Q, den * self.rate)
        self._mul, self._div = step.numerator, step.denominator
        self._parity_bit = 59 if key == 25.0 else 27
        # bits 0..15: frame units, user bits, frame tens, drop-frame flag, colour frame
        ff = np.arange(nominal)
        self._frame_bytes = np.stack([ff % 10, ff // 10 | (4 if drop_frame else 0)],
                                     axis=1).astype(np.uint8)
        self._table = self._edge_table(num, den)
        self._u = np.zeros(_CHUNK, np.int64)
        self._q = np.zeros(_CHUNK, np.int64)
        self._val = np.zeros(_CHUNK, np.float32)
        self._steps = np.arange(_CHUNK, dtype=np.int64) * self._mul

    # -- labels ---------------------------------------------------------------------------

    def _count_of(self, label: str) -> int:
        """The frame count of a label (drop-frame labels skip counts, so they are not just
        HH*3600+... frames)."""
        m = _LABEL.match(label)
        if m is None:
            raise ValueError(f"timecode {label!r} is not HH:MM:SS:FF")
        hh, mm, ss, ff = (int(g) for g in m.groups())
        if hh >= 24 or mm >= 60 or ss >= 60 or ff >= self._nominal:
            raise ValueError(f"timecode {label!r} is out of range (hours < 24, minutes and "
                             f"seconds < 60, frames < {self._nominal})")
        if self.drop_frame and ss == 0 and ff < 2 and mm % 10:
            raise ValueError(f"timecode {label!r} does not exist in drop-frame counting "
                             "(frames 00 and 01 are skipped at each minute but every tenth)")
        count = (hh * 3600 + mm * 60 + ss) * self._nominal + ff
        if self.drop_frame:
            minutes = hh * 60 + mm
            count -= 2 * (minutes - minutes // 10)
        return count

    def _labels(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(second of the day, frame in that second) of timecode frames k (int64 arrays)."""
        n = (self._start + k) % self._per_day
        if self.drop_frame:
            tens, rest = np.divmod(n, 17982)
            n += 18 * tens + _drop_skips()[rest]
        secs, ff = np.divmod(n, self._nominal)
        return secs, ff

    def _frame_index(self, song_frame: int) -> int:
        return ((song_frame * self._mul // self._div) >> _Q_BITS) // 160

    def timecode_at(self, song_frame: int) -> str:
        """The label of the timecode frame at that song frame: frame k from the song frame
        nearest its first edge (k * rate / fps, rounded half up) on. Before song frame 0 it
        counts back from `start`, though nothing is rendered there."""
        num, den = self._fps_ratio
        k = ((2 * int(song_frame) + 1) * num - 1) // (2 * self.rate * den)
        secs, ff = (int(a[0]) for a in self._labels(np.array([k], np.int64)))
        hh, mm, ss = secs // 3600, secs // 60 % 60, secs % 60
        return f"{hh:02d}:{mm:02d}:{ss:02d}{';' if self.drop_frame else ':'}{ff:02d}"

    # -- waveform -------------------------------------------------------------------------

    def _edge_table(self, num: int, den: int) -> np.ndarray:
        """Sample value by (state, position in the half-bit): state = level bit * 4 +
        transition at the half-bit's start * 2 + transition at its end."""
        half_bit = self.rate * den / (160 * num)  # samples
        width = min(RISE_US * 1e-6 * self.rate / (2 * math.asin(0.8) / math.pi),
                    half_bit / 2)  # the whole ramp, in samples
        pos = np.arange(_Q, dtype=np.float64) / _Q * half_bit
        since = np.sin(np.pi * np.minimum(pos, width / 2) / width)
        until = np.sin(np.pi * np.minimum(half_bit - pos, width / 2) / width)
        table = np.zeros((8, _Q), np.float64)
        for state in range(8):
            high, at_start, at_end = state >> 2, (state >> 1) & 1, state & 1
            shape = (since if at_start else 1.0) * (until if at_end else 1.0)
            table[state] = (1.0 if high else -1.0) * shape * self.level
        return table.astype(np.float32).ravel()

    def _states(self, k0: int, frames: int) -> np.ndarray:
        """Table offsets (state * _Q) for the 160 half-bits of each timecode frame from k0.

        Lookup tables rather than digit arithmetic: each NumPy call on a dozen frames costs
        about as much as on thousands of samples."""
        secs, ff = self._labels(np.arange(k0, k0 + frames, dtype=np.int64))
        data = np.empty((frames, 10), np.uint8)
        data[:, :2] = self._frame_bytes[ff]
        data[:, 2:8] = _second_bytes()[secs]
        data[:, 8:] = _SYNC_BYTES
        ones = _POPCOUNT[data]
        # an even count of zeros in 80 bits is an even count of ones
        odd = ones.sum(axis=1) & 1
        data[:, self._parity_bit // 8] |= (odd << (self._parity_bit % 8)).astype(np.uint8)
        ones[:, self._parity_bit // 8] += odd
        before = (np.cumsum(ones, axis=1) - ones) & 1
        return _HALF_BITS[before << 8 | data].ravel()

    def render(self, song_frame0: int, out: np.ndarray) -> None:
        """Add the LTC of song frames [song_frame0, song_frame0 + len(out)) into `out`."""
        n_out = len(out)
        skip = max(0, -song_frame0)
        if skip >= n_out:
            return
        k0 = self._frame_index(song_frame0 + skip)
        states = self._states(k0, self._frame_index(song_frame0 + n_out - 1) - k0 + 1)
        for pos in range(skip, n_out, _CHUNK):
            count = min(_CHUNK, n_out - pos)
            self._render_chunk(song_frame0 + pos, out[pos:pos + count], states, k0)

    def _render_chunk(self, frame0: int, out: np.ndarray, states: np.ndarray,
                      k0: int) -> None:
        # u = floor((frame0 + i) * mul / div) - k0 * 160 * _Q, split so that the products
        # stay small: (a * div + r + i * mul) // div = a + (r + i * mul) // div
        count = len(out)
        u, q, val = self._u[:count], self._q[:count], self._val[:count]
        whole, r = divmod(frame0 * self._mul, self._div)
        np.add(self._steps[:count], r + (whole - (k0 * 160 << _Q_BITS)) * self._div, out=u)
        np.floor_divide(u, self._div, out=u)  # half-bit from k0's start * _Q + position
        np.bitwise_and(u, _Q - 1, out=q)
        np.right_shift(u, _Q_BITS, out=u)
        np.take(states, u, out=u)
        np.add(u, q, out=u)
        np.take(self._table, u, out=val)
        out += val

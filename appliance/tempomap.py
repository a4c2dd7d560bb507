"""Musical time <-> song frames: where bar 13 beat 3 is in the audio, and what bar is playing.

The click, the quantized jumps and vamps, the voice guide and the status line all ask this
one model, so they can never disagree about where a beat is: every beat onset frame is
computed by the same function (`_frame_of`), and `where` is defined from those frames (a
frame belongs to beat n when onset(n) <= frame < onset(n+1)), not from a second, inverse
calculation that could round the other way at a boundary.

Conventions (the song-file reference, config/README.md, says the same):

- Bars and beats count from 1; bar 1 beat 1 is at `start_s` seconds into the audio. Bars
  before it (0, -1, ...) continue backwards at the first change's tempo and meter: that is
  where a count-in and pre-roll audio live, so `frame_at(0)` may be negative.
- The tempo counts the meter's own beats: 6/8 at 120 is 120 eighth notes a minute (two
  dotted-quarter pulses a bar at 40 a minute), 7/8 at 210 is 210 eighths a minute. That is
  what the click plays and what a band reads off a chart's "♪ = 210".
- A ramp changes the tempo linearly in beats (musical time), from `bpm` on the change's
  downbeat to `ramp_to` on the downbeat `bars` bars later, and holds `ramp_to` after it.
  Time over the ramp is the integral of 60/bpm(b) db: a closed form with a logarithm.

Everything is precomputed per segment (one segment per change), so each query is a
bisection over the changes plus a few float operations: `onsets` runs for every decode
block (about 0.3 s) and must not cost more than the handful of onsets it returns.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

BPM_MIN, BPM_MAX = 20.0, 400.0
BEAT_UNITS = (1, 2, 4, 8, 16, 32)
_METER = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{1,2})\s*$")


@dataclass(frozen=True)
class Meter:
    """A time signature; `beats` is what a bar holds and what the tempo counts."""

    beats: int
    unit: int

    def __str__(self) -> str:
        return f"{self.beats}/{self.unit}"

    @classmethod
    def parse(cls, text: str) -> Meter | None:
        """'7/8' -> Meter(7, 8); None when it is not a meter a bar can have (1-32 beats of
        a whole, half, quarter ... 32nd note)."""
        m = _METER.match(str(text))
        if not m:
            return None
        beats, unit = int(m.group(1)), int(m.group(2))
        if not 1 <= beats <= 32 or unit not in BEAT_UNITS:
            return None
        return cls(beats, unit)


COMMON_TIME = Meter(4, 4)


@dataclass(frozen=True)
class TempoChange:
    """From the downbeat of `bar` on: `bpm` (a ramp's starting tempo) in `meter`; with
    `ramp_to`, the tempo moves linearly (in beats) to it over `bars` bars, then holds."""

    bar: int
    bpm: float
    meter: Meter = COMMON_TIME
    ramp_to: float | None = None
    bars: int = 0
    line: int = 0  # where it was written, for check's messages

    @property
    def is_ramp(self) -> bool:
        return self.ramp_to is not None and self.bars > 0


class TempoMap:
    """The song's tempo changes, anchored in the audio: bar 1 beat 1 is `start_s` seconds
    (`start_frame` frames) into it. Frames are song frames at `rate` (frame 0 = the audio's
    first frame)."""

    def __init__(self, changes: Sequence[TempoChange], start_s: float, rate: int):
        changes = tuple(changes)
        if not changes or changes[0].bar != 1:
            raise ValueError("a tempo map starts with a change at bar 1")
        if rate <= 0:
            raise ValueError("the rate is a positive number of frames a second")
        for a, b in zip(changes, changes[1:], strict=False):
            if b.bar <= a.bar:
                raise ValueError(f"tempo changes go in bar order (bar {b.bar} after {a.bar})")
            if a.is_ramp and a.bar + a.bars > b.bar:
                raise ValueError(f"the ramp at bar {a.bar} overlaps the change at bar {b.bar}")
        for c in changes:
            for bpm in (c.bpm, c.ramp_to):
                if bpm is not None and not bpm > 0:
                    raise ValueError(f"tempo {bpm} at bar {c.bar} is not a positive tempo")
            if c.ramp_to is not None and c.bars < 1:
                raise ValueError(f"the ramp at bar {c.bar} needs a length in bars")
        self.changes = changes
        self.start_s = float(start_s)
        self.rate = int(rate)
        self.start_frame = round(self.start_s * self.rate)
        # per segment (one per change): its first bar, its first beat counted from bar 1
        # beat 1 (beat index 0), its start in seconds after bar 1 beat 1, beats a bar,
        # tempo at its start and after its ramp, ramp length in beats (0: none), the time
        # the ramp takes, and the tempo's slope per beat over the ramp
        self._bar: list[int] = []
        self._beat: list[int] = []
        self._t: list[float] = []
        self._beats: list[int] = []
        self._bpm0: list[float] = []
        self._bpm1: list[float] = []
        self._ramp: list[float] = []
        self._ramp_t: list[float] = []
        self._slope: list[float] = []
        beat, t = 0, 0.0
        for i, c in enumerate(changes):
            if i:
                prev = changes[i - 1]
                span = (c.bar - prev.bar) * prev.meter.beats
                t += self._t_in(i - 1, span)
                beat += span
            ramp = float(c.bars * c.meter.beats) if c.is_ramp else 0.0
            bpm1 = float(c.ramp_to) if c.is_ramp else float(c.bpm)
            self._bar.append(c.bar)
            self._beat.append(beat)
            self._t.append(t)
            self._beats.append(c.meter.beats)
            self._bpm0.append(float(c.bpm))
            self._bpm1.append(bpm1)
            self._ramp.append(ramp)
            self._slope.append((bpm1 - c.bpm) / ramp if ramp else 0.0)
            self._ramp_t.append(self._in_ramp(i, ramp) if ramp else 0.0)

    # -- equality: two songs written alike are alike (check keys its songs by value) --------
    def _key(self) -> tuple:
        return (self.changes, self.start_s, self.rate)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TempoMap) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"TempoMap({list(self.changes)!r}, start_s={self.start_s}, rate={self.rate})"

    # -- inside one segment: seconds <-> beats after its start -------------------------------
    def _t_in(self, i: int, x: float) -> float:
        """Seconds from segment i's start to `x` beats after it (x < 0 only before bar 1,
        at the first tempo)."""
        bpm0, ramp = self._bpm0[i], self._ramp[i]
        if x <= 0.0 or not ramp:
            return 60.0 * x / bpm0
        if x >= ramp:
            return self._ramp_t[i] + 60.0 * (x - ramp) / self._bpm1[i]
        return self._in_ramp(i, x)

    def _in_ramp(self, i: int, x: float) -> float:
        """Seconds over the first `x` beats of segment i's ramp: the integral of
        60 / (bpm0 + k u) du from 0 to x (log1p keeps a gentle ramp exact)."""
        bpm0, k = self._bpm0[i], self._slope[i]
        if k == 0.0:
            return 60.0 * x / bpm0  # a "ramp" to the tempo it starts from
        return 60.0 / k * math.log1p(k * x / bpm0)

    def _x_in(self, i: int, t: float) -> float:
        """The inverse of `_t_in`: beats after segment i's start at `t` seconds after it."""
        bpm0, ramp = self._bpm0[i], self._ramp[i]
        if t <= 0.0 or not ramp:
            return t * bpm0 / 60.0
        if t >= self._ramp_t[i]:
            return ramp + (t - self._ramp_t[i]) * self._bpm1[i] / 60.0
        k = self._slope[i]
        if k == 0.0:
            return t * bpm0 / 60.0
        return bpm0 / k * math.expm1(k * t / 60.0)

    def _seg_of_beat(self, g: float) -> int:
        return max(0, bisect_right(self._beat, g) - 1)

    def _seg_of_bar(self, bar: int) -> int:
        return max(0, bisect_right(self._bar, bar) - 1)

    def _time_of(self, g: float) -> float:
        """Seconds after bar 1 beat 1 of beat position `g` (0 = bar 1 beat 1)."""
        i = self._seg_of_beat(g)
        return self._t[i] + self._t_in(i, g - self._beat[i])

    def _beat_pos(self, t: float) -> float:
        i = max(0, bisect_right(self._t, t) - 1)
        return self._beat[i] + self._x_in(i, t - self._t[i])

    def _frame_of(self, g: float) -> int:
        """The one place a beat position becomes a frame (see the module's note)."""
        return round((self.start_s + self._time_of(g)) * self.rate)

    def _beat_index(self, frame: int) -> int:
        """n with onset(n) <= frame < onset(n + 1)."""
        n = math.floor(self._beat_pos(frame / self.rate - self.start_s))
        while self._frame_of(n) > frame:
            n -= 1
        while self._frame_of(n + 1) <= frame:
            n += 1
        return n

    def _bar_beat(self, n: int) -> tuple[int, int]:
        i = self._seg_of_beat(n)
        bar_in, beat_in = divmod(n - self._beat[i], self._beats[i])
        return self._bar[i] + bar_in, beat_in + 1

    def _beat_of_bar(self, bar: int) -> int:
        i = self._seg_of_bar(bar)
        return self._beat[i] + (bar - self._bar[i]) * self._beats[i]

    # -- public ----------------------------------------------------------------------------
    def seconds_at(self, bar: int, beat: float = 1.0) -> float:
        """Seconds into the audio of `bar` (any integer, 0 and below before bar 1) at `beat`
        (1-based; 2.5 is the off-beat after beat 2)."""
        return self.start_s + self._time_of(self._beat_of_bar(bar) + beat - 1.0)

    def frame_at(self, bar: int, beat: float = 1.0) -> int:
        return round(self.seconds_at(bar, beat) * self.rate)

    def where(self, frame: int) -> tuple[int, int, float]:
        """(bar, beat (1-based), how far into that beat 0..1) at a song frame."""
        n = self._beat_index(frame)
        bar, beat = self._bar_beat(n)
        f0, f1 = self._frame_of(n), self._frame_of(n + 1)
        return bar, beat, (frame - f0) / (f1 - f0) if f1 > f0 else 0.0

    def onsets(self, f0: int, f1: int, subdivision: int = 1
               ) -> list[tuple[int, int, int, int]]:
        """(frame, bar, beat, sub) of every beat onset, and with `subdivision` > 1 every
        equal division of a beat (in musical time, so they follow a ramp), with
        f0 <= frame < f1; sub 0 is the beat itself."""
        if f1 <= f0:
            return []
        sub = max(1, int(subdivision))
        s = math.floor(self._beat_pos(f0 / self.rate - self.start_s) * sub)
        while self._frame_of(s / sub) >= f0:
            s -= 1
        s += 1
        frame = self._frame_of(s / sub)
        while frame < f0:
            s += 1
            frame = self._frame_of(s / sub)
        out = []
        while frame < f1:
            n, j = divmod(s, sub)
            bar, beat = self._bar_beat(n)
            out.append((frame, bar, beat, j))
            s += 1
            frame = self._frame_of(s / sub)
        return out

    def next_beat(self, frame: int) -> int:
        """The first beat onset strictly after `frame`."""
        return self._frame_of(self._beat_index(frame) + 1)

    def bar_at(self, frame: int) -> int:
        return self._bar_beat(self._beat_index(frame))[0]

    def next_bar(self, frame: int) -> int:
        """The first bar line strictly after `frame`."""
        return self.frame_at(self.bar_at(frame) + 1)

    def bar_start(self, frame: int) -> int:
        """The bar line at or before `frame`."""
        return self.frame_at(self.bar_at(frame))

    def bars_after(self, frame: int, n: int) -> int:
        """The bar line `n` (>= 1) bars after the start of the bar holding `frame`: the end
        of an n-bar vamp, the point of an n_bars jump."""
        if n < 1:
            raise ValueError("bars_after counts one bar or more")
        return self.frame_at(self.bar_at(frame) + n)

    def _seg_at(self, frame: int) -> tuple[int, float]:
        t = frame / self.rate - self.start_s
        i = max(0, bisect_right(self._t, t) - 1)
        return i, self._x_in(i, t - self._t[i])

    def bpm_at(self, frame: int) -> float:
        """The tempo at that instant (inside a ramp: the ramp's tempo there)."""
        i, x = self._seg_at(frame)
        ramp = self._ramp[i]
        if not ramp or x <= 0.0:
            return self._bpm0[i]
        if x >= ramp:
            return self._bpm1[i]
        return self._bpm0[i] + self._slope[i] * x

    def meter_at(self, frame: int) -> Meter:
        return self.changes[self._seg_at(frame)[0]].meter

    def meter_of_bar(self, bar: int) -> Meter:
        return self.changes[self._seg_of_bar(bar)].meter

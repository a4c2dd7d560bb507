"""Time between two units: clock offset, the DAC timing line, and the follower's lock.

Pure arithmetic on timestamps the caller passes in (no clocks read here, no threads, no
sockets), so every estimator is tested in simulation, with drifting clocks and jitter,
in milliseconds.

How the pieces fit, on a follower:

1. `OffsetEstimator` turns PING/PONG timestamps into "leader monotonic ns" <-> "my monotonic
   ns", including the slow drift between the two units' clocks.
2. `appliance.audio.dacclock.DacClock` on each unit turns "write() returned after frame N at
   time t" samples into the exact line frame <-> time of that unit's DAC (its real sample
   rate, not the nominal one: the crystals of two interfaces differ by tens of ppm). It
   lives with the audio code that feeds it (appliance.audio.playhead).
3. The follower computes the lock error for the period it is about to write: the song
   frame it will put at device frame D, minus the leader's song frame at the moment D
   reaches the follower's DAC (`DacClock.time_of(D)` -> `to_remote` -> extrapolate the
   leader's last STATE). Measuring at the write head rather than at the DAC means a
   correction shows up in the very next measurement (no buffer-length delay in the loop).
4. `LockController` turns that noisy error into "drop or insert one frame now", rarely and
   only when it really helps, or asks for a re-seek when the follower is far off.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median

# --------------------------------------------------------------------------------------------
# Clock offset (NTP-style)


class OffsetEstimator:
    """Offset of the leader's monotonic clock from ours, from four-timestamp exchanges.

    Per exchange: t1 we send PING, t2 leader receives, t3 leader sends PONG, t4 we receive
    (t1, t4 ours; t2, t3 the leader's). delay = (t4-t1)-(t3-t2) is the network round trip;
    offset = ((t2-t1)+(t3-t4))/2 is exact when both directions took equally long, and wrong
    by at most half of the *excess* delay otherwise. Network jitter only ever adds delay, so
    the exchanges with the lowest delay are the ones that carry the truth: the estimate uses
    the lowest-delay quarter of the window (a burst of slow exchanges, even 10x slower,
    never enters it), weighted by 1/(excess delay + floor)^2, which also tames jitter that
    is asymmetric (one direction much noisier than the other).

    The two clocks drift apart (tens of ppm; 500 ppm in the tests), so a plain average of
    offsets over a window of seconds would lag by half a window of drift. The offset is a
    line, offset = a + skew * t4, evaluated at the time asked for (`offset_at`):

    - skew from a long baseline: the lowest-delay exchange of every block of window/4
      exchanges is kept (`skew_blocks` of them, ~25 s at 20 pings/s), and a weighted
      least-squares line through these block champions gives the skew. Over the short
      window alone the slope is ~10x noisier (measured: 5 ppm vs 0.1 ppm with 50 us
      jitter, i.e. 18 us vs 5 us worst error), and crystals drift far slower than that;
    - the intercept from the recent window only (so a change of path or of skew shows up
      within a window), as the weighted mean of the lowest-delay quarter, under that skew.

    Until four blocks exist the skew comes from the window; when the points are bunched in
    time (too little spread to show a slope) the previous skew is kept. The skew is
    clamped to `max_skew_ppm`: no pair of working crystals is that far apart, so a larger
    value can only be a bad fit.

    When the leader changes (a takeover), its clock is a different one: `reset()`.
    """

    def __init__(self, window: int = 64, *, min_samples: int = 8, floor_ns: int = 5_000,
                 min_spread_ns: int = 200_000_000, max_skew_ppm: float = 1000.0,
                 skew_blocks: int = 32):
        if window < 4 or min_samples < 2:
            raise ValueError("window must be >= 4 and min_samples >= 2")
        self.window = window
        self.min_samples = min(min_samples, window)
        self.floor_ns = floor_ns
        self.min_spread_ns = min_spread_ns
        self.max_skew = max_skew_ppm * 1e-6
        self.block = max(2, window // 4)
        self._samples: deque[tuple[int, int, int]] = deque(maxlen=window)  # t4, delay, 2*offset
        self._blocks: deque[tuple[int, int, int]] = deque(maxlen=max(4, skew_blocks))
        self._fit: tuple[int, int, float, float] | None = None  # ref t4, base, a, skew
        self.rejected = 0
        self.reset()

    def reset(self) -> None:
        self._samples.clear()
        self._blocks.clear()
        self._champion: tuple[int, int, int] | None = None
        self._in_block = 0
        self._fit = None
        self._skew = 0.0

    def add(self, t1: int, t2: int, t3: int, t4: int) -> bool:
        """Record one exchange; False (and counted in `rejected`) if it is impossible (a
        negative round trip or time running backwards: a confused or lying peer)."""
        delay = (t4 - t1) - (t3 - t2)
        if t4 < t1 or t3 < t2 or delay < 0:
            self.rejected += 1
            return False
        s = (t4, delay, (t2 - t1) + (t3 - t4))
        self._samples.append(s)
        if self._champion is None or delay < self._champion[1]:
            self._champion = s
        self._in_block += 1
        if self._in_block >= self.block:
            self._blocks.append(self._champion)
            self._champion, self._in_block = None, 0
        self._fit = None
        return True

    @property
    def samples(self) -> int:
        return len(self._samples)

    @property
    def ready(self) -> bool:
        """Enough exchanges for the estimate to be trusted (before that, do not lock)."""
        return len(self._samples) >= self.min_samples

    @property
    def delay_ns(self) -> int | None:
        """Lowest round trip in the window: the network's floor, for status."""
        return min((d for _, d, _ in self._samples), default=None)

    @property
    def skew_ppm(self) -> float:
        """How much faster the leader's clock runs than ours, in ppm."""
        if self._samples:
            self._solve()
        return self._skew * 1e6

    @property
    def offset_ns(self) -> int:
        """Leader clock minus ours, at our latest exchange."""
        return self.offset_at(self._samples[-1][0]) if self._samples else 0

    def offset_at(self, t_local_ns: int) -> int:
        """Leader clock minus ours at our monotonic time `t_local_ns`."""
        ref, base, a, skew = self._solve()
        return base + round(a + skew * (t_local_ns - ref))

    def to_remote(self, t_local_ns: int) -> int:
        """Our monotonic ns -> the leader's monotonic ns for the same instant."""
        return t_local_ns + self.offset_at(t_local_ns)

    def to_local(self, t_remote_ns: int) -> int:
        """The leader's monotonic ns -> ours for the same instant (inverse of `to_remote`,
        solving t_remote = t + base + a + skew * (t - ref) for t)."""
        ref, base, a, skew = self._solve()
        u = (t_remote_ns - ref - base - a) / (1.0 + skew)
        return ref + round(u)

    def _solve(self) -> tuple[int, int, float, float]:
        if self._fit is not None:
            return self._fit
        if not self._samples:
            raise RuntimeError("no clock samples yet (check `ready` first)")
        samples = self._samples
        ref = samples[-1][0]
        k = min(len(samples), max(self.min_samples, len(samples) // 4))
        best = sorted(samples, key=lambda s: (s[1], -s[0]))[:k]  # ties: the newest
        base = best[0][2] // 2
        # skew: from the long memory of block champions once it spans enough blocks, else
        # from the recent window; kept as it was when neither has the spread to tell
        long = list(self._blocks)
        if self._champion is not None:
            long.append(self._champion)
        skew = None
        if len(long) >= 4:
            skew = self._line(long, ref, base)[1]
        if skew is None:
            skew = self._line(best, ref, base)[1]
        if skew is not None:
            self._skew = max(-self.max_skew, min(self.max_skew, skew))
        # intercept: weighted mean over the recent lowest-delay samples, under that skew
        sw = swy = 0.0
        dmin = best[0][1]
        for t4, d, off2 in best:
            w = 1.0 / float(d - dmin + self.floor_ns) ** 2
            sw += w
            swy += w * ((off2 - 2 * base) / 2.0 - self._skew * (t4 - ref))
        self._fit = (ref, base, swy / sw, self._skew)
        return self._fit

    def _line(self, pts: list[tuple[int, int, int]], ref: int,
              base: int) -> tuple[float, float | None]:
        """Weighted least squares offset = a + skew * (t4 - ref); skew None when the points
        are too bunched in time to carry a slope."""
        dmin = min(d for _, d, _ in pts)
        sw = swx = swy = 0.0
        rows = []
        for t4, d, off2 in pts:
            w = 1.0 / float(d - dmin + self.floor_ns) ** 2
            x = float(t4 - ref)
            y = (off2 - 2 * base) / 2.0
            rows.append((w, x, y))
            sw += w
            swx += w * x
            swy += w * y
        xm, ym = swx / sw, swy / sw
        sxx = sum(w * (x - xm) ** 2 for w, x, _ in rows)
        if sxx / sw < float(self.min_spread_ns) ** 2:
            return ym, None
        sxy = sum(w * (x - xm) * (y - ym) for w, x, y in rows)
        skew = sxy / sxx
        return ym - skew * xm, skew


# --------------------------------------------------------------------------------------------
# Follower lock


class LockController:
    """How many frames the follower's writer drops or inserts next, from the lock error.

    Sign convention: ``error_frames = follower_frame - leader_frame`` at the same instant
    (song frames). Positive: the follower is ahead, it must insert frames (return value
    negative). Negative: it is behind, it must drop frames (return value positive). In
    short, the return value is the number of song frames to skip: +n drop, -n insert
    (repeat). The caller must measure so that a correction is visible in the next error it
    passes (measure at the write head, see the module notes), and call `update` once per
    writer period, applying the returned correction in the period being written.

    Policy, from big to small:

    - |error| > `seek_frames` (1 s): correcting by slewing would take ages; `needs_seek`
      becomes True and 0 is returned; the caller re-seeks and calls `reset()`.
    - |error| > `jump_frames` and the unit is not audible: the whole error is corrected at
      once (nobody hears a muted follower jump). Audible units never jump or seek.
    - otherwise one frame at a time, at most one per `min_interval_ns`, and only when the
      smoothed error says so: correcting starts at |e| >= `start` (0.75 frame) and stops
      below `stop` (0.25); while it runs, a frame is moved only if |e| > 0.5 (otherwise the
      move would make the error larger), and a move against the previous direction needs
      |e| >= `start` again, so noise cannot cause drop-insert-drop chatter. With a steady
      drift this settles into the best possible sawtooth, +-0.5 frame around zero. When the
      measurements are noisy the start threshold rises to 4 x `noise_frames`.

    Smoothing: an alpha-beta filter tracks the error and its rate of change (the drift
    between the two DACs, frames per ns). Tracking the rate means a steady drift leaves no
    lag (a plain average would trail a 500 ppm drift by about a frame). Big jumps (median of
    the last three raw errors more than `gate_frames` from the prediction) re-seed the
    filter instead of dragging it; a lone raw error that far off is replaced by that median
    (one late STATE must not move anything). After each correction the filter state and the recent
    raw errors are shifted by the correction, so it is not counted twice.
    """

    def __init__(self, *, seek_frames: float = 48000, jump_frames: float = 16,
                 min_interval_ns: int = 2_000_000, start: float = 0.75, stop: float = 0.25,
                 alpha: float = 0.05, beta: float | None = None, gate_frames: float = 8.0,
                 lock_frames: float = 2.0, settle_updates: int = 10):
        self.seek_frames = seek_frames
        self.jump_frames = jump_frames
        self.min_interval_ns = min_interval_ns
        self.start = start
        self.stop = stop
        self.alpha = alpha
        self.beta = alpha * alpha / (2.0 - alpha) if beta is None else beta
        self.gate_frames = gate_frames
        self.lock_frames = lock_frames
        self.settle_updates = settle_updates
        self.dropped = 0  # totals since construction, for status
        self.inserted = 0
        self.jumps = 0
        self.reset()

    def reset(self) -> None:
        """Forget the error history: after a seek, a song change or a new leader."""
        self.needs_seek = False
        self._e: float | None = None  # smoothed error, frames
        self._v = 0.0  # its rate, frames per ns
        self._t = 0
        self._recent: deque[float] = deque(maxlen=3)
        self._correcting = False
        self._last_dir = 0
        self._last_move_ns: int | None = None
        self._updates = 0
        self._var = 0.0  # running mean of squared innovations (measurement noise)

    @property
    def error(self) -> float | None:
        """The smoothed error (frames), None before the first update."""
        return self._e

    @property
    def drift_frames_per_s(self) -> float:
        """How fast the error grows, frames per second (positive: the follower's DAC runs
        faster than the leader's). Divide by the rate and multiply by 1e6 for ppm."""
        return self._v * 1e9

    @property
    def noise_frames(self) -> float:
        """Standard deviation of the smoothed error caused by measurement noise (from the
        filter's innovations). The start threshold is at least four of these, so a noisy
        measurement path makes the controller calmer instead of jittery."""
        return math.sqrt(self._var * self.alpha / (2.0 - self.alpha))

    @property
    def locked(self) -> bool:
        """Settled within `lock_frames`: what FOLLOWER messages report as locked."""
        return (self._e is not None and not self.needs_seek
                and self._updates >= self.settle_updates and abs(self._e) <= self.lock_frames)

    def update(self, error_frames: float, now_ns: int, *, audible: bool = False) -> int:
        """Feed one measured error; returns frames to drop (+) or insert (-) now."""
        if not math.isfinite(error_frames):
            return 0
        self._updates += 1
        self._recent.append(error_frames)
        med = median(self._recent)
        if self._e is None:
            self._e, self._v = error_frames, 0.0
        else:
            dt = max(1, now_ns - self._t)
            pred = self._e + self._v * dt
            if abs(med - pred) > self.gate_frames:
                self._e = med  # a step, not noise: re-seed, keep the drift
            else:
                r = error_frames - pred
                if abs(r) > self.gate_frames:
                    r = med - pred  # a lone outlier: the median stands in for it
                self._var += max(0.01, 1.0 / self._updates) * (r * r - self._var)
                self._e = pred + self.alpha * r
                self._v += self.beta * r / dt
        self._t = now_ns
        if self.needs_seek:
            return 0
        if not audible:
            if abs(med) > self.seek_frames:
                self.needs_seek = True
                return 0
            if abs(med) > self.jump_frames:
                self.jumps += 1
                return self._move(-round(med), now_ns)
        e = self._e
        start = max(self.start, 4.0 * self.noise_frames)
        if not self._correcting:
            self._correcting = abs(e) >= start
        elif abs(e) < self.stop:
            self._correcting = False
        if not self._correcting or abs(e) <= 0.5:
            return 0
        if self._last_move_ns is not None and now_ns - self._last_move_ns < self.min_interval_ns:
            return 0
        d = -1 if e > 0 else 1
        if d == -self._last_dir and abs(e) < start:
            return 0
        return self._move(d, now_ns)

    def _move(self, d: int, now_ns: int) -> int:
        if d == 0:
            return 0
        assert self._e is not None
        self._e += d
        for i in range(len(self._recent)):
            self._recent[i] += d
        self._last_move_ns = now_ns
        self._last_dir = 1 if d > 0 else -1
        if d > 0:
            self.dropped += d
        else:
            self.inserted -= d
        return d

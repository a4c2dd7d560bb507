"""Time between two units: clock offset, the DAC timing line, and the follower's lock.

Pure arithmetic on timestamps the caller passes in (no clocks read here, no threads, no
sockets), so every estimator is tested in simulation, with drifting clocks and jitter,
in milliseconds.

How the pieces fit, on a follower:

1. `OffsetEstimator` turns PING/PONG timestamps into "leader monotonic ns" <-> "my monotonic
   ns", including the slow drift between the two units' clocks.
2. `DacClock` on each unit turns "write() returned after frame N at time t" samples into
   the exact line frame <-> time of that unit's DAC (its real sample rate, not the nominal
   one: the crystals of two interfaces differ by tens of ppm).
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
# DAC timing line


MAX_PPM = 2000.0  # DacClock: the farthest a card's real rate is believed off its nominal


class DacClock:
    """The line time = f(frame) of one unit's DAC, from the writer's timestamps.

    Samples are (frame, t_ns): a blocking ALSA write() returned at t_ns right after frame
    `frame` was handed over. The card takes frames at a perfectly steady rate, so the true
    points lie on a straight line; the timestamps are late by scheduling jitter (the thread
    woke up after the card freed room), never early. That one-sidedness decides the fit:

    - The intercept must come from the lower envelope: the earliest return times are the
      ones closest to the truth. A least-squares intercept would sit at the *mean* jitter,
      which changes with CPU load, so the line would wander with load.
    - The slope (the real sample rate, tens of ppm off nominal) is taken from the same lower
      envelope: the line through the two lower-convex-hull points that straddle the mean
      frame. For one-sided (exponential) jitter that line is the maximum-likelihood fit
      (the line under all points with the largest mean height) and its error shrinks like
      1/n rather than 1/sqrt(n). Measured in simulation over 400 periods of 256 frames with
      100 us mean jitter: least-squares slope + lowest intercept is off by 0.5 frame on
      average (2.6 at worst); the hull line by 0.05 (0.3 at worst).

    Integer nanoseconds around 1e18 do not fit a float exactly, so everything is stored
    relative to the first sample (exact ints) and only small differences become floats.

    Cost: `add` is O(1) (append, one comparison); the O(window) hull is recomputed lazily
    on a query, at most every `refit_every` samples or at once when a new sample falls
    below the current line (the envelope moved down). After an underrun, a device reopen or
    a seek of the device frame counter the line jumps: call `reset()` (a sample whose frame
    or time goes backwards resets by itself), or `rebase()` when only the offset stepped.

    Steps nobody announced (a driver that lost time without an underrun; the test
    harness's JACK dummy server does this under load, measured here: steps of 0.5, 1.3, 3.3
    and 6.2 ms within 2 minutes) are found here: `step_samples` samples in a row more than
    `step_ns` above the line mean the envelope moved up, and the line is rebased on them
    (`steps` counts these). A step down needs nothing: the first sample below the line
    refits it. Without this a step smaller than the window's reach stays in the line until
    the window forgets the old points (seconds). A burst of late wake-ups mistaken for a
    step costs little: the next on-time sample is below the rebased line and moves it back.

    `frame` may use any fixed origin (e.g. frames written minus the buffer size): a
    constant latency only shifts the line, so the caller adds it where it knows it.
    """

    # points between two found steps that measure a slope afresh (see `rebase`): a line
    # 2000 ppm off reaches the 0.4 ms threshold in 37 periods of 256 frames. 24 points
    # give a slope within a few hundred ppm, which drifts to the threshold no sooner than
    # `slope_samples` points replace it; each fresh slope is from new points, so errors
    # do not add up from one rebase to the next as a kept slope's do
    CHAIN_SAMPLES = 24

    def __init__(self, window: int = 400, *, nominal_hz: float | None = None,
                 min_samples: int = 16, refit_every: int = 32,
                 step_ns: int | None = 400_000, step_samples: int = 4):
        if window < 2:
            raise ValueError("window must be >= 2")
        self.window = window
        self.nominal_hz = nominal_hz
        self.min_samples = max(2, min(min_samples, window))
        self.refit_every = max(1, refit_every)
        # points a slope of its own needs after a rebase (fewer: the kept slope is better)
        self.slope_samples = max(self.min_samples, window // 2)
        self.step_ns = step_ns
        self.step_samples = max(1, step_samples)
        self.resets = 0
        self.steps = 0
        self._high: deque[tuple[int, int]] = deque(maxlen=self.step_samples)
        self.reset()

    def reset(self) -> None:
        self._f0: int | None = None  # origin of the stored samples
        self._t0 = 0
        self._pts: deque[tuple[int, int]] = deque(maxlen=self.window)  # (frame-f0, t-t0)
        self._fit: tuple[int, int, float, float] | None = None  # x_ref, y_ref, a, b (ns/frame)
        self._since_fit = 0
        self._kept_slope: float | None = None  # from before a rebase, until the new points fit
        self._high.clear()  # recent samples far above the line (absolute frame, time)
        self.resets += 1

    def rebase(self, *, found: int = 0) -> None:
        """The line stepped (time was lost or gained) but the card's rate did not change:
        forget the points, keep the measured slope. The line is usable again from the next
        sample (intercept from the new points under the old slope) instead of after
        `min_samples`, and the new points' own slope takes over once they span half a
        window (`slope_samples`). A rebase on what was only a burst of late samples heals by itself:
        the next on-time sample is below the line and moves it down at once.

        `found`: this rebase is a step found in the samples (`add`), whose newest `found`
        points are the step itself. Found while the line still runs on a kept slope, it may
        be that slope that is wrong: points drifting away from a line too shallow reach the
        step threshold again and again, each rebase keeping the same slope (seen in
        simulation: a slope 2000 ppm off rebased every 80 periods for good, the line up to
        0.4 ms wrong). Then the points since the last rebase, `CHAIN_SAMPLES` or more of
        them, measure the slope afresh."""
        # Only a slope measured over half a window or more is worth keeping: one from a
        # few points is far off, and kept through the next rebase it would stay so for
        # good (seen: a line 25 % off after a chain of rebases, each one set off by the
        # line drifting away from the card). Else the nominal rate, never far off.
        n = len(self._pts)
        slope = None
        if self._kept_slope is not None and n < self.slope_samples:
            slope = self._kept_slope
            m = n - found
            if found and m >= self.CHAIN_SAMPLES:
                slope = self._fitted_slope(list(self._pts)[:m])
        elif n >= self.slope_samples:
            slope = self._solve()[3]
        if slope is None and self.nominal_hz:
            slope = 1e9 / self.nominal_hz
        self.reset()
        self._kept_slope = slope

    def add(self, frame: int, t_ns: int) -> None:
        if self.step_ns is not None and self.ready:
            if t_ns - self.time_of(frame) > self.step_ns:
                self._high.append((frame, t_ns))
                if len(self._high) == self.step_samples:
                    high = list(self._high)
                    self.rebase(found=len(high) - 1)  # all but this one are in the points
                    self.steps += 1
                    for f, t in high[:-1]:
                        self._add(f, t)
            else:
                self._high.clear()
        self._add(frame, t_ns)

    def _add(self, frame: int, t_ns: int) -> None:
        if self._f0 is None:
            self._f0, self._t0 = frame, t_ns
        x, y = frame - self._f0, t_ns - self._t0
        if self._pts and (x <= self._pts[-1][0] or y < self._pts[-1][1]):
            self.reset()  # the counter restarted or time went backwards: a new line
            self._f0, self._t0, x, y = frame, t_ns, 0, 0
        self._pts.append((x, y))
        self._since_fit += 1
        fit = self._fit
        if fit is not None and y < fit[1] + fit[2] + fit[3] * (x - fit[0]):
            self._fit = None  # below the line: the lower envelope moved

    @property
    def samples(self) -> int:
        return len(self._pts)

    @property
    def ready(self) -> bool:
        n = len(self._pts)
        return n >= self.min_samples or (self._kept_slope is not None and n >= 1)

    @property
    def rate_hz(self) -> float:
        """The measured sample rate (frames per second of this unit's monotonic clock)."""
        return 1e9 / self._solve()[3]

    def time_of(self, frame: int) -> int:
        """Monotonic ns at which `frame` is (or was) on the line."""
        xr, yr, a, b = self._solve()
        assert self._f0 is not None
        return self._t0 + yr + round(a + b * (frame - self._f0 - xr))

    def frame_at(self, t_ns: int) -> float:
        """The (fractional) frame on the line at monotonic time `t_ns`."""
        xr, yr, a, b = self._solve()
        assert self._f0 is not None
        return self._f0 + xr + (t_ns - self._t0 - yr - a) / b

    def _solve(self) -> tuple[int, int, float, float]:
        fit = self._fit
        if fit is not None and self._since_fit < self.refit_every:
            return fit
        pts = self._pts
        if not pts:
            raise RuntimeError("no DAC samples yet (check `ready` first)")
        xr, yr = pts[0]
        if self._kept_slope is not None and len(pts) < self.slope_samples:
            # after a rebase: the card's rate did not change, and a slope from a few
            # points is far noisier than the one measured before (16 points over 85 ms
            # with 20 us jitter: ~200 ppm) until the new points span half a window
            b = self._kept_slope
        elif len(pts) == 1:
            if not self.nominal_hz:
                raise RuntimeError("one DAC sample and no nominal rate: no line yet")
            b = 1e9 / self.nominal_hz
        else:
            b = self._fitted_slope(pts)
        # intercept: the lowest point under slope b (lower envelope)
        a = min((y - yr) - b * (x - xr) for x, y in pts)
        self._fit = (xr, yr, a, b)
        self._since_fit = 0
        return self._fit

    def _fitted_slope(self, pts) -> float:
        """The hull slope of `pts` (stored (frame, time) points), clamped: no working card
        is MAX_PPM off its nominal rate, so a fit that says so is a fit of too few points."""
        xr, yr = pts[0]
        b = _hull_slope([(float(x - xr), float(y - yr)) for x, y in pts])
        if not self.nominal_hz:
            return b
        nominal = 1e9 / self.nominal_hz
        return min(max(b, nominal * (1 - MAX_PPM * 1e-6)), nominal * (1 + MAX_PPM * 1e-6))


def _hull_slope(pts: list[tuple[float, float]]) -> float:
    """Slope of the lower-convex-hull edge over the mean x (points sorted by x, distinct)."""
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) <= (y2 - y1) * (p[0] - x1):
                hull.pop()  # hull[-1] is on or above the segment hull[-2] -> p
            else:
                break
        hull.append(p)
    xm = sum(x for x, _ in pts) / len(pts)
    for (x1, y1), (x2, y2) in zip(hull, hull[1:], strict=False):
        if x2 >= xm:
            return (y2 - y1) / (x2 - x1)
    (x1, y1), (x2, y2) = hull[-2], hull[-1]
    return (y2 - y1) / (x2 - x1)


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

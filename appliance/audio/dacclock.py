"""When does device frame N reach this unit's DAC? A line fitted to the writer's timestamps.

Pure arithmetic on (frame, time) samples the caller passes in (no clock read here, no
thread), so it is tested in simulation with jitter and steps. The writer publishes the
samples (Writer.clock_samples); appliance.audio.playhead feeds them in and offers the
line to whoever needs to know where the DAC is (the hot-standby lock, the leader's STATE).
"""

from __future__ import annotations

from collections import deque

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

    def line(self) -> tuple[int, int, float]:
        """(frame, t_ns, ns per frame): a point on the line and its slope, as plain
        numbers another thread can use without touching this object."""
        xr, yr, a, b = self._solve()
        assert self._f0 is not None
        return self._f0 + xr, self._t0 + yr + round(a), b

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

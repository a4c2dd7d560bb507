"""When has the leader been silent long enough to be dead? A detector that learns the link.

A fixed timeout is wrong on every link but one: short enough for a fast takeover on a
quiet cable, it fires on a busy venue network whenever two or three heartbeats are lost
in a row (the "false failover" hardware switcher users complain of); long enough for a
lossy link, it leaves a long gap on a quiet one. So the follower watches how the leader's
heartbeats actually arrive and sets the timeout from that, as a phi-accrual failure
detector does (Hayashibara et al., 2004; Akka and Cassandra use it):

- the gaps between heartbeat arrivals are kept over a window (`WINDOW` gaps: 8 s at the
  default 2 ms heartbeat), with their mean and standard deviation;
- the suspicion after a silence of t is phi(t) = -log10(P(a gap longer than t)) under a
  normal law with that mean and deviation; the leader is suspected when phi reaches
  `phi` (8 by default: a live leader is taken for dead once in 10^8 gaps, if the law
  held). Solved once for t: the timeout is mean + z * deviation;
- a normal law underrates runs of lost packets (a gap is a whole number of heartbeats
  plus jitter) and rare stalls (a switch, a busy host), so the timeout is never below
  `guard` (2) times the longest gap of the last `memory_s` (5 minutes, kept as one
  maximum per second): a link (or a host) that lost four heartbeats in a row, or stalled,
  within the last five minutes is not trusted to do less (a minute was the first choice;
  the relay of the lossy-link bench reports stalls of the test host minutes apart);
- and never below `floor_ns` (scheduling on the two units, which the window may not have
  caught yet) nor above `ceiling_ns` (a leader must be replaced within a bar, however bad
  the link).

Pure: arrival times come in as arguments, so every link is a deterministic test.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import NormalDist

WINDOW = 4096
MEMORY_S = 300         # how long the longest gap is remembered (the guard)
MIN_GAPS = 16          # fewer gaps than this: no learned figure yet, the start-up timeout holds
MIN_STD_NS = 250_000   # a perfectly regular link still has this much scheduling noise


class FailureDetector:
    """Feed `heard(now)` with every heartbeat from the leader; `timeout_ns` is the silence
    after which it counts as gone. `reset()` when another unit starts leading: the gap to
    its first heartbeat says nothing about the link (the statistics are kept)."""

    def __init__(self, *, floor_ns: int, ceiling_ns: int, start_ns: int, phi: float = 8.0,
                 guard: float = 2.0, window: int = WINDOW, memory_s: int = MEMORY_S):
        if not 0 < floor_ns <= ceiling_ns:
            raise ValueError("need 0 < floor_ns <= ceiling_ns")
        self.floor_ns = floor_ns
        self.ceiling_ns = ceiling_ns
        self.start_ns = min(max(start_ns, floor_ns), ceiling_ns)
        self.phi = phi
        self.guard = guard
        self._z = NormalDist().inv_cdf(1.0 - 10.0 ** -phi)
        self._gaps: deque[int] = deque(maxlen=window)
        self._sum = 0
        self._sumsq = 0
        self._last: int | None = None
        self._max = 0
        # the longest gap of each second, for the last `memory_s` seconds: (second, gap)
        self._maxima: deque[tuple[int, int]] = deque(maxlen=max(1, memory_s))
        self._timeout = self.start_ns

    def heard(self, now_ns: int) -> None:
        if self._last is not None and now_ns > self._last:
            self._add(now_ns - self._last, now_ns)
        if self._last is None or now_ns > self._last:
            self._last = now_ns

    def reset(self) -> None:
        self._last = None

    def excuse(self, stalled_ns: int) -> None:
        """The listener itself did not run for `stalled_ns` (Roles.excuse): the gap that
        spans it is learned without it, so a stall of this unit does not lengthen the
        timeout for five minutes as if the link had lost that many heartbeats."""
        if self._last is not None and stalled_ns > 0:
            self._last += stalled_ns

    def _add(self, gap: int, now_ns: int) -> None:
        g = self._gaps
        if len(g) == g.maxlen:
            old = g[0]
            self._sum -= old
            self._sumsq -= old * old
        g.append(gap)
        self._sum += gap
        self._sumsq += gap * gap
        second = now_ns // 1_000_000_000
        m = self._maxima
        if m and m[-1][0] == second:
            if gap > m[-1][1]:
                m[-1] = (second, gap)
                self._max = max(self._max, gap)
        else:
            # once a second: forget the seconds that left the memory, look again
            while m and m[0][0] <= second - m.maxlen:
                m.popleft()
            m.append((second, gap))
            self._max = max(v for _s, v in m)
        self._timeout = self._compute()

    def _compute(self) -> int:
        n = len(self._gaps)
        if n < MIN_GAPS:
            return self.start_ns
        mean = self._sum / n
        var = max(0.0, self._sumsq / n - mean * mean)
        std = max(math.sqrt(var), MIN_STD_NS)
        t = max(mean + self._z * std, self.guard * self._max, self.floor_ns)
        return int(min(t, self.ceiling_ns))

    @property
    def timeout_ns(self) -> int:
        return self._timeout

    @property
    def learned(self) -> bool:
        return len(self._gaps) >= MIN_GAPS

    def phi_at(self, now_ns: int) -> float:
        """The suspicion level now (for status): 0 just after a heartbeat, `phi` at the
        timeout of the normal law alone."""
        n = len(self._gaps)
        if self._last is None or n < MIN_GAPS:
            return 0.0
        mean = self._sum / n
        std = max(math.sqrt(max(0.0, self._sumsq / n - mean * mean)), MIN_STD_NS)
        p = 1.0 - NormalDist(mean, std).cdf(now_ns - self._last)
        return 99.0 if p <= 1e-99 else -math.log10(p)

    def status(self) -> dict[str, object]:
        n = len(self._gaps)
        mean = self._sum / n if n else 0.0
        std = math.sqrt(max(0.0, self._sumsq / n - mean * mean)) if n else 0.0
        return {"timeout_ms": round(self._timeout / 1e6, 1), "learned": self.learned,
                "gap_mean_ms": round(mean / 1e6, 2), "gap_std_ms": round(std / 1e6, 2),
                "gap_max_ms": round(self._max / 1e6, 1), "gaps": n}

"""Act once on a press that arrives twice.

In a pair, one press can reach the leader by two paths: a MIDI foot controller wired to
both units through a MIDI thru box (the leader hears it directly, and the follower
forwards its copy), or a COMMAND datagram sent more than once so that one lost datagram
does not lose the press. Acting twice would skip a song.

Rule: an action from one origin cancels at most one identical action from each *other*
origin within `window_ns` (150 ms: far longer than any forwarding delay on a LAN, far
shorter than the quickest deliberate double press of a foot). The same origin is never
deduplicated against itself, so a real double press ("next, next") on one controller
still acts twice; and because each press matches at most one copy per other origin, the
double press also survives the thru box (two presses there, two copies here: two acts).
With `press_id` (COMMAND datagrams carry one), repeats of the same (origin, press_id)
are dropped whatever the timing: that is what makes resending a COMMAND safe.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

MAX_RECENT = 32  # per action; a foot cannot press 32 times in 150 ms
MAX_PRESS_IDS = 256


@dataclass
class _Press:
    t_ns: int
    origin: str
    matched: set[str] = field(default_factory=set)  # other origins whose copy it absorbed


class PressDeduper:
    def __init__(self, window_ns: int = 150_000_000):
        self.window_ns = window_ns
        self._recent: dict[str, deque[_Press]] = {}
        self._ids: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.duplicates = 0  # for status: how often a second path was caught

    def accept(self, action: str, now_ns: int, origin: str, press_id: int | None = None) -> bool:
        """True: act on it. False: it is a copy of a press already acted on.

        `origin` names the path ("midi", "gpio", "peer:2"); for forwarded COMMANDs include
        the sender's boot id in it (or make press ids random per boot), so that press ids
        starting again after a restart are not taken for repeats."""
        if press_id is not None:
            key = (origin, press_id)
            if key in self._ids:
                self.duplicates += 1
                return False
            self._ids[key] = None
            if len(self._ids) > MAX_PRESS_IDS:
                self._ids.popitem(last=False)
        recent = self._recent.setdefault(action, deque(maxlen=MAX_RECENT))
        while recent and now_ns - recent[0].t_ns > self.window_ns:
            recent.popleft()
        for p in recent:
            if p.origin != origin and origin not in p.matched:
                p.matched.add(origin)
                self.duplicates += 1
                return False
        recent.append(_Press(now_ns, origin))
        if len(self._recent) > 64:  # actions are a small fixed set; this is only a bound
            for a in [a for a, q in self._recent.items() if not q and a != action]:
                del self._recent[a]
        return True

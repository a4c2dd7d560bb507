"""Who leads, who follows, and who is heard: failover as a pure state machine.

Events in (`on_state`, `on_failing`, `on_follower`, with the caller's monotonic time), a
`tick(now)` out that returns what to do. No clocks, sockets or threads here, so every
failure scenario (leader dies, two units die, a network cut, a unit coming back) is a
deterministic test.

Rules, and why:

- Terms. Every leadership has a term number, carried in every STATE. The highest term
  wins, always: a unit that hears a higher term than its own adopts it and follows that
  leader, and if it was leading it mutes and steps down at once. Nothing ever lowers a
  term, so a unit that lost its leadership (it died, or was cut off) can never take it
  back by coming back: no split brain, no fail-back in the middle of a song. It may
  become leader again only by the ordinary takeover below, when the leader it follows
  fails.
- Takeover. A follower takes over when the leader's heartbeat (STATE, and ALIVE from the
  leader's audio writer: `on_alive`) has been silent for
  a timeout (`timeout_ns`, which the caller may change between ticks: the node sets it from
  a detector that learns the link, appliance.peer.detector), or at once when the leader announced FAILING (device gone, xrun storm). It
  raises the term to one above the highest it has seen, becomes leader and audible.
- Order among followers, without any voting: followers announce themselves (FOLLOWER:
  priority, healthy), and a follower's rank is the number of live followers that come
  before it by (unhealthy last, then lower priority number, then lower id). A follower
  of rank r waits (1 + r) x timeout after the last heartbeat (r x timeout after FAILING).
  So the first in line takes over after one timeout; its STATE with the new term reaches
  the others well before their own deadline and they follow it. If the first in line is
  dead too, the next one's own deadline (one timeout later) passes and it takes over (its
  rank also drops once the dead one's announcements are `follower_live_ns` old, 3
  timeouts by default; FOLLOWER must be announced more often than that): staggered,
  deterministic,
  and no two followers race unless their view of who is live differs (then the equal-term
  rule below settles it within one heartbeat).
- Equal terms, two leaders (misconfiguration, or two followers that took over together):
  the lower unit id keeps leading, the other mutes and follows it. Every unit applies the
  same rule, so all agree on the survivor.
- Heartbeat wire. With the optional GPIO wire from the leader's audio path, a silent
  network while the wire still toggles means the network failed, not the leader: no
  takeover (both units would otherwise be heard). FAILING still triggers a takeover: the
  leader itself said so. The wire must toggle only while the leader is audible.
- A follower that cannot play (its own interface is gone: `device_ok` False) does not
  take over from a leader that announced FAILING, only from one that fell silent: two
  failing units must not hand the failure back and forth.
- Startup. A unit configured as leader first listens for `startup_ns` (muted): if a
  leader is already running (it took over while this unit was down) it follows it instead
  of leading next to it. A configured follower that has never heard any leader waits
  `boot_grace_ns` (10 s by default) before leading by itself, so that at power-on a leader
  that boots a few seconds later still ends up leading; after that a lone follower
  plays, because silence is the worst outcome on stage.

`audible` means heard: unmuted in `unmute` mode, sending the pilot tone in `switcher` mode.
"""

from __future__ import annotations

from dataclasses import dataclass

LEADER, FOLLOWER, STARTING = "leader", "follower", "starting"

RoleAction = tuple[str] | tuple[str, int]
"""("become_leader", term) | ("unmute",) | ("mute",) | ("step_down",)"""

MAX_PEERS = 64


@dataclass
class _Peer:
    priority: int
    healthy: bool
    last_ns: int
    why_not: int = 0


class Roles:
    """The failover state of one unit. Feed it every authenticated STATE, FAILING and
    FOLLOWER from peers, call `tick(now)` after each and at least every few ms, and carry
    out the actions `tick` returns, in order (a mute always comes before a step_down)."""

    def __init__(self, my_id: int, priority: int, configured: str, timeout_ns: int, *,
                 startup_ns: int | None = None, boot_grace_ns: int = 10_000_000_000,
                 follower_live_ns: int | None = None, now_ns: int | None = None):
        if configured not in (LEADER, FOLLOWER):
            raise ValueError(f"configured role must be leader or follower, not {configured!r}")
        if timeout_ns <= 0:
            raise ValueError("timeout_ns must be positive")
        self.my_id = my_id
        self.priority = priority
        self.configured = configured
        self.timeout_ns = timeout_ns
        self.startup_ns = 3 * timeout_ns if startup_ns is None else startup_ns
        self.boot_grace_ns = boot_grace_ns
        # how long a FOLLOWER announcement keeps its sender in the takeover order: it must
        # comfortably exceed the announcement interval, or a live follower would blink out
        # of the order and two followers could take over at once
        self.follower_live_ns = 3 * timeout_ns if follower_live_ns is None else follower_live_ns
        self.role = STARTING if configured == LEADER else FOLLOWER
        self.term = 1 if configured == LEADER else 0
        self.leader_id: int | None = None
        self.audible = False
        self.healthy = True  # set by the caller: locked and able to play
        self.device_ok = True  # set by the caller: this unit's own audio interface works
        self.stale_states = 0  # STATEs from a leader with a lower term (an old leader)
        self.conflicts = 0  # STATEs from a same-term leader that must step down for us
        self._t0 = now_ns
        self._last_leader_ns: int | None = None
        self._failing_since: int | None = None
        self._max_term = self.term
        self._followers: dict[int, _Peer] = {}
        self._pending: list[RoleAction] = []

    # ----------------------------------------------------------------------------------------
    # events

    def on_state(self, sender: int, term: int, now_ns: int, failing: bool = False) -> None:
        """A STATE (leader heartbeat) from `sender` with its term; `failing` is the STATE's
        failing flag (repeated in every STATE so a lost FAILING does not matter)."""
        self._start(now_ns)
        if sender == self.my_id or term < 1:
            return
        self._max_term = max(self._max_term, term)
        if term > self.term:
            self._follow(sender, term, now_ns)
        elif term < self.term:
            self.stale_states += 1
            return
        elif self.role == LEADER:
            if sender > self.my_id:
                self.conflicts += 1  # it steps down when it hears us
                return
            self._follow(sender, term, now_ns)
        elif self.role == STARTING:
            self._follow(sender, term, now_ns)  # a leader is running: never lead beside it
        elif self.leader_id is None or sender <= self.leader_id:
            if sender != self.leader_id:
                self._failing_since = None
            self.leader_id = sender
            self._last_leader_ns = now_ns
        else:
            return  # a same-term leader with a higher id: it will step down
        if sender == self.leader_id:
            if not failing:
                self._failing_since = None  # it recovered (or never failed)
            elif self._failing_since is None:
                self._failing_since = now_ns

    def on_alive(self, sender: int, term: int, now_ns: int) -> None:
        """An ALIVE from `sender`: the leader we follow, in the term we follow it in, is
        alive (its audio writer ran just now). It changes nobody's role: any news about
        who leads comes with STATE, so an ALIVE of another unit or term is ignored."""
        if self.role == FOLLOWER and sender == self.leader_id and term == self.term:
            self._last_leader_ns = max(self._last_leader_ns or now_ns, now_ns)

    def excuse(self, stalled_ns: int, now_ns: int) -> None:
        """This unit itself did not run for `stalled_ns` just before `now_ns` (its peer
        thread woke that much later than it asked): a silence then is no evidence that the
        leader stopped, since nothing here was listening, and on a host that stalls as a
        whole (a virtual machine, a power-saving CPU) the leader was not running either. The
        leader gets that time back; a leader that really died is taken over that much later.
        """
        if self.role == FOLLOWER and self._last_leader_ns is not None and stalled_ns > 0:
            self._last_leader_ns = min(now_ns, self._last_leader_ns + stalled_ns)

    def on_failing(self, sender: int, term: int, now_ns: int) -> None:
        """The leader announced its own failure: the first follower in line takes over now."""
        self._start(now_ns)
        if sender == self.my_id or term < 1 or term < self.term:
            return
        self._max_term = max(self._max_term, term)
        if term > self.term or self.role == STARTING:
            self._follow(sender, term, now_ns)
        if self.role == FOLLOWER and sender == self.leader_id and self._failing_since is None:
            self._failing_since = now_ns

    def on_follower(self, sender: int, priority: int, healthy: bool, now_ns: int,
                    term: int | None = None, why_not: int = 0) -> None:
        """A FOLLOWER announcement: who else could take over, in which order. Its `term`
        (optional) only raises the term a takeover will use, so a new term is never one
        that some leader somewhere already holds."""
        self._start(now_ns)
        if sender == self.my_id:
            return
        if term is not None:
            self._max_term = max(self._max_term, term)
        self._followers[sender] = _Peer(priority, healthy, now_ns, why_not)
        if len(self._followers) > MAX_PEERS:
            oldest = min(self._followers, key=lambda k: self._followers[k].last_ns)
            del self._followers[oldest]

    def rename(self, new_id: int) -> None:
        """Take another unit id (this unit found a twin with its id). Never while leading:
        followers know the leader by its id, so the twin that follows renames instead."""
        if self.role == LEADER:
            raise ValueError("a leader keeps its id")
        self._followers.pop(new_id, None)
        self.my_id = new_id

    # ----------------------------------------------------------------------------------------
    # time

    def tick(self, now_ns: int, heartbeat_wire_alive: bool | None = None) -> list[RoleAction]:
        """Decide; returns the actions to carry out now. `heartbeat_wire_alive`: None when
        no wire is fitted, else whether the leader's GPIO heartbeat is still toggling."""
        self._start(now_ns)
        out, self._pending = self._pending, []
        assert self._t0 is not None
        if self.role == STARTING:
            if heartbeat_wire_alive:
                self._t0 = now_ns  # someone's audio path is running: keep listening
            elif now_ns - self._t0 >= self.startup_ns:
                out += self._lead(self.term)
        elif self.role == FOLLOWER:
            deadline = self.takeover_deadline(now_ns, heartbeat_wire_alive)
            if deadline is not None and now_ns >= deadline:
                out += self._lead(self._max_term + 1)
        return out

    def takeover_deadline(self, now_ns: int, heartbeat_wire_alive: bool | None = None
                          ) -> int | None:
        """When this follower takes over if nothing changes (None: not while things stay as
        they are; e.g. the wire says the leader plays). For status and tests."""
        if self.role != FOLLOWER:
            return None
        rank = self.rank(now_ns)
        if self._failing_since is not None and self.device_ok:
            return self._failing_since + rank * self.timeout_ns
        # A failing leader is no worse than a follower whose own interface is gone: taking
        # over would only hand the failure back and forth (seen: two units without their
        # interfaces swapped roles every few ms, flooding the journal). Such a follower
        # takes over only if the leader falls silent as well.
        if heartbeat_wire_alive:
            return None
        if self._last_leader_ns is None:
            assert self._t0 is not None
            return self._t0 + self.boot_grace_ns + rank * self.timeout_ns
        return self._last_leader_ns + (1 + rank) * self.timeout_ns

    def rank(self, now_ns: int) -> int:
        """Live followers ahead of this one in the takeover order."""
        mine = (not self.healthy, self.priority, self.my_id)
        n = 0
        for pid, p in self._followers.items():
            if pid == self.leader_id or now_ns - p.last_ns > self.follower_live_ns:
                continue
            if (not p.healthy, p.priority, pid) < mine:
                n += 1
        return n

    def live_followers(self, now_ns: int) -> list[tuple[int, int]]:
        """(unit id, why_not bits) of every follower announced within `follower_live_ns`,
        in takeover order (for the protection assessment)."""
        live = [(not p.healthy, p.priority, pid, p.why_not) for pid, p in self._followers.items()
                if now_ns - p.last_ns <= self.follower_live_ns and pid != self.leader_id
                and pid != self.my_id]
        return [(pid, why) for _h, _p, pid, why in sorted(live)]

    def status(self, now_ns: int) -> dict[str, object]:
        """For `backtrack ctl status`: enough to see who leads and why."""
        live = sorted(pid for pid, p in self._followers.items()
                      if now_ns - p.last_ns <= self.follower_live_ns and pid != self.leader_id)
        return {"role": self.role, "term": self.term, "leader": self.leader_id,
                "audible": self.audible, "rank": self.rank(now_ns) if self.role == FOLLOWER
                else None, "followers": live, "stale_states": self.stale_states,
                "conflicts": self.conflicts}

    # ----------------------------------------------------------------------------------------

    def _start(self, now_ns: int) -> None:
        if self._t0 is None:
            self._t0 = now_ns

    def _follow(self, leader: int, term: int, now_ns: int) -> None:
        if self.audible:
            self.audible = False
            self._pending.append(("mute",))
        if self.role == LEADER:
            self._pending.append(("step_down",))
        self.role = FOLLOWER
        self.term = term
        self.leader_id = leader
        self._last_leader_ns = now_ns
        self._failing_since = None

    def _lead(self, term: int) -> list[RoleAction]:
        self.role = LEADER
        self.term = term
        self._max_term = max(self._max_term, term)
        self.leader_id = self.my_id
        self._failing_since = None
        self.audible = True
        return [("become_leader", term), ("unmute",)]

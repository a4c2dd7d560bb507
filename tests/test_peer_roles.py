"""Failover roles and press deduplication.

Most tests run a small simulated cluster: units exchange STATE / FOLLOWER / FAILING over a
virtual network with links that can be cut, each on its own heartbeat phase, ticked every
millisecond of simulated time. The invariant checked throughout: outside the moments the
rules allow (a network cut without the heartbeat wire), at most one unit is heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from appliance.peer.dedupe import PressDeduper
from appliance.peer.roles import FOLLOWER, LEADER, STARTING, Roles

MS = 1_000_000
TIMEOUT = 60 * MS
PERIOD = 10 * MS  # heartbeat / announcement interval


@dataclass
class Unit:
    roles: Roles
    alive: bool = True
    failing: bool = False
    actions: list[tuple[int, tuple]] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.roles.my_id

    def act(self, t: int, actions: list) -> None:
        for a in actions:
            self.actions.append((t, a))
        # the actions alone must track `audible`
        heard = None
        for _, a in self.actions:
            if a[0] == "unmute":
                heard = True
            elif a[0] == "mute":
                heard = False
        assert bool(heard) == self.roles.audible


class Cluster:
    """Units by id; `wire[f] = l` means follower f has a heartbeat wire from unit l."""

    def __init__(self, *units: Unit, wire: dict[int, int] | None = None,
                 follower_every_ms: int = PERIOD // MS):
        self.units = {u.id: u for u in units}
        self.follower_every_ms = follower_every_ms
        self.t = 0
        self.cut: set[frozenset[int]] = set()
        self.wire = wire or {}
        self.heard: list[tuple[int, tuple[int, ...]]] = []  # (t, audible live units)

    def link(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self.cut

    def isolate(self, uid: int) -> None:
        self.cut |= {frozenset((uid, o)) for o in self.units if o != uid}

    def heal(self) -> None:
        self.cut.clear()

    def wire_alive(self, uid: int) -> bool | None:
        src = self.wire.get(uid)
        if src is None:
            return None
        s = self.units[src]
        return s.alive and s.roles.audible

    def restart(self, uid: int, configured: str, priority: int) -> None:
        """A new process on the same unit: fresh state, nothing remembered."""
        self.units[uid] = Unit(Roles(uid, priority, configured, TIMEOUT, now_ns=self.t))

    def send(self, u: Unit, msg: tuple) -> None:
        for v in self.units.values():
            if v is u or not v.alive or not self.link(u.id, v.id):
                continue
            r = v.roles
            if msg[0] == "state":
                r.on_state(u.id, msg[1], self.t, failing=msg[2])
            elif msg[0] == "follower":
                r.on_follower(u.id, msg[1], msg[2], self.t, term=msg[3])
            else:
                r.on_failing(u.id, msg[1], self.t)
            v.act(self.t, r.tick(self.t, self.wire_alive(v.id)))

    def fail(self, uid: int) -> None:
        u = self.units[uid]
        u.failing = True
        self.send(u, ("failing", u.roles.term))

    def run(self, until_ms: float) -> None:
        end = int(until_ms * MS)
        while self.t < end:
            self.t += MS
            for u in list(self.units.values()):
                if not u.alive:
                    continue
                r, phase = u.roles, self.t // MS + 3 * u.id
                if r.role == LEADER and phase % (PERIOD // MS) == 0:
                    self.send(u, ("state", r.term, u.failing))
                elif r.role == FOLLOWER and phase % self.follower_every_ms == 0:
                    self.send(u, ("follower", r.priority, r.healthy, r.term))
            for u in self.units.values():
                if u.alive:
                    u.act(self.t, u.roles.tick(self.t, self.wire_alive(u.id)))
            self.heard.append((self.t, self.audible()))

    def audible(self) -> tuple[int, ...]:
        return tuple(u.id for u in self.units.values() if u.alive and u.roles.audible)

    def heard_since(self, t_ms: float) -> set[tuple[int, ...]]:
        return {a for t, a in self.heard if t >= t_ms * MS}

    def overlap_ms(self) -> int:
        return sum(1 for _, a in self.heard if len(a) > 1)

    def first(self, uid: int, name: str) -> int | None:
        """Time (ms) of the unit's first action `name`."""
        return next((t // MS for t, a in self.units[uid].actions if a[0] == name), None)


def trio(**kw: object) -> Cluster:
    """A (id 1) configured leader; B (id 2, priority 1) and C (id 3, priority 2) followers."""
    return Cluster(
        Unit(Roles(1, 1, "leader", TIMEOUT, now_ns=0)),
        Unit(Roles(2, 1, "follower", TIMEOUT, now_ns=0)),
        Unit(Roles(3, 2, "follower", TIMEOUT, now_ns=0)),
        **kw,  # type: ignore[arg-type]
    )


def started_trio(**kw: object) -> Cluster:
    c = trio(**kw)
    c.run(1000)
    assert c.heard_since(500) == {(1,)}
    return c


# --------------------------------------------------------------------------------------------
# Startup


def test_configured_leader_listens_then_leads() -> None:
    c = trio()
    c.run(1000)
    a, b, cc = (c.units[i].roles for i in (1, 2, 3))
    assert (a.role, a.term, a.audible) == (LEADER, 1, True)
    assert c.first(1, "become_leader") == 3 * TIMEOUT // MS  # after listening 3 timeouts
    assert c.units[1].actions[:2] == [(180 * MS, ("become_leader", 1)), (180 * MS, ("unmute",))]
    for f in (b, cc):
        assert (f.role, f.term, f.leader_id, f.audible) == (FOLLOWER, 1, 1, False)
    assert c.overlap_ms() == 0
    assert b.rank(c.t) == 0 and cc.rank(c.t) == 1
    assert b.status(c.t) == {"role": FOLLOWER, "term": 1, "leader": 1, "audible": False,
                             "rank": 0, "followers": [3], "stale_states": 0, "conflicts": 0}


def test_configured_leader_that_restarts_follows_the_running_leader() -> None:
    r = Roles(1, 1, "leader", TIMEOUT, now_ns=0)
    assert r.role == STARTING and r.term == 1 and not r.audible
    r.on_state(2, 1, 50 * MS)  # a leader with the same term is already running
    assert r.tick(60 * MS) == [] and r.role == FOLLOWER and r.leader_id == 2
    assert r.tick(10_000 * MS) != []  # ...and if that leader dies, ordinary takeover
    assert r.role == LEADER and r.term == 2


def test_lone_follower_leads_only_after_the_boot_grace() -> None:
    r = Roles(2, 1, "follower", TIMEOUT, now_ns=0, boot_grace_ns=5_000 * MS)
    assert r.tick(4_999 * MS) == []
    assert r.tick(5_000 * MS) == [("become_leader", 1), ("unmute",)]
    assert (r.role, r.term, r.leader_id) == (LEADER, 1, 2)


def test_late_booting_configured_leader_follows_the_follower_that_took_over() -> None:
    b = Unit(Roles(2, 1, "follower", TIMEOUT, now_ns=0, boot_grace_ns=2_000 * MS))
    c = Cluster(b)
    c.run(3000)
    assert c.audible() == (2,) and b.roles.term == 1
    c.units[1] = Unit(Roles(1, 1, "leader", TIMEOUT, now_ns=c.t))
    c.run(6000)
    assert c.heard_since(2001) == {(2,)}
    assert c.units[1].roles.role == FOLLOWER and c.units[1].roles.leader_id == 2


# --------------------------------------------------------------------------------------------
# Takeover


def test_takeover_on_timeout_by_the_highest_priority_follower_only() -> None:
    c = started_trio()
    c.units[1].alive = False  # power cut on A at t = 1000 ms
    c.run(3000)
    b, cc = c.units[2].roles, c.units[3].roles
    assert (b.role, b.term, b.audible) == (LEADER, 2, True)
    assert 1000 + 50 <= c.first(2, "become_leader") <= 1000 + TIMEOUT // MS
    assert c.units[2].actions[-2:][0][1] == ("become_leader", 2)
    assert (cc.role, cc.term, cc.leader_id, cc.audible) == (FOLLOWER, 2, 2, False)
    assert c.first(3, "become_leader") is None
    assert c.heard_since(1000 + TIMEOUT // MS) == {(2,)}
    assert c.overlap_ms() == 0


def test_sparse_follower_announcements_still_give_one_successor() -> None:
    """FOLLOWER only every 100 ms (longer than the 60 ms timeout), leader dies at
    different phases: exactly one follower takes over, never two at once."""
    for kill_ms in range(1000, 1100, 7):
        c = trio(follower_every_ms=100)
        c.run(kill_ms)
        c.units[1].alive = False
        c.run(kill_ms + 1000)
        assert c.audible() == (2,), kill_ms
        assert c.overlap_ms() == 0 and c.first(3, "become_leader") is None


def test_staggered_takeover_when_the_first_in_line_is_gone_too() -> None:
    c = started_trio()
    c.units[1].alive = c.units[2].alive = False
    c.run(3000)
    cc = c.units[3].roles
    assert (cc.role, cc.term, cc.audible) == (LEADER, 2, True)
    # not before one timeout (B might still act), not later than two (staggered by rank)
    took = c.first(3, "become_leader")
    assert took is not None and 1000 + 50 <= took <= 1000 + 2 * TIMEOUT // MS
    assert c.heard_since(took) == {(3,)}


def test_lower_priority_follower_waits_for_the_first_in_line() -> None:
    """Both followers alive: C's deadline is one timeout later than B's, and B's STATE with
    the new term arrives long before it."""
    c = started_trio()
    c.units[1].alive = False
    b, cc = c.units[2].roles, c.units[3].roles
    c.run(1030)
    assert cc.takeover_deadline(c.t) - b.takeover_deadline(c.t) == TIMEOUT
    c.run(1500)
    assert c.first(3, "become_leader") is None and cc.leader_id == 2


def test_healthy_follower_goes_before_an_unhealthy_one() -> None:
    c = started_trio()
    c.units[2].roles.healthy = False  # B lost its lock / its files: C first, whatever priority
    c.run(1100)
    c.units[1].alive = False
    c.run(2000)
    assert c.units[3].roles.role == LEADER and c.units[2].roles.leader_id == 3
    assert c.first(2, "become_leader") is None


def test_failing_announcement_means_takeover_at_once() -> None:
    c = started_trio()
    c.fail(1)  # A: USB interface gone. It keeps sending STATE (with the flag) until replaced
    c.run(1000 + 20)
    b = c.units[2].roles
    assert b.role == LEADER and b.term == 2
    assert c.first(2, "become_leader") == 1000  # the same millisecond it heard FAILING
    # A hears B's first STATE within one heartbeat, mutes and steps down
    a = c.units[1]
    assert a.roles.role == FOLLOWER and not a.roles.audible and a.roles.leader_id == 2
    assert [x for _, x in a.actions[-2:]] == [("mute",), ("step_down",)]
    assert c.overlap_ms() <= PERIOD // MS
    c.run(3000)
    assert c.heard_since(1020) == {(2,)} and c.first(3, "become_leader") is None


def test_failing_flag_in_state_is_enough_when_the_failing_datagram_is_lost() -> None:
    c = started_trio()
    c.units[1].failing = True  # no FAILING datagram, only the flag in STATE
    c.run(1000 + PERIOD // MS + 1)
    assert c.units[2].roles.role == LEADER


def test_two_units_without_interfaces_do_not_hand_the_failure_back_and_forth() -> None:
    """Both interfaces gone (one power strip): the failing leader keeps leading, nobody
    flaps; the follower takes over once its own interface is back, or once the leader
    falls silent."""
    def pair() -> Cluster:
        c = Cluster(Unit(Roles(1, 1, "leader", TIMEOUT, now_ns=0)),
                    Unit(Roles(2, 1, "follower", TIMEOUT, now_ns=0)))
        c.run(1000)
        c.units[2].roles.device_ok = False
        c.units[2].roles.healthy = False
        c.fail(1)
        c.run(3000)
        a, b = c.units[1].roles, c.units[2].roles
        assert a.role == LEADER and b.role == FOLLOWER and a.term == 1
        assert c.first(2, "become_leader") is None and c.heard_since(1000) == {(1,)}
        return c

    c = pair()
    c.units[2].roles.device_ok = True  # B's interface is back: now B is the better unit
    c.run(3000 + PERIOD // MS + 1)
    assert c.units[2].roles.role == LEADER and c.units[2].roles.term == 2

    c = pair()
    c.units[1].alive = False  # A dies outright: a lone unit keeps the show clock going
    c.run(3000 + TIMEOUT // MS + PERIOD // MS + 1)
    assert c.units[2].roles.role == LEADER


def test_leader_that_recovers_before_anyone_acts_keeps_leading() -> None:
    r = Roles(3, 2, "follower", TIMEOUT, now_ns=0)
    r.on_follower(2, 1, True, 0)
    r.on_state(1, 1, 10 * MS, failing=True)  # C is rank 1: it would wait one timeout
    assert r.tick(20 * MS) == []
    r.on_follower(2, 1, True, 20 * MS)
    r.on_state(1, 1, 30 * MS, failing=False)  # A recovered (the xrun storm passed)
    assert r.tick(10 * MS + TIMEOUT) == [] and r.role == FOLLOWER


def test_alive_from_the_leaders_writer_holds_off_a_takeover_and_changes_nobodys_role() -> None:
    """STATE held back (a busy peer thread) while ALIVE from the audio writer arrives:
    no takeover. ALIVE from another unit, or of an older term, proves nothing."""
    r = Roles(2, 1, "follower", TIMEOUT, now_ns=0)
    r.on_state(1, 3, 10 * MS)
    for t in range(12, 400, 3):  # only ALIVE for 390 ms
        r.on_alive(1, 3, t * MS)
        assert r.tick(t * MS) == []
    assert (r.role, r.leader_id, r.term) == (FOLLOWER, 1, 3)
    for t in range(400, 400 + TIMEOUT // MS, 2):  # another unit's, and an old term's
        r.on_alive(4, 3, t * MS)
        r.on_alive(1, 2, t * MS)
    assert r.takeover_deadline(400 * MS) == 399 * MS + TIMEOUT
    assert r.tick(399 * MS + TIMEOUT) == [("become_leader", 4), ("unmute",)]
    r.on_alive(1, 3, 500 * MS)  # the old leader's writer, late: we lead now
    assert r.role == LEADER and r.leader_id == 2


def test_a_stall_of_the_follower_itself_is_not_held_against_the_leader() -> None:
    """The follower did not run for 80 ms (longer than the timeout): the leader gets that
    time back, so the follower's first tick after the stall is no takeover; a leader that
    stays silent after it is taken over one timeout after the stall, not before."""
    r = Roles(2, 1, "follower", TIMEOUT, now_ns=0)
    r.on_state(1, 3, 10 * MS)
    stall = 80 * MS
    woke = 10 * MS + stall + 5 * MS
    r.excuse(stall, woke)
    assert r.tick(woke) == [] and r.role == FOLLOWER
    assert r.takeover_deadline(woke) == 10 * MS + stall + TIMEOUT
    assert r.tick(10 * MS + stall + TIMEOUT) == [("become_leader", 4), ("unmute",)]
    # never beyond now, and a leader takes no excuse
    f = Roles(3, 1, "follower", TIMEOUT, now_ns=0)
    f.on_state(1, 3, 10 * MS)
    f.excuse(10_000 * MS, 20 * MS)
    assert f.takeover_deadline(20 * MS) == 20 * MS + TIMEOUT
    r.excuse(stall, 500 * MS)
    assert r.role == LEADER


# --------------------------------------------------------------------------------------------
# Heartbeat wire


def test_wire_alive_prevents_takeover_on_network_silence() -> None:
    c = Cluster(Unit(Roles(1, 1, "leader", TIMEOUT, now_ns=0)),
                Unit(Roles(2, 1, "follower", TIMEOUT, now_ns=0)), wire={2: 1})
    c.run(1000)
    c.isolate(1)  # the network cable of A is pulled; A plays on
    c.run(5000)
    assert c.heard_since(500) == {(1,)}
    assert c.units[2].roles.takeover_deadline(c.t, True) is None
    # and when A really dies, the wire stops: B takes over at once (network already silent)
    c.units[1].alive = False
    c.run(5002)
    assert c.units[2].roles.role == LEADER and c.first(2, "become_leader") == 5001


def test_wire_alive_does_not_block_a_failing_takeover() -> None:
    c = Cluster(Unit(Roles(1, 1, "leader", TIMEOUT, now_ns=0)),
                Unit(Roles(2, 1, "follower", TIMEOUT, now_ns=0)), wire={2: 1})
    c.run(1000)
    c.fail(1)
    c.run(1001)
    assert c.units[2].roles.role == LEADER


def test_network_cut_without_wire_is_the_one_allowed_overlap_and_heals_to_one() -> None:
    """No wire: B cannot tell a cut from a death and takes over (silence is worse). When
    the network heals, A sees the higher term and mutes for good."""
    c = Cluster(Unit(Roles(1, 1, "leader", TIMEOUT, now_ns=0)),
                Unit(Roles(2, 1, "follower", TIMEOUT, now_ns=0)))
    c.run(1000)
    c.isolate(1)
    c.run(2000)
    assert c.audible() == (1, 2)
    c.heal()
    c.run(2000 + PERIOD // MS + 1)
    assert c.audible() == (2,)
    c.run(10_000)
    assert c.heard_since(2011) == {(2,)}
    a = c.units[1].roles
    assert (a.role, a.term, a.leader_id) == (FOLLOWER, 2, 2) and a.conflicts == 0


# --------------------------------------------------------------------------------------------
# Coming back


def test_old_leader_returning_stays_muted_forever() -> None:
    c = started_trio()
    c.units[1].alive = False
    c.run(2000)
    c.restart(1, "leader", 1)  # A's power comes back: a fresh process, configured leader
    c.run(20_000)
    a = c.units[1]
    assert a.roles.role == FOLLOWER and a.roles.term == 2 and a.roles.leader_id == 2
    assert not any(x[0] in ("unmute", "become_leader") for _, x in a.actions)
    assert c.heard_since(1100) == {(2,)}


def test_chain_of_failures_n3() -> None:
    c = started_trio()
    c.units[1].alive = False
    c.run(2000)
    assert c.audible() == (2,)
    c.units[2].alive = False
    c.run(3000)
    assert c.audible() == (3,) and c.units[3].roles.term == 3
    c.restart(1, "leader", 1)
    c.restart(2, "follower", 1)
    c.run(10_000)
    assert c.heard_since(2100) == {(3,)}
    assert [c.units[i].roles.leader_id for i in (1, 2, 3)] == [3, 3, 3]
    assert {c.units[i].roles.term for i in (1, 2, 3)} == {3}
    # the returned units line up behind C: A and B both priority 1, so A (lower id) first.
    # A leads again only by the ordinary takeover, when the leader it follows dies.
    assert c.units[1].roles.rank(c.t) == 0 and c.units[2].roles.rank(c.t) == 1
    c.units[3].alive = False
    c.run(12_000)
    assert c.audible() == (1,) and c.units[1].roles.term == 4
    assert c.units[2].roles.leader_id == 1 and c.first(2, "become_leader") is None


# --------------------------------------------------------------------------------------------
# Conflicts and stale messages


def test_two_leaders_with_the_same_term_lower_id_wins() -> None:
    c = Cluster(Unit(Roles(1, 1, "leader", TIMEOUT, now_ns=0)),
                Unit(Roles(2, 1, "leader", TIMEOUT, now_ns=0)))  # both configured leader
    c.isolate(1)  # they cannot hear each other while starting: both lead, term 1
    c.run(500)
    assert c.audible() == (1, 2)
    c.heal()
    c.run(500 + PERIOD // MS + 1)
    assert c.audible() == (1,)
    assert [x for _, x in c.units[2].actions[-2:]] == [("mute",), ("step_down",)]
    assert c.units[2].roles.leader_id == 1 and c.units[1].roles.conflicts >= 1
    c.run(3000)
    assert c.heard_since(512) == {(1,)}


def test_follower_picks_the_same_survivor_of_an_equal_term_conflict() -> None:
    r = Roles(5, 1, "follower", TIMEOUT, now_ns=0)
    r.on_state(3, 4, 1 * MS)
    r.on_state(2, 4, 2 * MS)  # two leaders, term 4: id 2 will win, follow it now
    assert r.leader_id == 2
    r.on_state(3, 4, 3 * MS)
    assert r.leader_id == 2


def test_stale_and_own_messages_are_ignored() -> None:
    r = Roles(2, 1, "follower", TIMEOUT, now_ns=0)
    r.on_state(1, 3, 1 * MS)
    r.on_state(4, 2, 2 * MS)  # an old leader
    r.on_failing(4, 2, 2 * MS)  # ...that is failing: not our leader, nothing to do
    r.on_state(2, 9, 3 * MS)  # our own echo
    r.on_state(7, 0, 3 * MS)  # term 0 is no leadership
    assert (r.term, r.leader_id, r.stale_states) == (3, 1, 1)
    assert r.tick(1 * MS + TIMEOUT - 1) == []
    assert r.tick(1 * MS + TIMEOUT) == [("become_leader", 4), ("unmute",)]


def test_takeover_term_is_above_any_term_a_follower_reported() -> None:
    r = Roles(2, 1, "follower", TIMEOUT, now_ns=0)
    r.on_state(1, 1, 0)
    r.on_follower(3, 2, True, 0, term=7)
    assert r.tick(TIMEOUT) == [("become_leader", 8), ("unmute",)]


def test_follower_table_is_bounded_and_expires() -> None:
    r = Roles(1000, 50, "follower", TIMEOUT, now_ns=0)
    for i in range(200):
        r.on_follower(i, 1, True, i)
    assert len(r._followers) == 64
    assert r.rank(199) == 64
    assert r.rank(199 + 3 * TIMEOUT) == 1  # announced at 199 ns: still live
    assert r.rank(199 + 3 * TIMEOUT + 1) == 0  # all silent for 3 timeouts: none counts


def test_followers_announcing_less_often_than_the_timeout_keep_their_place() -> None:
    """FOLLOWER every 100 ms with a 60 ms timeout: B must never blink out of C's order,
    or C would take over beside B."""
    r = Roles(3, 2, "follower", TIMEOUT, now_ns=0)
    for t in range(0, 2000, 100):
        r.on_follower(2, 1, True, t * MS)
        for dt in range(0, 100, 5):
            assert r.rank((t + dt) * MS) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="leader or follower"):
        Roles(1, 1, "boss", TIMEOUT)
    with pytest.raises(ValueError):
        Roles(1, 1, "leader", 0)


# --------------------------------------------------------------------------------------------
# Press deduplication


def test_same_press_from_two_paths_acts_once() -> None:
    d = PressDeduper()
    assert d.accept("next", 0, "midi")
    assert not d.accept("next", 20 * MS, "peer:2")  # the follower's copy through the thru box
    assert d.accept("next", 400 * MS, "peer:2")  # a new press, later
    assert not d.accept("next", 410 * MS, "midi")
    assert d.duplicates == 2


def test_copy_arriving_first_still_acts_once() -> None:
    d = PressDeduper()
    assert d.accept("play_stop", 0, "peer:2")
    assert not d.accept("play_stop", 1 * MS, "midi")


def test_window_edge_and_different_actions() -> None:
    d = PressDeduper(window_ns=150 * MS)
    assert d.accept("next", 0, "midi")
    assert d.accept("prev", 1 * MS, "peer:2")  # another action is another press
    assert d.accept("next", 151 * MS, "peer:2")  # outside the window: a press of its own


def test_double_press_on_one_controller_acts_twice_even_through_two_paths() -> None:
    for order in (["midi", "midi", "peer", "peer"], ["midi", "peer", "midi", "peer"],
                  ["peer", "midi", "midi", "peer"]):
        d = PressDeduper()
        acted = [d.accept("next", i * 30 * MS, o) for i, o in enumerate(order)]
        assert sum(acted) == 2, order


def test_three_paths_act_once() -> None:
    d = PressDeduper()
    assert [d.accept("goto 3", t * MS, o) for t, o in ((0, "midi"), (5, "peer:2"),
                                                        (9, "peer:3"))] == [True, False, False]


def test_resent_command_is_dropped_by_press_id_whatever_the_timing() -> None:
    d = PressDeduper()
    assert d.accept("next", 0, "peer:2:boot9", press_id=41)
    assert not d.accept("next", 1 * MS, "peer:2:boot9", press_id=41)  # resent copy
    assert not d.accept("next", 900 * MS, "peer:2:boot9", press_id=41)  # very late copy
    assert d.accept("next", 950 * MS, "peer:2:boot9", press_id=42)  # the next press
    for i in range(1000):
        d.accept("stop", 2_000 * MS + i * 200 * MS, "peer:3", press_id=i)
    assert len(d._ids) <= 256 and len(d._recent["stop"]) <= 32

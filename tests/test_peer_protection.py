"""The failure detector and the protection verdict: pure logic, judged with made-up arrival
times and facts (no clock, no thread, no socket)."""

from __future__ import annotations

import random

import pytest

from appliance.peer import wire
from appliance.peer.detector import FailureDetector
from appliance.peer.protection import (
    ID_CLASH,
    KEY_MISMATCH,
    LEADER_SILENT,
    NEVER_HEARD,
    NO_DEVICE,
    NOT_LOCKED,
    SETLIST_MISMATCH,
    Facts,
    Reporter,
    assess,
)

MS = 1_000_000


def detector(**kw) -> FailureDetector:
    args = {"floor_ns": 10 * MS, "ceiling_ns": 250 * MS, "start_ns": 60 * MS}
    args.update(kw)
    return FailureDetector(**args)


def feed(d: FailureDetector, arrivals) -> None:
    for t in arrivals:
        d.heard(int(t))


def link(seconds: float, every_ms: float, loss: float, jitter_ms: float, seed: int = 1):
    """Arrival times of heartbeats sent every `every_ms`, each lost with probability `loss`
    and delayed by a uniform 0..2*jitter (as a jittery network reorders them)."""
    rnd = random.Random(seed)
    out = []
    for k in range(int(seconds * 1000 / every_ms)):
        if rnd.random() < loss:
            continue
        out.append(k * every_ms * MS + rnd.uniform(0, 2 * jitter_ms) * MS)
    return sorted(out)


def silences(arrivals) -> list[float]:
    return [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]


def test_a_stall_of_the_listener_is_not_learned_as_a_gap_of_the_link():
    """A quiet link, then the follower itself stalls 45 ms (Roles.excuse's twin): the gap
    over the stall is learned without it, so the timeout stays at the floor; the same
    silence not excused (the leader's, or the link's) is learned and doubles into the guard."""
    for excused, want in ((True, 10 * MS), (False, 94 * MS)):
        d = detector()
        arr = link(5, 2, 0.0, 0.05)
        feed(d, arr)
        last = int(arr[-1])
        if excused:
            d.excuse(45 * MS)
        d.heard(last + 47 * MS)
        assert d.timeout_ns == want, (excused, d.timeout_ns / MS)


def test_quiet_link_gives_the_floor_and_a_fast_takeover():
    d = detector()
    assert d.timeout_ns == 60 * MS          # nothing learned yet: the safe start value
    feed(d, link(5, 2, 0.0, 0.05))
    assert d.learned
    assert d.timeout_ns == 10 * MS          # a quiet 2 ms heartbeat: the floor


def test_lossy_jittery_link_learns_a_timeout_no_live_gap_reaches():
    """5 % loss and 5 ms jitter: the learned timeout is longer than any silence a live
    leader left over 10 minutes of heartbeats (the detector learns from the first 10 s),
    yet a dead leader is still found within a tenth of a second."""
    d = detector()
    arrivals = link(600, 2, 0.05, 5.0, seed=7)
    first = [t for t in arrivals if t < 10_000 * MS]
    feed(d, first)
    learned = d.timeout_ns
    assert 20 * MS < learned < 100 * MS, learned / MS
    worst = max(silences(arrivals))
    assert worst < learned, (worst / MS, learned / MS)
    # and it keeps learning: fed the rest it stays above every silence
    feed(d, arrivals[len(first):])
    assert max(silences(arrivals[-4000:])) < d.timeout_ns


def test_a_fixed_timeout_of_the_old_kind_would_fire_on_that_link():
    """Why the detector exists: 10 ms (fast on a quiet link) is exceeded many times in
    10 minutes on the lossy one."""
    arrivals = link(600, 2, 0.05, 5.0, seed=7)
    assert sum(1 for g in silences(arrivals) if g > 10 * MS) > 100


def test_ceiling_and_fixed_timeout():
    d = detector()
    feed(d, [k * 100 * MS for k in range(40)])       # 10 Hz: twice the longest gap
    assert d.timeout_ns == 200 * MS
    feed(d, [4000 * MS + k * 200 * MS for k in range(40)])   # 5 Hz: 400 ms, capped
    assert d.timeout_ns == 250 * MS
    fixed = detector(floor_ns=30 * MS, ceiling_ns=30 * MS, start_ns=30 * MS)
    feed(fixed, link(5, 2, 0.05, 5.0))
    assert fixed.timeout_ns == 30 * MS               # peer.timeout_ms set: no learning


def test_reset_forgets_the_last_arrival_not_the_link():
    d = detector()
    feed(d, link(5, 2, 0.0, 0.05))
    d.reset()
    d.heard(10_000 * MS)                              # a new leader, 5 s later
    assert d.timeout_ns == 10 * MS                    # that gap was not counted
    assert d.status()["gap_max_ms"] < 5


def test_phi_rises_with_silence():
    d = detector()
    feed(d, link(2, 2, 0.0, 0.3))
    last = max(link(2, 2, 0.0, 0.3))
    assert d.phi_at(int(last)) < 1
    assert d.phi_at(int(last + 20 * MS)) > 8
    with pytest.raises(ValueError):
        FailureDetector(floor_ns=0, ceiling_ns=1, start_ns=1)


# ---- protection ---------------------------------------------------------------------------

def names(why: list[str]) -> list[str]:
    return [w.split(":")[0] for w in why]


def test_a_locked_follower_and_its_leader_are_protected():
    assert assess(Facts("follower", heard_peer=True, leader_alive=True, locked=True)) == []
    assert assess(Facts("follower", heard_peer=True, leader_alive=True, locked=None)) == []
    assert assess(Facts("leader", heard_peer=True, followers=((7, 0),),
                        followers_seen=True)) == []


@pytest.mark.parametrize("facts,cause", [
    (Facts("follower"), NEVER_HEARD),
    (Facts("leader"), NEVER_HEARD),
    (Facts("follower", heard_peer=True, leader_alive=True, id_clash="twin"), ID_CLASH),
    (Facts("follower", key_mismatch=12), KEY_MISMATCH),
    (Facts("follower", heard_peer=True, leader_alive=True, setlist_mismatch=True),
     SETLIST_MISMATCH),
    (Facts("follower", heard_peer=True, leader_alive=False), LEADER_SILENT),
    (Facts("follower", heard_peer=True, leader_alive=True, locked=False), NOT_LOCKED),
    (Facts("follower", heard_peer=True, leader_alive=True, device_ok=False), NO_DEVICE),
    # the leader names what its follower reports
    (Facts("leader", heard_peer=True, followers=((7, wire.NOT_LOCKED),)), NOT_LOCKED),
    (Facts("leader", heard_peer=True, followers=((7, wire.NO_DEVICE),)), NO_DEVICE),
    (Facts("leader", heard_peer=True, followers=((7, wire.SETLIST_MISMATCH),)),
     SETLIST_MISMATCH),
    (Facts("leader", heard_peer=True, followers=((7, wire.ID_CLASH),)), ID_CLASH),
    (Facts("leader", heard_peer=True, followers=(), followers_seen=False), NEVER_HEARD),
])
def test_each_cause_is_named(facts, cause):
    why = assess(facts)
    assert cause in names(why), why


def test_one_ready_follower_is_enough():
    f = Facts("leader", heard_peer=True, followers=((3, wire.NOT_LOCKED), (4, 0)))
    assert assess(f) == []


def test_reporter_holds_a_change_before_saying_it():
    r = Reporter(hold_ns=1000)
    assert r.update(["peer never heard: x"], 0) and r.protected is False
    assert not r.update([], 10) and r.protected is False      # not yet
    assert not r.update([], 900)
    assert r.update([], 1010) and r.protected is True
    assert not r.update(["follower not locked: y"], 1100)    # a blip shorter than the hold
    assert not r.update([], 1200) and r.protected is True
    assert not r.update(["key mismatch: 3 messages"], 2000)
    assert r.update(["key mismatch: 5 messages"], 3001)       # same cause, counts moved on
    assert r.protected is False and r.why_not == ["key mismatch: 5 messages"]
    assert [p for _t, p in r.changes] == [False, True, False]


def test_a_stall_is_remembered_for_five_minutes():
    """One 30 ms silence of a live leader (a stalled host or switch) keeps the timeout at
    twice that for five minutes of a quiet link, then the floor comes back."""
    d = detector()
    t = 0.0
    for _ in range(5000):                      # 10 s quiet
        t += 2 * MS
        d.heard(int(t))
    assert d.timeout_ns == 10 * MS
    t += 30 * MS                               # the stall
    d.heard(int(t))
    for _ in range(int(290_000 / 2)):          # 4 min 50 s quiet
        t += 2 * MS
        d.heard(int(t))
    assert d.timeout_ns >= 60 * MS
    for _ in range(int(20_000 / 2)):           # past five minutes
        t += 2 * MS
        d.heard(int(t))
    assert d.timeout_ns == 10 * MS

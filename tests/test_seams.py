"""The seams between the parts (issue 17), each tested on its own: the follower's lock
decision (peer.lock) on a stand-in for the engine's PlayHead, and the daemon threads'
base (threads.Worker). The real engine and peers are judged by the JACK tests."""

from __future__ import annotations

import threading
import time

from appliance.audio.playhead import Segment
from appliance.peer import wire
from appliance.peer.clock import OffsetEstimator
from appliance.peer.lock import HOLD, SEEK, WAIT, FollowerLock, leader_frame_at
from appliance.threads import Worker

RATE = 48000
MS = 1_000_000


class Head:
    """What FollowerLock reads of a PlayHead, set by hand: this unit plays song 0, its DAC
    line maps device frame d to time d * 1e9 / RATE (+ `late_ns`)."""

    def __init__(self, song=0, frame=0, dev_frame=0, playing=True):
        self.seg = Segment(dev_frame, song, frame, playing)
        self.dac_ready = True
        self.correction_pending = False
        self.late_ns = 0

    def segment(self):
        return self.seg

    def plays(self, song, seg=None):
        seg = seg or self.seg
        return seg.song == song and seg.playing

    def dac_time_of(self, d):
        return int(d * 1e9 / RATE) + self.late_ns


def offset(zero_at: int = 0) -> OffsetEstimator:
    """A ready estimator for two units whose clocks agree (offset 0, 100 us each way)."""
    est = OffsetEstimator()
    for k in range(16):
        t1 = zero_at + k * 50 * MS
        est.add(t1, t1 + 100_000, t1 + 110_000, t1 + 210_000)
    assert est.ready
    return est


def state(frame: int, t_ns: int) -> wire.LeaderState:
    return wire.LeaderState(term=1, leader=1, song=0, state=2, frame=frame, t_ns=t_ns, rate=RATE,
                      setlist=0, flags=0)


def test_lock_waits_seeks_holds_and_measures_at_the_write_head():
    lock = FollowerLock()
    head = Head(frame=48_000, dev_frame=96_000)      # device frame 96000 is at t = 2 s
    st = state(48_000, 2_000_000_000)                # the leader: same frame at the same time
    assert lock.decide(st, None, head, audible=False, now_ns=0) is WAIT
    est = offset()
    assert abs(leader_frame_at(st, est, 2_000_000_000) - 48_000) < 1
    d = lock.decide(st, est, head, audible=False, now_ns=3 * 10**9)
    assert d.kind in ("hold", "correct") and abs(lock.error_frames) < 1
    head.late_ns = 10 * MS                           # our DAC is 10 ms later: 480 frames behind
    lock.decide(st, est, head, audible=False, now_ns=3 * 10**9 + 5 * MS)
    assert abs(lock.error_frames + 480) < 1, lock.error_frames
    head.correction_pending = True
    assert lock.decide(st, est, head, audible=False, now_ns=3 * 10**9 + 10 * MS) is HOLD
    head.seg = Segment(0, 1, 0, True)                # playing another song: join the leader's
    assert lock.decide(st, est, head, audible=False, now_ns=0) is SEEK


def test_far_off_follower_seeks_unless_heard():
    est = offset()
    st = state(48_000, 2_000_000_000)
    far = Head(frame=48_000 + 2 * RATE, dev_frame=96_000)   # two seconds ahead
    quiet = FollowerLock()
    decisions = {quiet.decide(st, est, far, audible=False, now_ns=3 * 10**9 + k * 5 * MS).kind
                 for k in range(20)}
    assert "seek" in decisions
    heard = FollowerLock()
    decisions = {heard.decide(st, est, far, audible=True, now_ns=3 * 10**9 + k * 5 * MS).kind
                 for k in range(20)}
    assert "seek" not in decisions       # a unit that is heard never jumps


def test_seek_target_leads_the_leader():
    st = state(48_000, 2_000_000_000)
    t = FollowerLock.seek_target(st, offset(), 2_000_000_000, 0)
    assert t == 48_000 + int(0.02 * RATE)
    # no offset yet: from when the STATE arrived
    assert FollowerLock.seek_target(st, None, 2_500_000_000, 2_000_000_000) == \
        48_000 + int(0.52 * RATE)


class Counter(Worker):
    def __init__(self):
        super().__init__("test-worker", 0)
        self.steps = 0
        self.finished = False
        self.wake = threading.Event()

    def step(self):
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("one bad step")
        self.wake.wait(1.0)
        self.wake.clear()

    def wakeup(self):
        self.wake.set()

    def finish(self):
        self.finished = True


def test_worker_survives_an_error_and_halts_at_once():
    w = Counter()
    w.start()
    deadline = time.monotonic() + 5
    while w.steps < 5 and time.monotonic() < deadline:
        w.wake.set()
        time.sleep(0.01)
    assert w.steps >= 5 and w.is_alive()          # the error in step 3 did not end it
    t0 = time.monotonic()
    w.halt(timeout=5)
    assert not w.is_alive() and w.finished
    assert time.monotonic() - t0 < 1.0            # woken, not left to its 1 s wait
    assert w.name == "test-worker" and w.daemon
    Counter().halt()                              # never started: nothing to join

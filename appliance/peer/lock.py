"""The follower's lock, decided in one place: where the leader is, how far off this unit
is, and what to do about it (wait, seek, drop or insert a frame).

The facts come from three sources and meet only here: the leader's STATE (its song frame
and the monotonic time that frame reaches its DAC), the clock offset to the leader
(clock.OffsetEstimator) and this unit's own DAC line and writer segment
(appliance.audio.playhead). The error is measured at the write head, for the period the
writer is about to write, so a correction shows in the very next measurement;
clock.LockController turns the noisy error into rare single-frame moves or a re-seek.
The node only carries out what `decide` returns.
"""

from __future__ import annotations

from typing import NamedTuple

from ..audio.playhead import PlayHead
from .clock import LockController, OffsetEstimator
from .wire import PLAN_JUMP, PLAN_VAMP, LeaderState

SEEK_LEAD_S = 0.02      # seek this far ahead: the start lands a little behind, and a jump
                        # forward (skipping decoded frames) is instant


class Decision(NamedTuple):
    kind: str           # "wait" (nothing to measure yet), "seek", "correct", "hold"
    frames: int = 0     # for "correct": drop (>0) or insert (<0)


WAIT, SEEK, HOLD = Decision("wait"), Decision("seek"), Decision("hold")


def leader_frame_at(st: LeaderState, est: OffsetEstimator, t_local_ns: int) -> float:
    """The leader's song frame at this unit's monotonic time `t_local_ns`."""
    return frame_after(st, st.frame + (est.to_remote(t_local_ns) - st.t_ns) * st.rate / 1e9)


def frame_after(st: LeaderState, frame: float) -> float:
    """`frame`, reached by playing on from `st.frame`, through the switch the leader holds:
    past a jump's or a vamp's frame the leader plays on from its target (extrapolated
    straight on, a follower measuring a moment after the leader's turn would see an error
    of a whole section and re-seek)."""
    if st.plan in (PLAN_JUMP, PLAN_VAMP) and st.frame < st.plan_at <= frame:
        return st.plan_to + (frame - st.plan_at)
    return frame


class FollowerLock:
    def __init__(self, controller: LockController | None = None):
        self.controller = controller or LockController()
        self.error_frames: float | None = None

    @property
    def locked(self) -> bool:
        return self.controller.locked

    def reset(self) -> None:
        """Nothing to lock to (the leader does not play), or a seek just happened."""
        self.controller.reset()

    def stop(self) -> None:
        self.reset()
        self.error_frames = None

    def decide(self, st: LeaderState, est: OffsetEstimator | None, head: PlayHead, *,
               audible: bool, now_ns: int) -> Decision:
        """One step while the leader plays song `st.song`."""
        if est is None or not est.ready or not head.dac_ready:
            return WAIT   # not yet able to say where the leader is
        seg = head.segment()
        if not head.plays(st.song, seg):
            return SEEK
        if head.correction_pending:
            return HOLD   # the last correction has not shown yet
        err = seg.frame - leader_frame_at(st, est, head.dac_time_of(seg.dev_frame))
        self.error_frames = err
        k = self.controller.update(err, now_ns, audible=audible)
        if self.controller.needs_seek and not audible:
            return SEEK   # a heard unit never jumps: it slews
        return Decision("correct", k) if k else HOLD

    @staticmethod
    def seek_target(st: LeaderState, est: OffsetEstimator | None, now_ns: int,
                    heard_ns: int) -> int:
        """The song frame to seek to: where the leader will be SEEK_LEAD_S from now.
        Without a clock offset yet, from the time its STATE arrived here (`heard_ns`; off
        by the network's one-way delay and the leader's output latency: milliseconds)."""
        t = now_ns + int(SEEK_LEAD_S * 1e9)
        if est is not None and est.ready:
            return int(leader_frame_at(st, est, t))
        return int(frame_after(st, st.frame + (t - heard_ns) * st.rate / 1e9))

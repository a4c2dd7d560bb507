"""The engine as a hot-standby peer sees it: where this unit's DAC is, what it plays, and
the few things a peer may do to it.

The peer (appliance.peer.node) needs to know exactly when a device frame reaches this
unit's DAC, which song frame the writer put there, and to nudge the writer by a frame or
seek it; it must not reach into the writer's internals to get them (it once did, in nine
places). This is the whole surface it uses, typed, in one place, next to the audio code
that produces the facts. The DAC line (appliance.audio.dacclock) is owned and fed here.

Threads: `refresh` and the DAC line are used by one thread (the peer's); the rest reads
values the writer publishes as whole tuples, or goes through the engine's own locking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ..livemix import LiveMix
from ..transport import PLAYING, State
from .dacclock import DacClock

if TYPE_CHECKING:
    from ..config import Config
    from .engine import Engine


class Segment(NamedTuple):
    """The writer's newest segment row: from device frame `dev_frame` on, the device
    carries `song` from `frame` (playing, or held while paused / idle). An exact pair,
    unlike anything read from a ring while the writer runs."""

    dev_frame: int
    song: int
    frame: int
    playing: bool


class PlayHead:
    def __init__(self, engine: Engine):
        self._engine = engine
        self._writer = engine.writer
        self.rate = engine.cfg.device.rate
        self.dac = DacClock(nominal_hz=self.rate)
        self._clk_seen = 0
        self._clk_epoch = -1

    # ---- where the DAC is ------------------------------------------------------------------
    def refresh(self) -> bool:
        """Feed the DAC line with the writer's newest clock samples; True when there were
        any. An underrun or a reopen moves the line, not the card's rate: rebase. A step
        nobody announced is found by DacClock itself."""
        w = self._writer
        if w.clock_epoch != self._clk_epoch:
            self._clk_epoch = w.clock_epoch
            self.dac.rebase()
        rows, self._clk_seen = w.clock_samples(self._clk_seen)
        for frame, t in rows:
            self.dac.add(int(frame), int(t))
        if rows and self.dac.ready:
            # published whole for Engine.position (other threads): a tuple, one store
            self._engine.dac_line = (*self.dac.line(), self._clk_epoch)
        return bool(rows)

    @property
    def dac_ready(self) -> bool:
        return self.dac.ready

    def dac_time_of(self, dev_frame: int) -> int:
        """Monotonic ns at which device frame `dev_frame` reaches this unit's DAC."""
        return self.dac.time_of(dev_frame)

    @property
    def dac_ppm(self) -> float:
        """This unit's card against its nominal rate (needs `dac_ready`)."""
        return (self.dac.rate_hz / self.rate - 1) * 1e6

    def segment(self) -> Segment:
        return Segment(*self._writer.last_segment())

    def dac_point(self) -> tuple[int, int, int] | None:
        """(song, song frame, monotonic ns it reaches the DAC) of the newest segment while
        playing: the pair a leader sends its followers."""
        seg = self.segment()
        if not seg.playing or not self.dac.ready:
            return None
        return seg.song, seg.frame, self.dac_time_of(seg.dev_frame)

    # ---- what plays ------------------------------------------------------------------------
    @property
    def cfg(self) -> Config:
        """The config the engine plays now (a reload swaps it between songs)."""
        return self._engine.cfg

    @property
    def songs(self) -> int:
        return len(self._engine.cfg.songs)

    @property
    def transport(self) -> State:
        return self._engine.transport.current

    def plays(self, song: int, seg: Segment | None = None) -> bool:
        """Whether this unit plays `song` now, by the writer's newest segment, not only by
        the transport (which learns of a gapless song change a moment later)."""
        seg = seg or self.segment()
        return self.transport.state == PLAYING and seg.song == song and seg.playing

    @property
    def device_ok(self) -> bool:
        return self._writer.device_ok

    @property
    def underruns(self) -> int:
        return self._writer.sink.underruns

    def healthy(self, max_stall_s: float) -> bool:
        return self._engine.healthy(max_stall_s)

    def on_change(self, fn: Callable[[str, object], None]) -> None:
        """`fn(event, engine)` on every engine event (called under the engine lock: only
        wake a thread there)."""
        self._engine.listeners.append(fn)

    # ---- what a peer may do ----------------------------------------------------------------
    def mirror(self, state: str, song: int) -> None:
        self._engine.mirror(state, song)

    def seek(self, song: int, frame: int) -> bool:
        return self._engine.seek(song, frame)

    def switch_plan(self) -> tuple[str, int, int, int]:
        """(kind, plan id, at, to) of the jump or vamp the writer holds (Engine.plan)."""
        return self._engine.plan

    def mirror_plan(self, song: int, kind: str, plan_id: int, at: int, to: int) -> None:
        self._engine.mirror_plan(song, kind, plan_id, at, to)

    @property
    def correction_pending(self) -> bool:
        """The last drop/insert has not shown in the segment history yet: measuring now
        would count it twice."""
        return self._writer.correction_pending

    def correct(self, frames: int) -> bool:
        """Drop (>0) or insert (<0) frames in the coming periods."""
        return self._engine.request_adjust(frames)

    def set_audible(self, audible: bool, fade: bool) -> None:
        self._engine.set_audible(audible, fade=fade)

    def set_pilot(self, on: bool) -> None:
        self._engine.set_pilot(on)

    @property
    def mix(self) -> LiveMix:
        """The live mix in use (an immutable value: a new object at every change)."""
        return self._engine.mix

    def mirror_mix(self, mix: LiveMix) -> None:
        self._engine.mirror_mix(mix)

    def set_beacon(self, fn: Callable[[], None] | None) -> None:
        """`fn()` in the writer thread after every period that reached the device (see
        AudioWriter.beacon): a leader's heartbeat that lives and dies with its audio."""
        self._writer.beacon = fn

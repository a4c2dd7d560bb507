"""The real-time writer thread: ring (device bytes) -> ALSA, one period at a time.

Rules for this file (the underrun benchmark checks them): no logging, no disk, no locks, no
per-period buffer allocation. Commands arrive in a deque (append/popleft are atomic), and
everything the writer tells the rest of the program goes out through a deque of events,
tuples replaced whole (position, segments, clock samples) and a byte on a non-blocking pipe
that wakes the monitor. Commands take effect at the next period edge: the writer switches
between rings the decode thread has already filled, so the seconds of read-ahead never add
latency. A plain period is written straight from the ring; only periods the writer changes
(fades, mute ramps, frame corrections, the pilot tone) are worked on in float.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from ..config import Device
from ..realtime import pin_thread, set_thread_fifo
from ..threads import Worker
from .formats import Converter
from .ringbuffer import Ring
from .sink import AlsaSink, DeviceError, DeviceLost

REOPEN_EVERY_S = 0.5
HISTORY = 512
WORK_HISTORY = 8192  # periods of per-period cost kept (about 22 s at 128 frames, 48 kHz)


class Slot:
    """A ring holding one song from one frame on. The control side decides what a slot
    should hold (`want`); the decode thread fills it and publishes `have` last; the writer
    only plays a slot a command names, and the control side never retargets a slot the
    writer may still be reading (see Engine._busy)."""

    def __init__(self, index: int, frames: int, frame_bytes: int):
        self.index = index
        self.ring = Ring(frames, frame_bytes)
        self.want: tuple[int, int, int] | None = None  # (song, frame, generation)
        self.have: tuple[int, int, int] | None = None
        self.song = -1
        self.start = 0        # song frame at ring frame 0
        self.frames = 0       # song length
        self.eof = False      # every frame up to the song's end is in the ring
        self.follow = -1      # slot to continue into gaplessly at the end (after: next)
        self.after = "stop"
        self.problems: list[str] = []
        self.mix_from = 0     # the live mix version its ring was first decoded with

    def ready(self, min_frames: int) -> bool:
        return (self.want is not None and self.have == self.want
                and (self.eof or self.ring.readable() >= min_frames))

    @property
    def position(self) -> int:
        return self.start + self.ring.read


class Writer(Worker):
    def __init__(self, device: Device, slots: list[Slot], fade_frames: int,
                 rt_priority: int = 0, sink: AlsaSink | None = None,
                 cpu: str | int = "none"):
        super().__init__("backtrack-writer", rt_priority)
        self.device = device
        self.slots = slots
        self.period = device.period
        self.sink = sink or AlsaSink(device)
        self.cpu = cpu
        self.commands: deque = deque()
        self._post_lock = threading.Lock()
        self._cmdseq = 0
        self.events: deque = deque()
        # Wakes the monitor when there is news (an event, an underrun), so it can sleep
        # instead of polling: a non-blocking pipe write never waits, and if the pipe were
        # ever full the monitor has news to read anyway.
        self._news_r, self._news_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._news_poll = select.poll()
        self._news_poll.register(self._news_r, select.POLLIN)
        self.acked = 0
        self.active: Slot | None = None
        self.active_index = -1
        self.paused = False
        self.muted = False          # hot standby: follower plays silently (see _apply_mute)
        self.device_ok = False
        self.device_error = ""
        self.stall_s = 0.0          # tests/benchmarks: hold the writer to force an underrun
        self.freeze = False         # tests: a hung writer (stops advancing)
        self.starved = 0
        self.periods_done = 0
        self.written = 0            # device frames handed to ALSA (or paced while lost)
        self.last_progress_ns = time.monotonic_ns()
        # What one period costs the writer (from the device having room to the write
        # returning): the figure the wave-2 pipeline (jumps, loops, click, live mix) must
        # keep small. A preallocated ring, written once per period; read by `work_stats`.
        self.work_ns = np.zeros(WORK_HISTORY, np.int64)
        self.works = 0
        # fades
        self.fade_frames = max(1, fade_frames)
        ramp = np.linspace(0.0, 1.0, self.fade_frames + 1, dtype=np.float32)[1:]
        self._ramp_up = ramp.reshape(-1, 1)
        self._ramp_down = ramp[::-1].copy().reshape(-1, 1)
        self._fade = 0          # +1 fading in, -1 fading out, 0 none
        self._mute_pos = self.fade_frames  # 0 = silent .. fade_frames = fully audible
        # hot standby: frames to drop (>0) or insert (<0) in the coming periods, asked by
        # the peer lock; `adjust_row` is the segment row after which the effect shows.
        self.adjust_request = 0
        self.adjust_row = -1
        self.adjusted = 0       # frames dropped minus inserted, for status
        # switcher mode: a steady tone on one output while this unit is the leader
        self.pilot_channel = -1
        self.pilot_on = False
        self._pilot_w = 0.0
        self._pilot_phase = 0.0
        self._fade_pos = 0
        self._after_fade: tuple | None = None
        # A switch to another slot at an exact song frame of the playing one, with a
        # crossfade (a quantized jump, each turn of a vamp): (from slot, song frame, to slot,
        # gains out, gains in, tag), the gains computed by the poster, not here. While the
        # crossfade runs the old slot keeps being read (`xfade_index`, which the engine
        # treats as busy).
        self._sw: tuple | None = None
        self._xf_old: Slot | None = None
        self._xf_same = False
        self._xf_pos = 0
        self._xf_out: np.ndarray | None = None
        self._xf_in: np.ndarray | None = None
        self.switches = 0
        # A spoken cue decided live (the name of a jump's target a bar before it lands):
        # (samples float32 mono, columns, starts when the playing slot reaches this song
        # frame); `_cue_pos` frames of it played so far (-1: not started yet).
        self._cue: tuple | None = None
        self._cue_pos = -1
        # buffers, allocated once
        ch = device.channels
        self._block = np.zeros((self.period, ch), np.float32)
        self._wide = np.zeros((2 * self.period, ch), np.float32)
        self._wide_abs = np.zeros((2 * self.period, ch), np.float32)
        self._wide_sum = np.zeros(2 * self.period, np.float32)
        self._xtmp = np.zeros((self.period, ch), np.float32)
        self._pilot = np.zeros(self.period, np.float64)
        self._pilot_idx = np.arange(self.period, dtype=np.float64)
        self._conv = Converter(device.format, ch, 2 * self.period, count_clips=False)
        # Rings hold device bytes: a plain period goes to ALSA straight from the ring; only
        # a period the writer changes (fade, mute ramp, frame correction, pilot tone) is
        # brought back to float, worked on and converted again (see _render_period).
        fb = self._conv.frame_bytes
        self._raw = np.zeros((2 * self.period, fb), np.uint8)
        self._silence = np.zeros((self.period, fb), np.uint8)  # zero is silence in every format
        self._held: Ring | None = None  # ring whose next period is being written from
        # What the writer publishes is kept in tuples: replacing one is a single atomic store
        # under the GIL, so readers need no lock and no seqlock, and it is cheaper per
        # period than item stores into NumPy arrays.
        # position record: (written, queued, t_ns)
        self._pos = (0, 0, 0)
        # segments: (dev frame, song, song frame, playing 1/0), one per period at least
        self._hist: list[tuple[int, int, int, int]] = [(0, -1, 0, 0)] * HISTORY
        self._nhist = 0
        # DAC clock samples: (device frame at the DAC, monotonic ns) once per period, taken
        # when the device frees a period; a DacClock fits a line through their lower envelope.
        self._clk: list[tuple[int, int]] = [(0, 0)] * HISTORY
        self._nclk = 0
        self.clock_epoch = 0  # bumped when the line jumps (underrun, device reopened)
        # Called in this thread after each period reaches the device (never while it is
        # lost): a pair's leader sends its "alive" heartbeat from here, so the heartbeat
        # stops when the audio stops, and not when a busy host holds the peer thread back
        # while the audio plays on. Must not block (a non-blocking sendto).
        self.beacon: Callable[[], None] | None = None

    # ---- called from other threads ---------------------------------------------------------
    def post(self, *cmd) -> int:
        """Queue a command; returns its sequence number (acked once applied). Posted from
        several threads (controls under the engine lock, the peer thread without it): the
        number and the queue position are taken together under a lock only posters take,
        never the writer, because the writer acknowledges "everything up to N"."""
        with self._post_lock:
            self._cmdseq += 1
            self.commands.append((self._cmdseq, *cmd))
            return self._cmdseq

    @property
    def switch_to_index(self) -> int:
        """The slot a pending switch will play (-1: none): busy for the engine. Read from the
        one tuple the writer replaces whole, so it is never half-updated."""
        sw = self._sw
        return sw[2].index if sw is not None else -1

    @property
    def xfade_index(self) -> int:
        """The slot a running crossfade still reads (-1: none): busy for the engine."""
        old = self._xf_old
        return old.index if old is not None else -1

    @property
    def correction_pending(self) -> bool:
        """A drop/insert asked for (`adjust_request`) has not shown in the segment history
        yet (the row after `adjust_row`)."""
        return bool(self.adjust_request) or self._nhist <= self.adjust_row + 1

    def dac_position(self) -> tuple[int, int, int]:
        """(device frame reaching the DAC at t_ns, t_ns, frames queued), consistent."""
        written, queued, t_ns = self._pos
        return written - queued, t_ns, queued

    def last_segment(self) -> tuple[int, int, int, bool]:
        """(device frame, song, song frame, playing) of the newest segment row: a pair that
        is exact, unlike anything read from the slot while the writer runs."""
        n = self._nhist
        if n == 0:
            return 0, -1, 0, False
        d, song, frame, playing = self._hist[(n - 1) % HISTORY]
        return d, song, frame, bool(playing)

    def song_at(self, dev_frame: int) -> tuple[int, int, bool]:
        """(song, song frame, playing) of the given device frame, from the segment history."""
        n = self._nhist
        hist = self._hist
        for k in range(n - 1, max(-1, n - HISTORY + 1), -1):
            d, song, frame, playing = hist[k % HISTORY]
            if d <= dev_frame:
                if playing:
                    frame += dev_frame - d
                return song, frame, bool(playing)
        return -1, 0, False

    def wait_news(self, timeout_s: float) -> None:
        """Block until the writer has news (events, an underrun) or the timeout passes."""
        if self._news_poll.poll(int(timeout_s * 1000)):
            try:
                os.read(self._news_r, 4096)
            except BlockingIOError:
                pass

    # ---- news for the monitor (from the writer thread) -------------------------------------
    def _emit(self, event: tuple) -> None:
        self.events.append(event)
        self._news()

    def _news(self) -> None:
        try:
            os.write(self._news_w, b"!")
        except BlockingIOError:
            pass  # full: the monitor has a backlog of news to read already

    # ---- the thread -----------------------------------------------------------------------
    def loop(self) -> None:
        self._open_device()
        next_reopen = time.monotonic() + REOPEN_EVERY_S
        period_s = self.period / self.device.rate
        due = time.monotonic()
        while self.running:
            if self.freeze:
                time.sleep(0.01)
                continue
            if self.sink.is_open:
                try:
                    avail = self.sink.wait_space(self._space_wanted())
                    t_space = time.monotonic_ns()
                    queued = self.sink.buffer_frames - avail if avail >= 0 else 0
                    self._clk[self._nclk % HISTORY] = (self.written - queued, t_space)
                    self._nclk += 1
                    data = self._render_period()
                    under = self.sink.underruns
                    self.sink.write(data, self.period)
                    beacon = self.beacon
                    if beacon is not None:
                        beacon()
                    self.work_ns[self.works % WORK_HISTORY] = time.monotonic_ns() - t_space
                    self.works += 1
                    if self.sink.underruns != under:
                        self.clock_epoch += 1
                        self._news()
                except DeviceLost as exc:
                    self.sink.close()
                    self.device_ok = False
                    self.device_error = f"device lost: {exc}"
                    self._emit(("device_lost", self.device_error))
                    queued = 0
                    due = time.monotonic()
                    next_reopen = due + REOPEN_EVERY_S
            else:
                # No device: keep the song clock running in real time so the show is still
                # in step with the band when the interface comes back.
                self._render_period()
                due += period_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    due = time.monotonic()
                queued = 0
                if time.monotonic() >= next_reopen:
                    next_reopen = time.monotonic() + REOPEN_EVERY_S
                    if self._open_device():
                        self._emit(("device_back", ""))
            self._release_held()
            self.written += self.period
            self.periods_done += 1
            self._publish(queued + self.period)
            if self.stall_s:
                time.sleep(self.stall_s)
                self.stall_s = 0.0

    def finish(self) -> None:
        self._fade_out_and_close()

    def take_priority(self) -> str:
        # Before the device is opened (`loop`): threads the ALSA plugin starts inherit both.
        status = set_thread_fifo(self.priority)
        pinned = pin_thread(self.cpu)
        return f"{status}, {pinned}" if pinned else status

    def _open_device(self) -> bool:
        try:
            self.sink.open()
        except DeviceError as exc:
            self.device_ok = False
            self.device_error = str(exc)
            return False
        self.device_ok = True
        self.device_error = ""
        self.clock_epoch += 1
        return True

    def _publish(self, queued: int) -> None:
        t_ns = time.monotonic_ns()
        self._pos = (self.written, queued, t_ns)
        self.last_progress_ns = t_ns

    def _space_wanted(self) -> int:
        """While idle (nothing playing, no command waiting) keep one period less queued:
        what sits in the buffer is silence, and a `play` then reaches the DAC a period
        sooner. While playing, keep the buffer full for the most underrun margin."""
        if (self.active is None or self.paused) and not self.commands \
                and self.sink.buffer_frames >= 3 * self.period:
            return 2 * self.period
        return self.period

    def work_stats(self) -> dict[str, float]:
        """The writer's per-period cost over its last WORK_HISTORY periods, in microseconds
        (for status and bench/playback.py; computed here, off the real-time thread)."""
        n = min(self.works, WORK_HISTORY)
        if n == 0:
            return {"periods": 0}
        w = np.sort(self.work_ns[:n]) / 1000.0
        return {"periods": int(n), "p50_us": round(float(w[n // 2]), 1),
                "p99_us": round(float(w[min(n - 1, (99 * n) // 100)]), 1),
                "max_us": round(float(w[-1]), 1)}

    def clock_samples(self, since: int) -> tuple[list[tuple[int, int]], int]:
        """Samples recorded after counter `since` (at most HISTORY - 8: the writer may be
        replacing the oldest meanwhile), and the new counter."""
        n = self._nclk
        clk = self._clk
        return [clk[k % HISTORY] for k in range(max(since, n - HISTORY + 8), n)], n

    def _segment(self, offset: int) -> None:
        """Note which song frame the device frame `written + offset` carries from now on."""
        a = self.active
        self._hist[self._nhist % HISTORY] = (
            (self.written + offset, -1, 0, 0) if a is None
            else (self.written + offset, a.song, a.position, 0 if self.paused else 1))
        self._nhist += 1

    # ---- one period ------------------------------------------------------------------------
    def _apply_commands(self) -> None:
        cmds = self.commands
        while cmds:
            cmd = cmds.popleft()
            seq, kind = cmd[0], cmd[1]
            if kind == "start":
                slot = self.slots[cmd[2]]
                fade_in = cmd[3]
                if self.active is not None and not self.paused and self._fade != -1:
                    self._begin_fade_out(("start", slot, fade_in))
                elif self._fade == -1:
                    self._after_fade = ("start", slot, fade_in)
                else:
                    self._switch(slot, fade_in, 0)
            elif kind == "pause":
                if self.active is not None and not self.paused:
                    self._begin_fade_out(("pause",))
            elif kind == "resume":
                if self.active is not None and self.paused:
                    self.paused = False
                    self._fade, self._fade_pos = 1, 0
                    self._segment(0)
            elif kind == "halt":
                if self.active is not None and not self.paused:
                    self._begin_fade_out(("halt",))
                else:
                    self._release(0)
            elif kind == "mute":
                self.muted = bool(cmd[2])
                if not cmd[3]:  # no ramp: jump straight to the new level
                    self._mute_pos = 0 if self.muted else self.fade_frames
            elif kind == "switch":
                # (from slot, at song frame, to slot, gains out, gains in, tag)
                self._drop_switch("switch_replaced")
                if cmd[2] == self.active_index:
                    self._sw = (self.slots[cmd[2]], cmd[3], self.slots[cmd[4]], cmd[5],
                                cmd[6], cmd[7])
                else:
                    self._emit(("switch_missed", cmd[7], "the song under it changed"))
            elif kind == "cue":
                self._cue, self._cue_pos = (cmd[2], cmd[3], cmd[4]), -1
            elif kind == "cancel_switch":
                if self._sw is not None and cmd[2] in (None, self._sw[5]):
                    self._drop_switch("switch_cancelled")
            self.acked = seq

    def _begin_fade_out(self, then: tuple) -> None:
        if self._fade == 1:
            # fading in: fade out from the level reached, not from full scale
            self._fade_pos = self.fade_frames - self._fade_pos
        else:
            self._fade_pos = 0
        self._fade = -1
        self._after_fade = then

    def _switch(self, slot: Slot | None, fade_in: bool, offset: int) -> None:
        if self._sw is not None and self._sw[0] is not slot:
            # the song under a pending jump or vamp changed (next, stop, the song ended)
            self._drop_switch("switch_missed", "the song under it changed")
        self._end_crossfade()
        self.active = slot
        self.active_index = slot.index if slot is not None else -1
        self.paused = False
        self._fade, self._fade_pos = (1, 0) if fade_in else (0, 0)
        self._segment(offset)

    def _release(self, offset: int) -> None:
        self._fade = 0
        self._switch(None, False, offset)

    def _finish_fade_out(self, offset: int) -> None:
        then = self._after_fade
        self._after_fade = None
        self._fade = 0
        if then is None:
            return
        if then[0] == "start":
            self._switch(then[1], then[2], offset)
        elif then[0] == "pause":
            self.paused = True
            self._segment(offset)
        else:
            self._release(offset)

    def _render_period(self) -> np.ndarray | memoryview:
        """The device bytes of the next period. The common case (playing or silent, nothing
        changing) is a view of the ring or of silence, with no mixing or conversion here: the
        ring's frames are consumed by `_release_held` once ALSA has taken them."""
        if self.commands:
            self._apply_commands()
        self._segment(0)
        if not self._fade and not self.adjust_request and self._xf_old is None \
                and self._cue is None and not (self.pilot_on and self.pilot_channel >= 0) \
                and self._mute_pos == (0 if self.muted else self.fade_frames):
            slot = self.active
            if slot is None or self.paused:
                return self._silence
            ring = slot.ring
            sw = self._sw
            if ring.readable() >= self.period and (
                    sw is None or sw[0] is not slot
                    or slot.start + ring.read + self.period <= sw[1]):
                self._held = ring
                return self._silence if self.muted else ring.peek(self.period, self._raw)
        self._render_block()
        return self._conv.convert(self._block)

    def _release_held(self) -> None:
        ring = self._held
        if ring is not None:
            self._held = None
            ring.skip(self.period)

    def _read_float(self, ring: Ring, out: np.ndarray, n: int) -> None:
        """Consume n frames of the ring into out[:n] as float."""
        raw = self._raw[:n]
        ring.read_into(raw, n)
        self._conv.dequantize(raw, out[:n])

    def _render_block(self) -> None:
        """A period the writer changes, in float in `_block`: commands already applied."""
        block = self._block
        block.fill(0.0)
        period = self.period
        start = self.active.position if self.active is not None else 0
        done = 0
        guard = 0
        while done < period and guard < 8:
            guard += 1
            slot = self.active
            if slot is None or self.paused:
                break
            want = period - done
            if self._fade == -1:
                want = min(want, self.fade_frames - self._fade_pos)
            elif self._fade == 1:
                want = min(want, self.fade_frames - self._fade_pos)
            sw = self._sw
            if sw is not None and sw[0] is slot and not self._fade:
                left = sw[1] - slot.position
                if left <= 0:
                    if left < 0 and sw[5][0] == "mix":
                        # a live mix switch is only right at its own frame: later, the
                        # new slot would replay what was already heard (the engine retries)
                        self._drop_switch("switch_missed", "too late")
                        continue
                    self._begin_crossfade(done)
                    continue
                want = min(want, left)
            if self._xf_old is not None:
                want = min(want, len(self._xf_in) - self._xf_pos)
            avail = slot.ring.readable()
            if avail <= 0:
                if slot.eof:
                    self._song_end(slot, done)
                    continue
                self.starved += 1
                break
            n = min(want, avail)
            if self.adjust_request and not self._fade and done == 0 and n == period \
                    and avail >= 2 * period and self._xf_old is None \
                    and (sw is None or sw[1] - slot.position > period + abs(self.adjust_request)):
                self._read_adjusted(slot, block)
                done = period
                continue
            self._read_float(slot.ring, block[done:], n)
            if self._xf_old is not None:
                self._crossfade(block[done:done + n])
            if self._fade:
                ramp = self._ramp_down if self._fade == -1 else self._ramp_up
                seg = block[done:done + n]
                np.multiply(seg, ramp[self._fade_pos:self._fade_pos + n], out=seg)
                self._fade_pos += n
                if self._fade_pos >= self.fade_frames:
                    if self._fade == -1:
                        done += n
                        self._finish_fade_out(done)
                        continue
                    self._fade = 0
            done += n
        if self._cue is not None:
            self._add_cue(start)
        self._apply_mute(block)
        if self.pilot_on and self.pilot_channel >= 0:
            self._add_pilot(block)

    def _add_cue(self, start: int) -> None:
        """Mix the live cue into this period: from where the playing slot was at `start`
        (its song frame at the period's first frame) reaching the cue's frame, then on
        through whatever plays (a jump's switch does not cut it)."""
        samples, cols, at = self._cue
        period = self.period
        if self._cue_pos < 0:
            if self.active is None or self.paused or start + period <= at:
                return
            off, self._cue_pos = max(0, at - start), 0
        else:
            off = 0
        n = min(period - off, len(samples) - self._cue_pos)
        if n > 0:
            seg = samples[self._cue_pos:self._cue_pos + n]
            for c in cols:
                col = self._block[off:off + n, c]
                np.add(col, seg, out=col)
            self._cue_pos += n
        if self._cue_pos >= len(samples):
            self._cue, self._cue_pos = None, -1

    def _drop_switch(self, event: str, *why: str) -> None:
        """Forget the pending switch (if any) and say so: replaced, cancelled or missed."""
        sw = self._sw
        if sw is not None:
            self._sw = None
            self._emit((event, sw[5], *why))

    def _begin_crossfade(self, offset: int) -> None:
        """The pending switch is due: play its slot from here, the old one fading out under
        it. A target that is not ready is not played (a gap would be worse than staying)."""
        old, _at, new, g_out, g_in, tag = self._sw
        self._sw = None
        if new.have is None or new.have != new.want or not (
                new.eof or new.ring.readable() >= min(len(g_in), new.ring.capacity // 2)):
            self._emit(("switch_missed", tag, "the target was not ready"))
            return
        self.active = new
        self.active_index = new.index
        self._segment(offset)
        self.switches += 1
        self._emit(("switched", tag, new.index, old.index, self.written + offset))
        if len(g_in) == 0:
            return
        self._xf_out, self._xf_in, self._xf_pos = g_out, g_in, 0
        self._xf_same = tag[0] == "mix"  # both sides the same audio but for the mix change
        self._xf_old = old

    def _crossfade(self, seg: np.ndarray) -> None:
        """seg (the new slot's frames, as float) <- new * gain in + old * gain out, the old
        slot read on from where it was left (silence past its end)."""
        n = len(seg)
        p = self._xf_pos
        old = self._xf_old
        tmp = self._xtmp[:n]
        m = min(n, old.ring.readable())
        if m:
            self._read_float(old.ring, tmp, m)
        tmp[m:] = 0.0
        if self._xf_same:
            # new + (old - new) * gain out: a channel the change did not touch has old ==
            # new, and comes out exact (a linear fade written as new*in + old*out would be
            # off by a rounding step on every channel)
            np.subtract(tmp, seg, out=tmp)
            np.multiply(tmp, self._xf_out[p:p + n], out=tmp)
        else:
            np.multiply(seg, self._xf_in[p:p + n], out=seg)
            np.multiply(tmp, self._xf_out[p:p + n], out=tmp)
        np.add(seg, tmp, out=seg)
        self._xf_pos = p + n
        if self._xf_pos >= len(self._xf_in):
            self._end_crossfade()

    def _end_crossfade(self) -> None:
        if self._xf_old is not None:
            self._xf_old = None
            self._xf_out = self._xf_in = None

    def _read_adjusted(self, slot: Slot, block: np.ndarray) -> None:
        """One period with frames dropped or inserted. A single frame goes where the period
        is quietest (inaudible in practice: that is how the follower follows a drifting
        crystal); a bigger jump only happens while this unit is not heard."""
        period = self.period
        k = self.adjust_request
        self.adjust_request = 0
        self.adjust_row = self._nhist
        if abs(k) > 1:
            # A jump (the unit is not heard): what does not fit in this period is carried
            # over to the next ones, so the caller sees the whole jump done before it
            # measures again.
            if k > 0:
                n = min(k, slot.ring.readable() - period)
                slot.ring.skip(n)
                self._read_float(slot.ring, block, period)
            else:
                n = max(k, -period)
                block[:-n] = 0.0
                if n > -period:
                    self._read_float(slot.ring, block[-n:], period + n)
            self.adjust_request = k - n
            self.adjusted += n
            return
        wide = self._wide
        m = period + k  # frames to take from the ring
        self._read_float(slot.ring, wide, m)
        w = self._wide_abs[:m]
        np.abs(wide[:m], out=w)
        sums = self._wide_sum[:m]
        np.sum(w, axis=1, out=sums)
        i = int(np.argmin(sums))
        if k > 0:  # drop frame i
            block[:i] = wide[:i]
            block[i:] = wide[i + 1:m]
        else:      # repeat frame i
            block[:i + 1] = wide[:i + 1]
            block[i + 1:] = wide[i:m]
        self.adjusted += k

    def _apply_mute(self, block: np.ndarray) -> None:
        """Mute and unmute with a short ramp (a takeover must not click)."""
        pos, full = self._mute_pos, self.fade_frames
        if self.muted:
            if pos == 0:
                block.fill(0.0)
                return
            n = min(pos, self.period)
            ramp = self._ramp_down[full - pos: full - pos + n]
            np.multiply(block[:n], ramp, out=block[:n])
            block[n:] = 0.0
            self._mute_pos = pos - n
        elif pos < full:
            n = min(full - pos, self.period)
            np.multiply(block[:n], self._ramp_up[pos:pos + n], out=block[:n])
            self._mute_pos = pos + n

    def _add_pilot(self, block: np.ndarray) -> None:
        p = self._pilot
        np.multiply(self._pilot_idx, self._pilot_w, out=p)
        np.add(p, self._pilot_phase, out=p)
        np.sin(p, out=p)
        col = block[:, self.pilot_channel]
        np.multiply(p, 0.25, out=p)
        np.add(col, p, out=col, casting="unsafe")
        self._pilot_phase = (self._pilot_phase + self._pilot_w * self.period) % (2 * np.pi)

    def set_pilot(self, channel: int, hz: float) -> None:
        self.pilot_channel = channel
        self._pilot_w = 2 * np.pi * hz / self.device.rate

    def _song_end(self, slot: Slot, offset: int) -> None:
        nxt = self.slots[slot.follow] if slot.after == "next" and slot.follow >= 0 else None
        if nxt is not None and nxt.have == nxt.want and nxt.have is not None:
            self._fade = 0
            self._switch(nxt, False, offset)
            self._emit(("ended", slot.song, nxt.index))
        else:
            self._release(offset)
            self._emit(("ended", slot.song, -1))

    def _fade_out_and_close(self) -> None:
        """Shutdown: one fade, then a period of silence so the last sample is not a click."""
        if self.sink.is_open:
            try:
                if self.active is not None and not self.paused:
                    self._begin_fade_out(("halt",))
                    for _ in range(self.fade_frames // self.period + 2):
                        self.sink.write(self._render_period(), self.period)
                        self._release_held()
                        self.written += self.period
                self.sink.write(self._silence, self.period)
                self.sink.drain()
            except (DeviceLost, Exception):  # noqa: BLE001 - closing must not raise on exit
                pass
        self.sink.close()

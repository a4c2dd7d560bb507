"""MIDI clock and MIDI Time Code as pure arithmetic on the audio position.

Why this shape: a sender that sleeps 1/48 s between ticks drifts away from the sound card
(every late wake-up is kept forever, and the card's crystal is not the CPU's). Here every
message belongs to a song frame: tick k of a song is where its tempo map puts quarter note
k / 24 after bar 1 beat 1 (so the clock follows tempo changes, meter changes and ramps, and
never accumulates a rounding of its own), quarter frame q of MTC at `fps` is frame
q * rate / (4 * fps). `SyncScheduler.step` is given the engine's position (song, frame at
the DAC now, playing, monotonic ns) and returns the messages whose frame has been reached
plus the monotonic time of the next one, so the sender thread only decides when to wake up:
a late wake-up makes one message late, never the ones after it, and the tick count always
equals the audio position.

No threads, no clocks, no I/O: tests drive it with made-up positions.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from ..tempomap import TempoChange, TempoMap

CLOCK, START, CONTINUE, STOP = 0xF8, 0xFA, 0xFB, 0xFC
SONG_POSITION = 0xF2
QUARTER_FRAME = 0xF1
PPQN = 24                 # MIDI clock ticks per quarter note
TICKS_PER_SPP = 6         # song position pointer counts 16th notes
MTC_RATE_CODE = {24: 0, 25: 1, 30: 3}  # 30 = 30 fps non-drop

# A position that moved this much against the one before (more than the position
# estimate's own jitter, about two ticks at the fastest tempo) is a jump: a jump or a vamp's
# turn, a restart. Receivers are re-located, never fed a burst or left a tick ahead.
JUMP_MIN_S = 0.015
# A position this far behind its prediction (a stall the audio will not make up) is
# re-located too; shorter stalls only hold the ticks back, as the audio itself was held.
JUMP_S = 0.25
# Messages this late are still sent (a receiver counting clocks must not lose one); later
# than this the stream is re-located instead.
MAX_LATE_S = 0.25
# A jump seen at most this long after a 16th-note line (a section start, the top of a vamp)
# resumes from that line, its tick sent a little late: a downbeat played late beats a
# downbeat the drum machine skips.
CATCH_UP_S = 0.03


@dataclass(frozen=True)
class Timed:
    """One message and the song frame it stands for (benches compare that frame's audio
    time with the time the message left)."""

    data: tuple[int, ...]
    kind: str   # clock | start | continue | stop | spp | qf | full
    song: int
    frame: float


def frames_per_tick(tempo: float, rate: int) -> float:
    return rate * 60.0 / (tempo * PPQN)


class TickGrid:
    """Clock tick k <-> song frame for one song: tick 0 is bar 1 beat 1, and a beat of a
    meter is 96 / unit ticks (a quarter is 24 whatever the meter counts: 12 a beat in 6/8),
    so tick k is the map's frame of the beat position it stands for. Per tempo change, its
    first tick and bar are kept, so a tick costs a bisection and one `frame_at`; ticks
    before bar 1 continue at the first change's tempo, as the map's bars do."""

    def __init__(self, tmap: TempoMap):
        self.map = tmap
        self._tick: list[int] = []    # first tick of each change
        self._bar: list[int] = []     # its bar
        self._per_bar: list[int] = []  # ticks a bar
        self._per_beat: list[int] = []
        tick = 0
        for i, c in enumerate(tmap.changes):
            if i:
                tick += (c.bar - tmap.changes[i - 1].bar) * self._per_bar[-1]
            per_beat = PPQN * 4 // c.meter.unit   # BEAT_UNITS all divide 96
            self._tick.append(tick)
            self._bar.append(c.bar)
            self._per_beat.append(per_beat)
            self._per_bar.append(per_beat * c.meter.beats)

    def frame(self, k: int) -> int:
        i = max(0, bisect_right(self._tick, k) - 1)
        bars, rest = divmod(k - self._tick[i], self._per_bar[i])
        return self.map.frame_at(self._bar[i] + bars, 1.0 + rest / self._per_beat[i])

    def position(self, frame: int) -> float:
        """Ticks (fractional) after bar 1 beat 1 at `frame`; negative before it. Inside a
        beat it is linear in frames, so callers settle the exact tick with `frame`."""
        bar, beat, into = self.map.where(frame)
        i = max(0, bisect_right(self._bar, bar) - 1)
        beats = (bar - self._bar[i]) * (self._per_bar[i] // self._per_beat[i]) + beat - 1
        return self._tick[i] + (beats + into) * self._per_beat[i]

    def first_at(self, frame: int) -> int:
        """The first tick at or after `frame`."""
        k = math.ceil(self.position(frame))
        while self.frame(k - 1) >= frame:
            k -= 1
        while self.frame(k) < frame:
            k += 1
        return k

    def sixteenth_before(self, frame: int) -> int:
        """The 16th-note line at or before `frame` (SPP counts: 0 at bar 1 beat 1)."""
        s = math.floor(self.position(frame) / TICKS_PER_SPP)
        while self.frame(s * TICKS_PER_SPP) > frame:
            s -= 1
        while self.frame((s + 1) * TICKS_PER_SPP) <= frame:
            s += 1
        return s


def mtc_fields(tc_frame: int, fps: int) -> tuple[int, int, int, int]:
    """Hours, minutes, seconds, frames of a frame count (hours wrap at 24 as MTC does)."""
    ff = tc_frame % fps
    secs = tc_frame // fps
    return (secs // 3600) % 24, (secs // 60) % 60, secs % 60, ff


def mtc_quarter_frame(piece: int, tc_frame: int, fps: int) -> tuple[int, int]:
    """Quarter-frame message `piece` (0-7) of the group that describes `tc_frame`."""
    hh, mm, ss, ff = mtc_fields(tc_frame, fps)
    nibbles = (ff & 0xF, ff >> 4, ss & 0xF, ss >> 4, mm & 0xF, mm >> 4, hh & 0xF,
               (hh >> 4) | (MTC_RATE_CODE[fps] << 1))
    return QUARTER_FRAME, (piece << 4) | nibbles[piece]


def mtc_full_frame(tc_frame: int, fps: int) -> tuple[int, ...]:
    """The SysEx full-frame message: receivers jump there at once instead of waiting for
    eight quarter frames."""
    hh, mm, ss, ff = mtc_fields(tc_frame, fps)
    return (0xF0, 0x7F, 0x7F, 0x01, 0x01, (MTC_RATE_CODE[fps] << 5) | hh, mm, ss, ff, 0xF7)


def decode_quarter_frames(pieces: list[int]) -> tuple[int, int]:
    """(frame count, fps) from the data bytes of pieces 0..7 in order (for tests/benches)."""
    nib = [p & 0xF for p in pieces]
    ff = nib[0] | (nib[1] & 1) << 4
    ss = nib[2] | (nib[3] & 3) << 4
    mm = nib[4] | (nib[5] & 3) << 4
    hh = nib[6] | (nib[7] & 1) << 4
    fps = {v: k for k, v in MTC_RATE_CODE.items()}.get((nib[7] >> 1) & 3, 30)
    return ((hh * 60 + mm) * 60 + ss) * fps + ff, fps


def song_position(sixteenths: int) -> tuple[int, int, int]:
    s = max(0, min(sixteenths, 0x3FFF))
    return SONG_POSITION, s & 0x7F, s >> 7


class SyncScheduler:
    """Which clock / MTC messages are due, given where the audio is.

    - `tempo_of(song)` gives the song's TempoMap (or one tempo in BPM of quarter notes, a
      4/4 map from frame 0; None: no clock, only MTC).
    - Before bar 1 (a count-in, audio before the map's `start`): ticks run, so receivers
      have the tempo, but no Start; Start goes out just before tick 0 at bar 1 beat 1,
      which is the receivers' song position 0 (there is no negative one).
    - Song starts at bar 1 (seen within its first 16th note): Start, then the ticks from
      tick 0. MTC: a full-frame message, then quarter frames from piece 0 at frame 0.
    - Resume from pause, or any other entry mid-song: Song Position Pointer at the next 16th
      note and Continue; ticks from that 16th note on (MIDI receivers resume on the next
      clock after Continue). MTC: full frame, then quarter frames from the next even frame.
    - A jump or a vamp's turn (the position moves against the one before by more than
      JUMP_MIN_S): the same, except that a 16th-note line passed less than CATCH_UP_S ago is
      where it resumes (a section start is on one), so the SPP names the target's 16th.
    - Pause, stop, end of song: Stop (MTC just stops, as tape would).
    - Another song: Stop, then as above.
    """

    def __init__(self, rate: int, tempo_of: Callable[[int], TempoMap | float | None],
                 clock: bool = True, mtc: bool = False, fps: int = 25, early_ns: int = 0,
                 jump_s: float = JUMP_MIN_S):
        self.rate = rate
        self.tempo_of = tempo_of
        self.clock = clock
        self.mtc = mtc
        self.fps = fps
        self.early_frames = early_ns * rate / 1e9
        self.jump_frames = jump_s * rate
        self.fpq = rate / (4.0 * fps)        # frames per quarter frame
        self.song = -1
        self.running = False                 # following a playing song
        self.clock_on = False                # Start/Continue sent and no Stop since
        self.grid: TickGrid | None = None    # the current song's ticks (None: no clock)
        self._grids: dict[TempoMap, TickGrid] = {}
        self.next_tick = 0
        self.next_tick_frame = 0
        self.next_qf = 0
        self.last_frame = 0
        self.last_ns = 0
        self.relocations = 0

    def reset(self) -> None:
        """Forget what the receivers know (a port was reconnected): re-locate them on the
        next step."""
        self.running = False
        self.clock_on = False

    def step(self, song: int, frame: int, playing: bool, now_ns: int) -> tuple[list[Timed], int | None]:
        out: list[Timed] = []
        if not playing or song < 0:
            if self.clock_on:
                out.append(Timed((STOP,), "stop", self.song, frame))
                self.clock_on = False
            self.running = False
            return out, None
        if not self.running or song != self.song:
            self._locate(song, frame, out)
        elif self._jumped(frame, now_ns):
            self._locate(song, frame, out, jump=True)
        self.last_frame, self.last_ns = frame, now_ns
        limit = frame + self.early_frames
        late = MAX_LATE_S * self.rate
        due: list[Timed] = []
        grid = self.grid
        if grid is not None:
            if self.next_tick_frame < frame - late:
                self._locate(song, frame, out)
            while self.next_tick_frame <= limit:
                if self.next_tick == 0 and not self.clock_on:   # bar 1 after a count-in
                    due.append(Timed((START,), "start", song, self.next_tick_frame))
                    self.clock_on = True
                due.append(Timed((CLOCK,), "clock", song, self.next_tick_frame))
                self.next_tick += 1
                self.next_tick_frame = grid.frame(self.next_tick)
        if self.mtc:
            if self.next_qf * self.fpq < frame - late:
                self._locate_mtc(song, frame, out)
            while self.next_qf * self.fpq <= limit:
                q = self.next_qf
                data = mtc_quarter_frame(q % 8, (q // 8) * 2, self.fps)
                due.append(Timed(data, "qf", song, q * self.fpq))
                self.next_qf += 1
        due.sort(key=lambda m: m.frame)
        out.extend(due)
        targets = []
        if grid is not None:
            targets.append(self.next_tick_frame)
        if self.mtc:
            targets.append(self.next_qf * self.fpq)
        if not targets:
            return out, None
        wake = now_ns + int((min(targets) - self.early_frames - frame) * 1e9 / self.rate)
        return out, wake

    # ---- internals ------------------------------------------------------------------------
    def _jumped(self, frame: int, now_ns: int) -> bool:
        """Backwards at all, or ahead of the time gone by: only a jump moves the audio so.
        Behind it is a stall (an underrun holds the audio too), a jump only past JUMP_S."""
        if frame < self.last_frame - self.jump_frames:
            return True
        expected = self.last_frame + (now_ns - self.last_ns) * self.rate / 1e9
        return frame > expected + self.jump_frames or frame < expected - JUMP_S * self.rate

    def _grid_of(self, song: int) -> TickGrid | None:
        tempo = self.tempo_of(song) if self.clock else None
        if tempo is None:
            return None
        if not isinstance(tempo, TempoMap):
            if not tempo > 0:
                return None
            tempo = TempoMap([TempoChange(1, float(tempo))], 0.0, self.rate)
        elif tempo.rate != self.rate:
            tempo = TempoMap(tempo.changes, tempo.start_s, self.rate)
        grid = self._grids.get(tempo)
        if grid is None:
            if len(self._grids) > 64:    # a reloaded show's maps replace the old ones
                self._grids.clear()
            grid = self._grids[tempo] = TickGrid(tempo)
        return grid

    def _locate(self, song: int, frame: int, out: list[Timed], jump: bool = False) -> None:
        if self.running:
            self.relocations += 1
        if self.clock_on:
            out.append(Timed((STOP,), "stop", self.song, frame))
            self.clock_on = False
        self.song = song
        self.running = True
        self.grid = self._grid_of(song)
        if self.grid is not None:
            self._locate_clock(song, frame, out, jump)
        if self.mtc:
            self._locate_mtc(song, frame, out)

    def _locate_clock(self, song: int, frame: int, out: list[Timed], jump: bool) -> None:
        grid = self.grid
        s = grid.sixteenth_before(frame)
        if s < 0:                              # before bar 1: Start comes at tick 0
            self.next_tick = grid.first_at(frame)
        elif s == 0:
            out.append(Timed((START,), "start", song, grid.frame(0)))
            self.clock_on = True
            self.next_tick = 0
        else:
            if not (jump and frame - grid.frame(s * TICKS_PER_SPP) <= CATCH_UP_S * self.rate):
                s += 1
            out.append(Timed(song_position(s), "spp", song, frame))
            out.append(Timed((CONTINUE,), "continue", song, frame))
            self.clock_on = True
            self.next_tick = s * TICKS_PER_SPP
        self.next_tick_frame = grid.frame(self.next_tick)

    def _locate_mtc(self, song: int, frame: int, out: list[Timed]) -> None:
        # Groups of eight quarter frames start on even frames. One quarter frame of slack, so
        # a song start seen a few ms late still sends the group of 00:00:00:00.
        q = max(0, math.ceil((frame - self.fpq) / self.fpq / 8) * 8)
        now_tc = int(frame * self.fps / self.rate)
        out.append(Timed(mtc_full_frame(now_tc, self.fps), "full", song,
                         now_tc * self.rate / self.fps))
        self.next_qf = q

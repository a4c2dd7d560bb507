"""MIDI clock and MIDI Time Code as pure arithmetic on the audio position.

Why this shape: a sender that sleeps 1/48 s between ticks drifts away from the sound card
(every late wake-up is kept forever, and the card's crystal is not the CPU's). Here every
message belongs to a song frame: tick k of a song at `tempo` BPM is frame
k * rate * 60 / (tempo * 24), quarter frame q of MTC at `fps` is frame q * rate / (4 * fps).
`SyncScheduler.step` is given the engine's position (song, frame at the DAC now, playing,
monotonic ns) and returns the messages whose frame has been reached plus the monotonic time
of the next one, so the sender thread only decides when to wake up: a late wake-up makes one
message late, never the ones after it, and the tick count always equals the audio position.

No threads, no clocks, no I/O: tests drive it with made-up positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

CLOCK, START, CONTINUE, STOP = 0xF8, 0xFA, 0xFB, 0xFC
SONG_POSITION = 0xF2
QUARTER_FRAME = 0xF1
PPQN = 24                 # MIDI clock ticks per quarter note
TICKS_PER_SPP = 6         # song position pointer counts 16th notes
MTC_RATE_CODE = {24: 0, 25: 1, 30: 3}  # 30 = 30 fps non-drop

# A position more than this far from where the previous one predicts is a jump (restart of
# the same song, a stall): the receivers are re-located instead of being fed a burst.
JUMP_S = 0.25
# Messages this late are still sent (a receiver counting clocks must not lose one); later
# than this the stream is re-located instead.
MAX_LATE_S = 0.25


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

    - Song starts at frame 0 (seen within the first 16th note): Start, then tick 0 at
      frame 0, tick k at frame k * frames_per_tick. A full-frame MTC message, then quarter
      frames from piece 0.
    - Resume from pause, or any other entry mid-song: Song Position Pointer at the next 16th
      note and Continue; ticks from that 16th note on (MIDI receivers resume on the next
      clock after Continue). MTC: full frame, then quarter frames from the next even frame.
    - Pause, stop, end of song: Stop (MTC just stops, as tape would).
    - Another song, or a position jump: Stop, then as above.
    - A song without `tempo` gets no clock, only MTC.
    """

    def __init__(self, rate: int, tempo_of: Callable[[int], float | None], clock: bool = True,
                 mtc: bool = False, fps: int = 25, early_ns: int = 0):
        self.rate = rate
        self.tempo_of = tempo_of
        self.clock = clock
        self.mtc = mtc
        self.fps = fps
        self.early_frames = early_ns * rate / 1e9
        self.fpq = rate / (4.0 * fps)        # frames per quarter frame
        self.song = -1
        self.running = False                 # following a playing song
        self.clock_on = False                # Start/Continue sent and no Stop since
        self.fpt = 0.0                       # frames per tick of the current song (0: none)
        self.next_tick = 0
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
        if not self.running or song != self.song or self._jumped(frame, now_ns):
            self._locate(song, frame, out)
        self.last_frame, self.last_ns = frame, now_ns
        limit = frame + self.early_frames
        late = MAX_LATE_S * self.rate
        due: list[Timed] = []
        if self.clock_on and self.fpt:
            if self.next_tick * self.fpt < frame - late:
                self._locate(song, frame, out)
            while self.next_tick * self.fpt <= limit:
                due.append(Timed((CLOCK,), "clock", song, self.next_tick * self.fpt))
                self.next_tick += 1
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
        if self.clock_on and self.fpt:
            targets.append(self.next_tick * self.fpt)
        if self.mtc:
            targets.append(self.next_qf * self.fpq)
        if not targets:
            return out, None
        wake = now_ns + int((min(targets) - self.early_frames - frame) * 1e9 / self.rate)
        return out, wake

    # ---- internals ------------------------------------------------------------------------
    def _jumped(self, frame: int, now_ns: int) -> bool:
        expected = self.last_frame + (now_ns - self.last_ns) * self.rate / 1e9
        return abs(frame - expected) > JUMP_S * self.rate

    def _locate(self, song: int, frame: int, out: list[Timed]) -> None:
        if self.running:
            self.relocations += 1
        if self.clock_on:
            out.append(Timed((STOP,), "stop", self.song, frame))
            self.clock_on = False
        self.song = song
        self.running = True
        tempo = self.tempo_of(song) if self.clock else None
        self.fpt = frames_per_tick(tempo, self.rate) if tempo else 0.0
        if self.fpt:
            ticks = frame / self.fpt
            if ticks < TICKS_PER_SPP:
                out.append(Timed((START,), "start", song, 0))
                self.next_tick = 0
            else:
                sixteenth = math.ceil(ticks / TICKS_PER_SPP)
                out.append(Timed(song_position(sixteenth), "spp", song, frame))
                out.append(Timed((CONTINUE,), "continue", song, frame))
                self.next_tick = sixteenth * TICKS_PER_SPP
            self.clock_on = True
        if self.mtc:
            self._locate_mtc(song, frame, out)

    def _locate_mtc(self, song: int, frame: int, out: list[Timed]) -> None:
        # Groups of eight quarter frames start on even frames. One quarter frame of slack, so
        # a song start seen a few ms late still sends the group of 00:00:00:00.
        q = max(0, math.ceil((frame - self.fpq) / self.fpq / 8) * 8)
        now_tc = int(frame * self.fps / self.rate)
        out.append(Timed(mtc_full_frame(now_tc, self.fps), "full", song,
                         now_tc * self.rate / self.fps))
        self.next_qf = q

"""MIDI clock and MTC follow the song's structure (issue 12): ticks where the tempo map puts
them across meter changes and ramps, and a jump or a vamp's turn re-locates the receivers
(Song Position Pointer with the target's 16th, full-frame MTC) with neither a burst nor a
drift. SyncScheduler is driven with made-up positions; the expected frames are computed
here from the musical definition (a numerical integration for ramps), not by the code
under test."""

from __future__ import annotations

import random

import numpy as np
import pytest

from appliance.controls.midiclock import (
    CONTINUE,
    SONG_POSITION,
    START,
    STOP,
    SyncScheduler,
    mtc_full_frame,
)
from appliance.tempomap import Meter, TempoChange, TempoMap

RATE = 48000
STEP_NS = 1_000_000          # the sender looks every millisecond
STEP_FRAMES = RATE // 1000


class Player:
    """A song position moving with time, observed every millisecond; `jump` moves it the
    way a switch of the engine does (at once, between two looks)."""

    def __init__(self, sched: SyncScheduler, frame: int = 0, song: int = 0, jitter: int = 0,
                 seed: int = 3):
        self.s = sched
        self.frame = frame
        self.song = song
        self.t_ns = 5_000_000_000
        self.jitter = jitter
        self.rng = random.Random(seed)
        self.steps: list[tuple[int, list]] = []   # (true frame, messages of that look)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * 1000)):
            seen = self.frame + (self.rng.randint(-self.jitter, self.jitter) if self.jitter else 0)
            out, _wake = self.s.step(self.song, seen, True, self.t_ns)
            self.steps.append((self.frame, out))
            self.t_ns += STEP_NS
            self.frame += STEP_FRAMES

    def jump(self, to: int, seen_after: int = 0) -> None:
        """The audio leaves the current frame for `to`; the next look is `seen_after`
        frames into the target."""
        self.frame = to + seen_after

    def msgs(self, since: int = 0) -> list:
        return [m for _f, out in self.steps[since:] for m in out]


def clock_frames(msgs) -> list[float]:
    return [m.frame for m in msgs if m.kind == "clock"]


def spp_of(m) -> int:
    assert m.data[0] == SONG_POSITION
    return m.data[1] | m.data[2] << 7


# -- where the ticks are --------------------------------------------------------------------------

def test_meter_change_four_four_to_six_eight():
    """Bars 1-2 in 4/4 at 120 (a quarter is 0.5 s), then 6/8 at 180 eighths a minute (an
    eighth is 1/3 s, a quarter 2/3 s: 24 ticks a quarter still, 12 an eighth), bar 1 at
    0.25 s into the audio."""
    tmap = TempoMap([TempoChange(1, 120.0), TempoChange(3, 180.0, Meter(6, 8))], 0.25, RATE)
    s = SyncScheduler(RATE, lambda song: tmap)
    p = Player(s)
    p.run(8.0)
    msgs = p.msgs()
    assert [m.kind for m in msgs[:2]] == ["clock", "clock"]      # before bar 1: no Start yet

    def tick_time(k: int) -> float:   # quarter note k / 24 after bar 1, in seconds of audio
        q = k / 24
        return 0.25 + (q * 0.5 if q <= 8 else 4.0 + (q - 8) * 2 / 3)

    ticks = clock_frames(msgs)
    first = -12                    # the pre-roll's 0.25 s at the first tempo: 12 ticks
    assert tick_time(first) == 0.0
    want = [round(tick_time(k) * RATE) for k in range(first, first + len(ticks))]
    assert np.max(np.abs(np.array(ticks) - np.array(want))) <= 1
    assert len(ticks) == sum(tick_time(k) * RATE <= p.frame - STEP_FRAMES
                             for k in range(first, first + len(ticks) + 5))
    # Start once, just before tick 0 (bar 1 beat 1)
    kinds = [m.kind for m in msgs]
    i = kinds.index("start")
    assert kinds.count("start") == 1 and msgs[i + 1].kind == "clock"
    assert msgs[i + 1].frame == round(0.25 * RATE) == msgs[i].frame
    # in 6/8: 12 ticks an eighth note of 1/3 s, 72 a bar of 2 s
    bar3 = round(4.25 * RATE)
    after = [f for f in ticks if f >= bar3]
    assert after[0] == bar3 and after[72] == round(6.25 * RATE)
    assert all(abs(b - a - RATE / 36) <= 1 for a, b in zip(after, after[1:], strict=False))
    # and every tick went out at the look that first reached its frame
    for frame, out in p.steps:
        for m in out:
            if m.kind == "clock":
                assert frame - STEP_FRAMES < m.frame <= frame


def ramp_seconds(beats: np.ndarray, bpm0: float, bpm1: float, span: float) -> np.ndarray:
    """Seconds to each beat position: the integral of 60 / bpm(u) du, bpm linear in beats
    over `span` beats and held after, summed numerically on a fine grid."""
    u = np.linspace(0.0, beats.max(), 400_001)
    bpm = np.where(u < span, bpm0 + (bpm1 - bpm0) * u / span, bpm1)
    f = 60.0 / bpm
    t = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(u))])
    return np.interp(beats, u, t)


@pytest.mark.parametrize("meter, bpm0, bpm1", [(Meter(4, 4), 90.0, 150.0),
                                               (Meter(6, 8), 240.0, 150.0)])
def test_ramp_ticks_follow_the_integral(meter, bpm0, bpm1):
    """A 4-bar ramp from bar 2, then held; a tick is 1 / (96 / unit) of a beat."""
    tmap = TempoMap([TempoChange(1, bpm0, meter),
                     TempoChange(2, bpm0, meter, ramp_to=bpm1, bars=4)], 0.0, RATE)
    s = SyncScheduler(RATE, lambda song: tmap)
    p = Player(s)
    p.run(12.0)
    ticks = np.array(clock_frames(p.msgs()), dtype=np.float64)
    per_beat = 96 // meter.unit
    beats = np.arange(len(ticks)) / per_beat                      # from bar 1 beat 1
    bar = meter.beats
    # bar 1 at bpm0, then the ramp over 4 bars from beat `bar`, then bpm1
    t = np.where(beats < bar, beats * 60 / bpm0,
                 bar * 60 / bpm0 + ramp_seconds(np.maximum(beats - bar, 0.0), bpm0, bpm1,
                                                4 * bar))
    assert np.max(np.abs(ticks - t * RATE)) <= 1.5
    # the spacing changes smoothly: no step between neighbours larger than the ramp makes
    gaps = np.diff(ticks)
    assert abs(gaps[0] - RATE * 60 / bpm0 / per_beat) <= 1
    assert abs(gaps[-1] - RATE * 60 / bpm1 / per_beat) <= 1
    assert np.max(np.abs(np.diff(gaps))) <= 2 + abs(bpm1 - bpm0) / bpm0 * gaps.max() / 50


def test_a_plain_tempo_is_a_four_four_map_from_frame_0():
    s = SyncScheduler(RATE, lambda song: 90.0)
    p = Player(s)
    p.run(2.0)
    ticks = clock_frames(p.msgs())
    assert p.msgs()[0].kind == "start"
    assert ticks == [round(k * RATE * 60 / (90 * 24)) for k in range(len(ticks))]


# -- jumps and vamps ------------------------------------------------------------------------------

FOUR = TempoMap([TempoChange(1, 120.0)], 0.0, RATE)     # a bar is 2 s, a tick 1000 frames
BAR = 2 * RATE


@pytest.mark.parametrize("seen_after", [0, 144, 1000])
def test_vamp_turn_sends_spp_of_the_loop_start_and_ticks_go_on_on_the_grid(seen_after):
    """A 1-bar vamp on bar 3 (song frames 4 s to 6 s): at each turn Stop, SPP 32 (bar 3 is 8
    quarters in: 32 16ths), Continue, then tick 192 at the loop's start and ticks every 1000
    frames from there: at most one tick at the relocating look, none lost, none extra."""
    s = SyncScheduler(RATE, lambda song: FOUR, mtc=True, fps=25)
    p = Player(s)
    p.run(5.0)
    for turn in range(3):
        p.run((3 * BAR - p.frame) / RATE)          # up to the loop's end (exclusive)
        mark = len(p.steps)
        before = clock_frames(p.msgs(0))[-1]
        assert before == 3 * BAR - 1000              # the last tick of the loop
        p.jump(2 * BAR, seen_after)
        p.run(0.5)
        msgs = p.msgs(mark)
        kinds = [m.kind for m in msgs]
        assert kinds[:3] == ["stop", "spp", "continue"], (turn, kinds[:6])
        assert spp_of(msgs[1]) == 32
        assert "full" in kinds and msgs[kinds.index("full")].data == mtc_full_frame(100, 25)
        first_look = p.steps[mark][1]
        assert sum(m.kind == "clock" for m in first_look) <= 1 + seen_after // 1000
        ticks = clock_frames(msgs)
        assert ticks == [2 * BAR + 1000 * k for k in range(len(ticks))]
        assert len(ticks) == (p.frame - STEP_FRAMES - 2 * BAR) // 1000 + 1
    assert s.relocations == 3


def test_jump_across_a_meter_change_counts_16ths_through_both_meters():
    """4/4 for two bars (32 16ths), then 6/8 (12 16ths a bar): bar 4 is 16th 44, bar 2 is 16."""
    tmap = TempoMap([TempoChange(1, 120.0), TempoChange(3, 240.0, Meter(6, 8))], 0.0, RATE)
    s = SyncScheduler(RATE, lambda song: tmap)
    p = Player(s)
    p.run(1.0)
    mark = len(p.steps)
    p.jump(tmap.frame_at(4), 100)                  # forward into the 6/8
    p.run(0.3)
    msgs = p.msgs(mark)
    assert [m.kind for m in msgs[:3]] == ["stop", "spp", "continue"] and spp_of(msgs[1]) == 44
    ticks = clock_frames(msgs)
    grid = [tmap.frame_at(4, 1 + k / 12) for k in range(len(ticks))]   # 12 ticks an eighth
    assert ticks == grid
    mark = len(p.steps)
    p.jump(tmap.frame_at(2), 100)                  # and back into the 4/4
    p.run(0.3)
    msgs = p.msgs(mark)
    assert spp_of(msgs[1]) == 16
    assert clock_frames(msgs)[0] == tmap.frame_at(2)


@pytest.mark.parametrize("moved_ticks", [-2, 2, 3, 96, -96])
def test_small_jumps_are_jumps_too(moved_ticks):
    """Two or more ticks either way (42 ms at 120 BPM, far under the old 250 ms): re-located,
    no burst of the ticks jumped over, no ticks held back for the ones jumped back over."""
    s = SyncScheduler(RATE, lambda song: FOUR)
    p = Player(s)
    p.run(3.0)
    mark = len(p.steps)
    p.jump(p.frame + moved_ticks * 1000)
    p.run(0.2)
    msgs = p.msgs(mark)
    assert [m.kind for m in msgs[:3]] == ["stop", "spp", "continue"], [m.kind for m in msgs[:5]]
    assert max(sum(m.kind == "clock" for m in out) for _f, out in p.steps[mark:]) <= 1
    sixteenth = spp_of(msgs[1])
    ticks = clock_frames(msgs)
    assert ticks[0] == sixteenth * 6000 and ticks == [ticks[0] + 1000 * k for k in
                                                      range(len(ticks))]


def test_jitter_and_stalls_are_not_jumps():
    """The position estimate wobbles (±4 ms here) and an underrun holds the audio for
    150 ms: neither re-locates the receivers; the ticks wait for the audio and stay on it."""
    s = SyncScheduler(RATE, lambda song: FOUR)
    p = Player(s, jitter=200)
    p.run(4.0)
    held = p.frame
    for _ in range(150):                            # the audio stands still
        out, _w = s.step(0, held, True, p.t_ns)
        p.steps.append((held, out))
        p.t_ns += STEP_NS
    p.run(2.0)
    msgs = p.msgs()
    assert s.relocations == 0
    assert [m.kind for m in msgs].count("stop") == 0
    ticks = clock_frames(msgs)
    assert ticks == [1000 * k for k in range(len(ticks))]


def test_count_in_runs_the_clock_and_start_comes_at_bar_1():
    """Play from a 2-bar count-in (song frames from -4 s): ticks from there, so receivers
    have the tempo, Start just before tick 0, and no SPP (bar 1 is position 0)."""
    s = SyncScheduler(RATE, lambda song: FOUR)
    p = Player(s, frame=-2 * BAR)
    p.run(5.0)
    msgs = p.msgs()
    kinds = [m.kind for m in msgs]
    assert "spp" not in kinds and "continue" not in kinds and kinds.count("start") == 1
    i = kinds.index("start")
    assert msgs[i].data == (START,) and msgs[i + 1].frame == 0
    ticks = clock_frames(msgs)
    assert ticks == [-2 * BAR + 1000 * k for k in range(len(ticks))]
    # a stop in the count-in sends no Stop: the receivers never started
    s2 = SyncScheduler(RATE, lambda song: FOUR)
    out, _ = s2.step(0, -BAR, True, 0)
    out, _ = s2.step(0, -BAR + 480, False, 10_000_000)
    assert STOP not in [m.data[0] for m in out]


def test_resume_from_pause_still_waits_for_the_next_16th():
    """Only a jump catches up with a 16th line just passed (its step was not played); a
    resume would play that step twice, so it resumes at the next one."""
    s = SyncScheduler(RATE, lambda song: FOUR)
    p = Player(s)
    p.run(2.0)
    at = p.frame
    s.step(0, at, False, p.t_ns)
    p.t_ns += 50 * STEP_NS
    mark = len(p.steps)
    p.frame = 20 * 6000 + 500                       # 500 frames past 16th 20
    p.run(0.2)
    msgs = p.msgs(mark)
    assert msgs[0].data[0] == SONG_POSITION and spp_of(msgs[0]) == 21
    assert msgs[1].data == (CONTINUE,) and clock_frames(msgs)[0] == 21 * 6000

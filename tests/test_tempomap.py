"""The tempo map: bars and beats <-> song frames, exact at every beat, across meter changes,
ramps and the bars before bar 1 (pure arithmetic, no audio)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from appliance.tempomap import Meter, TempoChange, TempoMap

RATE = 48000
M44, M68, M78 = Meter(4, 4), Meter(6, 8), Meter(7, 8)


def song_map(start_s: float = 0.5) -> TempoMap:
    """120 in 4/4; 90 from bar 17; a ramp 90 -> 120 over bars 25-28; 6/8 at 180 from 33;
    7/8 at 210 from 41."""
    return TempoMap([TempoChange(1, 120, M44), TempoChange(17, 90, M44),
                     TempoChange(25, 90, M44, ramp_to=120, bars=4),
                     TempoChange(33, 180, M68), TempoChange(41, 210, M78)], start_s, RATE)


def test_meter_text():
    assert str(Meter(6, 8)) == "6/8" and Meter.parse(" 7 / 8 ") == M78
    assert Meter.parse("4") is None and Meter.parse("4/3") is None and Meter.parse("0/4") is None


def test_one_tempo():
    m = TempoMap([TempoChange(1, 120, M44)], 0.5, RATE)
    assert m.start_frame == 24000
    assert m.frame_at(1) == 24000 and m.frame_at(1, 2) == 48000 and m.frame_at(2) == 120000
    assert m.seconds_at(13, 3) == pytest.approx(0.5 + 12 * 2 + 1.0)
    assert m.where(m.frame_at(13, 3)) == (13, 3, 0.0)
    bar, beat, frac = m.where(m.frame_at(13, 3) + 6000)
    assert (bar, beat) == (13, 3) and frac == pytest.approx(0.25)
    assert m.bpm_at(10**6) == 120 and m.meter_at(10**6) == M44


def test_the_bpm_counts_the_meters_beats():
    m = TempoMap([TempoChange(1, 120, M68)], 0.0, RATE)
    assert m.seconds_at(1, 2) == pytest.approx(0.5)  # an eighth at 120 eighths a minute
    assert m.seconds_at(2) == pytest.approx(3.0)     # six of them a bar


def test_round_trip_over_meter_changes_and_a_ramp():
    m = song_map()
    prev = None
    for bar in range(-2, 50):
        for beat in range(1, m.meter_of_bar(bar).beats + 1):
            f = m.frame_at(bar, beat)
            assert m.where(f) == (bar, beat, 0.0), (bar, beat)
            if prev is not None:
                assert f > prev
                assert m.where(f - 1)[:2] == m.where(prev)[:2]  # still the beat before
                assert m.where(f - 1)[2] > 0.9
            prev = f
    assert m.meter_at(m.frame_at(35, 4)) == M68 and m.meter_at(m.frame_at(45)) == M78
    # bar 17 at 90: 16 bars of 4/4 at 120 (32 s) after start
    assert m.seconds_at(17) == pytest.approx(0.5 + 32.0)
    assert m.seconds_at(25) == pytest.approx(0.5 + 32.0 + 8 * 4 * 60 / 90)


def test_ramp_matches_numerical_integration():
    m = song_map(0.0)
    beats = np.linspace(0.0, 16.0, 160_001)  # the 16 beats of the ramp, fine steps
    bpm = 90.0 + 30.0 * beats / 16.0
    inv = 60.0 / bpm
    t = np.concatenate([[0.0], np.cumsum((inv[1:] + inv[:-1]) / 2 * np.diff(beats))])
    t0 = m.seconds_at(25)
    for b in (1, 4, 7, 10, 13, 16):  # beat b of the ramp
        bar, beat = 25 + b // 4, b % 4 + 1
        assert m.seconds_at(bar, beat) - t0 == pytest.approx(t[b * 10_000], abs=1e-7)
    # held at 120 after it: bar 30 is a 4/4 bar at 120 after bar 29
    assert m.seconds_at(30) - m.seconds_at(29) == pytest.approx(2.0)
    assert m.bpm_at(m.frame_at(27)) == pytest.approx(105.0)
    assert m.bpm_at(m.frame_at(29, 2)) == pytest.approx(120.0)
    assert m.bpm_at(m.frame_at(26)) == pytest.approx(90 + 30 * 4 / 16, rel=1e-6)


def test_a_ramp_to_its_own_tempo_is_a_steady_tempo():
    a = TempoMap([TempoChange(1, 100, M44, ramp_to=100, bars=4)], 0.0, RATE)
    b = TempoMap([TempoChange(1, 100, M44)], 0.0, RATE)
    assert [a.frame_at(n) for n in range(-1, 9)] == [b.frame_at(n) for n in range(-1, 9)]
    assert a.where(b.frame_at(3, 2) + 5)[:2] == (3, 2)


def test_bars_before_bar_one_run_at_the_first_tempo():
    m = TempoMap([TempoChange(1, 120, M44, ramp_to=60, bars=2)], 0.0, RATE)
    assert m.frame_at(0) == -96000 and m.frame_at(-1) == -192000
    assert m.where(-1) == (0, 4, pytest.approx(1 - 1 / 24000))
    assert m.where(-96000) == (0, 1, 0.0) and m.where(-96001)[:2] == (-1, 4)
    assert m.bpm_at(-50000) == 120.0
    assert m.bar_start(-1) == -96000 and m.next_bar(-96000) == 0


def test_onsets_are_the_beat_frames_and_blocks_add_up():
    m = song_map()
    every = m.onsets(m.frame_at(-1), m.frame_at(46), 1)
    want = [(m.frame_at(bar, beat), bar, beat, 0)
            for bar in range(-1, 46) for beat in range(1, m.meter_of_bar(bar).beats + 1)]
    assert every == want
    # f0 included, f1 excluded
    f = m.frame_at(5, 2)
    assert m.onsets(f, f + 1) == [(f, 5, 2, 0)] and m.onsets(f - 10, f) == []
    # any block sizes give the same onsets, none twice, none lost
    rng = random.Random(12)
    for sub in (1, 2, 3):
        whole = m.onsets(-100_000, m.frame_at(46), sub)
        got, a = [], -100_000
        while a < m.frame_at(46):
            b = min(a + rng.randint(1, 30_000), m.frame_at(46))
            got += m.onsets(a, b, sub)
            a = b
        assert got == whole
        beats = [o for o in whole if o[3] == 0]
        assert beats == [o for o in want if o[0] >= -100_000]
        assert [o[3] for o in whole] == [(whole[0][3] + i) % sub for i in range(len(whole))]


def test_subdivisions_fall_between_the_beats():
    m = TempoMap([TempoChange(1, 120, M44)], 0.0, RATE)
    got = m.onsets(0, 48000, 2)
    assert got == [(0, 1, 1, 0), (12000, 1, 1, 1), (24000, 1, 2, 0), (36000, 1, 2, 1)]
    triplets = m.onsets(0, 24000, 3)
    assert [o[0] for o in triplets] == [0, 8000, 16000] and [o[3] for o in triplets] == [0, 1, 2]
    # in a ramp a subdivision is half a beat of musical time, not of clock time
    r = song_map()
    (f, bar, beat, sub), = r.onsets(r.frame_at(26, 2) + 1, r.frame_at(26, 3), 2)
    assert (bar, beat, sub) == (26, 2, 1) and f == r.frame_at(26, 2.5)


def test_next_beat_next_bar_bar_start_bars_after():
    m = song_map()
    f = m.frame_at(20, 2)
    assert m.next_beat(f) == m.frame_at(20, 3)          # strictly after
    assert m.next_beat(f - 1) == f
    assert m.next_bar(f) == m.frame_at(21) and m.next_bar(m.frame_at(21)) == m.frame_at(22)
    assert m.bar_start(f) == m.frame_at(20) and m.bar_start(m.frame_at(20)) == m.frame_at(20)
    assert m.bars_after(f, 1) == m.frame_at(21) and m.bars_after(f, 4) == m.frame_at(24)
    assert m.bars_after(m.frame_at(31, 4), 2) == m.frame_at(33)  # into the 6/8
    with pytest.raises(ValueError):
        m.bars_after(f, 0)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError):
        TempoMap([], 0.0, RATE)
    with pytest.raises(ValueError):
        TempoMap([TempoChange(2, 120)], 0.0, RATE)
    with pytest.raises(ValueError):
        TempoMap([TempoChange(1, 120), TempoChange(1, 90)], 0.0, RATE)
    with pytest.raises(ValueError):
        TempoMap([TempoChange(1, 120, ramp_to=90, bars=4), TempoChange(3, 90)], 0.0, RATE)
    with pytest.raises(ValueError):
        TempoMap([TempoChange(1, 0)], 0.0, RATE)


def test_equal_maps_are_equal():
    assert song_map() == song_map() and hash(song_map()) == hash(song_map())
    assert song_map(0.5) != song_map(0.6)

"""LTC as a reader sees it: every frame readable, at the song frame the timecode says, and the
same samples however the decode thread cuts the song into blocks (a loop or a jump replays
them; the standby unit renders them too)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from appliance.audio.ltc import LtcEncoder
from tests.ltcdecode import decode, frames_with_bits

EXACT = {24.0: Fraction(24), 25.0: Fraction(25), 29.97: Fraction(30000, 1001),
         30.0: Fraction(30)}


def start_of(k: int, fps: float, rate: int) -> int:
    """The song frame where timecode frame k starts: k * rate / fps rounded half up."""
    x = k * rate / EXACT[fps]
    return int(x + Fraction(1, 2)) if x >= 0 else -int(-x + Fraction(1, 2))


def frames_within(fps: float, rate: int, first: int, end: int) -> range:
    """Timecode frames wholly inside song frames [first, end) (`end` not at a frame's end,
    where whether the last one counts depends on the reader)."""
    k0 = 0
    while start_of(k0, fps, rate) < first:
        k0 += 1
    k1 = k0
    while start_of(k1 + 1, fps, rate) < end - 1:
        k1 += 1
    assert abs(start_of(k1 + 1, fps, rate) - end) > 3
    return range(k0, k1)


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("fps", [24.0, 25.0, 29.97, 30.0])
def test_every_frame_of_ten_seconds_decodes_at_its_song_frame(fps, rate):
    enc = LtcEncoder(fps, rate, level=0.1)
    lead, seconds = 1234, 10
    end = seconds * rate + rate // 10 + 357
    x = np.zeros(lead + end + rate // 10, np.float32)
    enc.render(-lead, x[:lead + end])  # the count-in (negative song frames) stays silent
    assert not x[:lead].any()
    got = decode(x, rate)
    want = frames_within(fps, rate, 0, end)
    assert len(want) >= seconds * round(fps)
    assert [lab for _, lab, _ in got] == [enc.timecode_at(start_of(k, fps, rate))
                                          for k in want]
    assert got[0][1] == ("00:00:00;00" if fps == 29.97 else "00:00:00:00")
    for k, (at, _, drop) in zip(want, got, strict=True):
        assert abs(at - (start_of(k, fps, rate) + lead)) <= 1.0, k
        assert drop == (fps == 29.97)
    assert 0.09 < float(np.abs(x).max()) <= 0.1 + 1e-6


@pytest.mark.parametrize("fps", [24.0, 25.0, 29.97, 30.0])
def test_every_frame_has_an_even_count_of_zeros_and_starts_on_the_same_polarity(fps):
    rate = 44100
    enc = LtcEncoder(fps, rate)
    x = np.zeros(3 * rate, np.float32)
    enc.render(0, x[:2 * rate])
    frames = frames_with_bits(x, rate)
    assert len(frames) >= 2 * round(fps) - 1
    for _, bits in frames:
        assert (80 - int(bits.sum())) % 2 == 0
        # the polarity bit is the only flag that is ever set at these labels
        other = bits[[27, 59]].sum() - bits[59 if fps == 25.0 else 27]
        assert other == 0
    signs = {float(np.sign(x[int(np.ceil(at)) + 2])) for at, _ in frames}
    assert signs == {1.0}


def test_a_signal_that_starts_and_stops_mid_frame_decodes_its_whole_frames():
    fps, rate = 29.97, 48000
    enc = LtcEncoder(fps, rate, start="01:02:03;04", level=0.5)
    first = start_of(100, fps, rate) + 700  # about half way through frame 100
    end = start_of(160, fps, rate) + 333
    x = np.zeros(5000 + end - first + 4000, np.float32)
    enc.render(first, x[5000:5000 + end - first])
    got = decode(x, rate)
    want = frames_within(fps, rate, first, end)
    assert want[0] == 101
    assert [lab for _, lab, _ in got] == [enc.timecode_at(start_of(k, fps, rate))
                                          for k in want]
    assert got[0][1] == "01:02:06;15"  # 04 + 101 frames
    for k, (at, _, _) in zip(want, got, strict=True):
        assert abs(at - (start_of(k, fps, rate) - first + 5000)) <= 1.0


@pytest.mark.parametrize("fps,rate", [(29.97, 44100), (24.0, 44100), (25.0, 48000),
                                      (30.0, 96000)])
def test_rendering_in_pieces_is_rendering_at_once_bit_for_bit(fps, rate):
    enc = LtcEncoder(fps, rate, start="10:59:59:00")
    rng = np.random.default_rng(12)
    for song_frame0 in (0, -1, -777, 1, 123457, 10 * 3600 * rate + 17):
        total = 3 * rate + 333
        # the decoder's mix: a column of frames x channels, with something already in it
        whole = np.full(total, 0.25, np.float32)
        enc.render(song_frame0, whole)
        mix = np.full((total, 3), 0.25, np.float32)
        pos = 0
        while pos < total:
            n = min(int(rng.integers(1, 20000)), total - pos)
            enc.render(song_frame0 + pos, mix[pos:pos + n, 1])
            pos += n
        assert np.array_equal(mix[:, 1], whole)
        assert (mix[:, [0, 2]] == np.float32(0.25)).all()
        assert (whole != np.float32(0.25)).any()
        if song_frame0 < 0:
            assert (whole[:-song_frame0 + 1] == np.float32(0.25)).all()  # +1: an edge's middle
            assert whole[-song_frame0 + 1] != np.float32(0.25)


def test_drop_frame_numbering_skips_two_labels_each_minute_but_every_tenth():
    fps, rate = 29.97, 48000
    enc = LtcEncoder(fps, rate)
    assert enc.drop_frame

    def at(k: int) -> str:
        return enc.timecode_at(start_of(k, fps, rate))

    assert [at(k) for k in (1798, 1799, 1800, 1801)] == [
        "00:00:59;28", "00:00:59;29", "00:01:00;02", "00:01:00;03"]
    assert [at(k) for k in (17981, 17982, 17983)] == [
        "00:09:59;29", "00:10:00;00", "00:10:00;01"]
    assert at(17982 + 1800) == "00:11:00;02"
    assert at(6 * 17982) == "01:00:00;00"  # 29.97 df keeps to the clock each ten minutes
    # and in the signal itself
    for label, want in (("00:00:59;28", ["00:00:59;28", "00:00:59;29", "00:01:00;02"]),
                        ("00:09:59;28", ["00:09:59;28", "00:09:59;29", "00:10:00;00"])):
        enc = LtcEncoder(fps, rate, start=label)
        x = np.zeros(start_of(3, fps, rate) + 2000, np.float32)
        enc.render(0, x[:start_of(3, fps, rate) + 100])
        assert [(lab, drop) for _, lab, drop in decode(x, rate)] == [(w, True) for w in want]


def test_non_drop_29_97_counts_every_label_and_a_day_wraps():
    enc = LtcEncoder(29.97, 48000, drop_frame=False)
    assert enc.timecode_at(start_of(1800, 29.97, 48000)) == "00:01:00:00"
    enc = LtcEncoder(25.0, 48000, start="23:59:59:24")
    assert enc.timecode_at(0) == "23:59:59:24"
    assert enc.timecode_at(1920) == "00:00:00:00"
    x = np.zeros(3 * 1920 + 1000, np.float32)
    enc.render(0, x[:3 * 1920 + 10])
    assert [lab for _, lab, _ in decode(x, 48000)] == [
        "23:59:59:24", "00:00:00:00", "00:00:00:01"]


@pytest.mark.parametrize("kwargs", [
    {"fps": 23.976}, {"fps": 25.0, "drop_frame": True}, {"start": "00:01:00;00"},
    {"start": "00:00:00:30"}, {"start": "1:2:3"}, {"start": "24:00:00:00"}])
def test_bad_settings_say_what_is_valid(kwargs):
    args = {"fps": 29.97, "rate": 48000} | kwargs
    fps, rate = args.pop("fps"), args.pop("rate")
    with pytest.raises(ValueError) as err:
        LtcEncoder(fps, rate, **args)
    assert str(err.value)

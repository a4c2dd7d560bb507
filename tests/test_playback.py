"""The daemon through a real ALSA PCM into a JACK dummy server, judged by what was recorded.

Every stem is seeded noise (tests/showkit.py), so a recorded frame is compared with the
exact frame the song should have there: a dropped, repeated or misrouted frame fails.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.jackaudio import judged
from tests.showkit import RATE, DaemonProcess, find_song_start, locate, make_show, mismatches, trace

FADE_LIMIT = int(0.010 * RATE)  # stop/pause fade: at most 10 ms


def wait_state(d: DaemonProcess, state: str, timeout: float = 10.0, song: int | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = d.ctl("status")["state"]
        if st["state"] == state and (song is None or st["song"] == song):
            return st
        time.sleep(0.02)
    raise AssertionError(f"state {state} not reached; last {st}")


def test_long_song_every_frame_on_its_outputs(jack_audio, tmp_path):
    """22 s of 4 stems (mono, stereo, mono fanned out to two outputs): every recorded frame
    equals the expected mix, so no frame was dropped, repeated or misrouted."""
    show = make_show(tmp_path, [22.0])
    with DaemonProcess(show, jack_audio.environ()) as d:
        assert d.ctl("play")["ok"]
        wait_state(d, "stopped", timeout=40)  # the set ended
        time.sleep(0.1)
    rec = jack_audio.stop()
    exp = show.expected(0)
    with judged(rec):
        start = find_song_start(rec.audio, exp[:64])
        assert start is not None, "song start not found in the recording"
        bad = mismatches(rec, exp, start)
        assert not bad, f"{bad}; recorder missed {rec.missed_cycles()} cycles; {d.log()[-1500:]}"
        assert rec.missed_cycles() * 256 < 0.01 * len(exp)  # the recorder saw 99% of it
        # stems end at different times: the song lasts as long as the longest one
        # (and after its last frame, `after: stop` leaves silence: the last sound is the song's)
        end = int(np.flatnonzero(np.any(rec.audio != 0, axis=1))[-1]) + 1
        assert np.array_equal(rec.audio[end - 64:end], exp[-64:])
        assert np.all(rec.audio[end - RATE // 20:end, 4] == 0)  # bass stem is 0.2 s shorter
        assert np.any(rec.audio[end - RATE // 20:end, 0] != 0)  # click is the longest


def test_next_prev_goto_start_right_song_at_frame_zero(jack_audio, tmp_path):
    show = make_show(tmp_path, [6.0, 6.0, 6.0])
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        time.sleep(0.5)
        assert d.ctl({"cmd": "goto", "song": 3})["state"]["song"] == 3
        time.sleep(0.5)
        assert d.ctl("prev")["state"]["song"] == 2
        time.sleep(0.5)
        assert d.ctl("next")["state"]["song"] == 3
        time.sleep(0.5)
        d.ctl("stop")
        time.sleep(0.2)
    rec = jack_audio.stop()
    pos = 0
    with judged(rec):
        for song in (0, 2, 1, 2):
            exp = show.expected(song)
            at = find_song_start(rec.audio, exp[:64], pos)
            assert at is not None, f"song {song + 1} frame 0 not found after {pos}"
            # the song plays on from frame 0 until the next command's fade
            t = trace(rec, exp, at)
            assert t.song_end > 0.4 * RATE, f"song {song + 1} played only {t.song_end} frames"
            pos = t.rec_end


def test_stop_fades_out_then_silence(jack_audio, tmp_path):
    show = make_show(tmp_path, [5.0])
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        time.sleep(1.0)
        d.ctl("stop")
        time.sleep(0.5)
        assert d.ctl("status")["state"]["state"] == "cued"
    rec = jack_audio.stop()
    exp = show.expected(0)
    a = rec.audio
    with judged(rec):
        start = find_song_start(a, exp[:64])
        assert start is not None, "song start not found in the recording"
        t = trace(rec, exp, start)  # clean up to the fade (across the recorder's seams)
        last = int(np.flatnonzero(np.any(a != 0, axis=1))[-1])
        fade = last - t.rec_end + 1
        assert 0 < fade <= FADE_LIMIT, f"fade of {fade} frames"
        # the fade only attenuates: every faded sample is a scaled-down copy of the song
        seg = a[t.rec_end:last + 1]
        ref = exp[t.song_end:t.song_end + len(seg)]
        assert np.all(np.abs(seg) <= np.abs(ref) + 1e-7)
        assert t.song_end > 0.8 * RATE


def test_pause_resume_continues_at_same_frame(jack_audio, tmp_path):
    show = make_show(tmp_path, [6.0])
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        time.sleep(1.0)
        assert d.ctl("pause")["state"]["state"] == "paused"
        time.sleep(0.3)
        p1 = d.ctl("status")["state"]["position_frames"]
        time.sleep(0.3)
        p2 = d.ctl("status")["state"]["position_frames"]
        assert p1 == p2  # paused means the position holds
        assert d.ctl("pause")["state"]["state"] == "playing"
        time.sleep(1.0)
        d.ctl("stop")
        time.sleep(0.2)
    rec = jack_audio.stop()
    exp = show.expected(0)
    a = rec.audio
    with judged(rec):
        start = find_song_start(a, exp[:64])
        nz = np.any(a != 0, axis=1)
        # the silent gap of the pause
        gap_from = start + int(np.argmin(nz[start:]))
        gap_to = gap_from + int(np.argmax(nz[gap_from:]))
        assert gap_to - gap_from > 0.5 * RATE
        before = gap_from - start  # song frames played (the last ones faded) before the pause
        # after resume (a fade-in) the song continues at exactly the frame it paused at
        after = a[gap_to + FADE_LIMIT: gap_to + FADE_LIMIT + 64]
        frame = locate(after, exp)
        assert frame is not None, "resumed audio is not from the song"
        resumed_at = frame - (FADE_LIMIT - 0)
        assert abs(resumed_at - before) <= FADE_LIMIT, (resumed_at, before)
        assert p1 == pytest.approx(before, abs=FADE_LIMIT)


def test_after_next_is_gapless(jack_audio, tmp_path):
    show = make_show(tmp_path, [2.0, 2.0], afters=["next", "stop"])
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        wait_state(d, "playing", song=2, timeout=10)
        wait_state(d, "stopped", timeout=10)
    rec = jack_audio.stop()
    e1, e2 = show.expected(0), show.expected(1)
    with judged(rec):
        s1 = find_song_start(rec.audio, e1[:64])
        both = np.concatenate([e1, e2])
        bad = mismatches(rec, both, s1)
        assert not bad, f"song 2 does not follow song 1 frame for frame: {bad}"


def test_underrun_keeps_position_right(jack_audio, tmp_path):
    show = make_show(tmp_path, [8.0])
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        time.sleep(1.0)
        d.ctl({"cmd": "_fault", "stall_ms": 150})  # the writer stalls: the device runs dry
        time.sleep(1.0)
        st = d.ctl("status")["state"]
        t_ns = time.monotonic_ns()
        time.sleep(0.5)
    rec = jack_audio.stop()
    assert st["xruns"] >= 1
    exp = show.expected(0)
    with judged(rec):
        at = int(round(float(rec.frame_at_time(t_ns))))
        heard = locate(rec.audio[at:at + 32], exp)
        assert heard is not None
        # status said frame P at (about) the moment the recorder heard frame `heard`
        err_ms = (st["position_frames"] - heard) / RATE * 1000
        assert abs(err_ms) < 15, f"position off by {err_ms:.1f} ms after an underrun"


def test_deleted_stem_plays_as_silence(jack_audio, tmp_path):
    show = make_show(tmp_path, [3.0, 3.0, 3.0])
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        time.sleep(0.3)
        (tmp_path / "s3_tracks.wav").unlink()  # mid-show, a stem of a later song vanishes
        d.ctl({"cmd": "goto", "song": 3})
        time.sleep(0.5)
        st = d.ctl("status")["state"]
        time.sleep(0.2)
    rec = jack_audio.stop()
    assert st["song"] == 3 and st["state"] == "playing"
    assert any("s3_tracks.wav" in p for p in st["problems"])
    exp = show.expected(2)
    exp[:, 2:4] = 0.0  # the tracks stem (outputs 3-4) is silent, the rest plays on
    with judged(rec):
        at = find_song_start(rec.audio, exp[:64])
        assert at is not None
        assert not mismatches(rec, exp[:RATE // 4], at)
    assert "s3_tracks.wav" in d.log()

"""The transport's rules, as pure logic (no threads, no audio)."""

from __future__ import annotations

import pytest

from appliance.actions import Action
from appliance.transport import CUED, PAUSED, PLAYING, STOPPED, State, Transport


def t3(afters=("stop", "stop", "stop")) -> Transport:
    return Transport(len(afters), list(afters))


def test_play_from_cued_starts_the_cued_song():
    t = t3()
    e = t.apply(Action("play"))
    assert (e.kind, e.song) == ("start", 0)
    assert t.current == State(PLAYING, 0)


def test_play_while_playing_does_nothing():
    t = t3()
    t.apply(Action("play"))
    assert t.apply(Action("play")).kind == "none"
    assert t.current == State(PLAYING, 0)


def test_pause_toggles_and_resumes():
    t = t3()
    t.apply(Action("play"))
    assert t.apply(Action("pause")).kind == "pause"
    assert t.current.state == PAUSED
    assert t.apply(Action("pause")).kind == "resume"
    assert t.current.state == PLAYING
    t.apply(Action("pause"))
    assert t.apply(Action("play")).kind == "resume"


def test_stop_recues_the_same_song():
    t = t3()
    t.apply(Action("goto", 2))
    t.apply(Action("play"))
    e = t.apply(Action("stop"))
    assert (e.kind, e.song) == ("halt", 1)
    assert t.current == State(CUED, 1)
    assert t.apply(Action("stop")).kind == "none"


def test_play_stop_toggles():
    t = t3()
    assert t.apply(Action("play_stop")).kind == "start"
    assert t.apply(Action("play_stop")).kind == "halt"
    assert t.current == State(CUED, 0)


@pytest.mark.parametrize("playing", [True, False])
def test_next_prev_goto(playing):
    t = t3()
    if playing:
        t.apply(Action("play"))
    kind = "start" if playing else "cue"
    state = PLAYING if playing else CUED
    e = t.apply(Action("next"))
    assert (e.kind, e.song, t.current) == (kind, 1, State(state, 1))
    e = t.apply(Action("goto", 3))
    assert (e.kind, e.song, t.current) == (kind, 2, State(state, 2))
    assert t.apply(Action("next")).kind == "none"  # past the end: nothing
    e = t.apply(Action("prev"))
    assert (e.kind, e.song) == (kind, 1)
    t.apply(Action("prev"))
    assert t.apply(Action("prev")).kind == "none"
    assert t.current.song == 0


def test_goto_out_of_range_is_refused_with_a_message():
    t = t3()
    e = t.apply(Action("goto", 9))
    assert e.kind == "none" and "1 to 3" in e.message
    assert t.current == State(CUED, 0)


def test_song_end_follows_after():
    t = t3(("next", "pause", "stop"))
    t.apply(Action("play"))
    t.song_ended(0)
    assert t.current == State(PLAYING, 1)  # gapless: the writer already moved on
    e = t.song_ended(1)
    assert t.current == State(PAUSED, 2) and e.kind == "cue"
    assert t.apply(Action("play")).kind == "resume"  # engine starts the song from frame 0
    t.song_ended(2)
    assert t.current.state == STOPPED  # end of the set
    assert t.apply(Action("play")).kind == "none"
    e = t.apply(Action("next"))
    assert (e.kind, e.song) == ("cue", 0)


def test_after_stop_cues_the_next_song():
    t = t3()
    t.apply(Action("play"))
    e = t.song_ended(0)
    assert (e.kind, e.song) == ("cue", 1)
    assert t.current == State(CUED, 1)


def test_empty_setlist_is_refused():
    with pytest.raises(ValueError):
        Transport(0, [])

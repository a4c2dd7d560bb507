"""The song library and setlists: song files in folders, setlists naming them, the choice
made at run time and kept across a restart, and the daemon playing what the setlist says
(the recorder proves which song came out, frame by frame)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance import config
from appliance.actions import Action, parse_action, request_action
from appliance.ctl import words_to_request
from appliance.errors import UserError
from tests.jackaudio import judged
from tests.showkit import (
    RATE,
    DaemonProcess,
    find_song_start,
    free_port,
    make_library,
    trace,
    wait_for,
)

HEAD = """device: {name: default, channels: 8}
outputs: {click: 1, cues: 2, tracks: [3, 4], keys: [6, 7]}
"""


def song(folder: Path, name: str, body: str) -> Path:
    d = folder / "songs" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "song.yaml").write_text(body)
    return d / "song.yaml"


def show(folder: Path, body: str) -> Path:
    p = folder / "show.yaml"
    p.write_text(HEAD + body)
    return p


def problems(exc: config.ConfigError) -> list[tuple[str, int, str]]:
    return [(Path(p.file).name if p.file else "", p.line, p.key) for p in exc.problems]


def test_library_songs_setlists_and_overrides(tmp_path):
    song(tmp_path, "opener", "title: Opener\ntempo: 120\nafter: next\nstems:\n"
         "  - {file: Click.wav, to: click}\n  - {file: Keys L.wav, to: keys.L, name: keys}\n"
         "  - {file: Keys R.wav, to: keys.R, name: keys}\n")
    song(tmp_path, "ballad", "title: Ballad\nstems:\n  - {file: tracks.wav, to: tracks}\n")
    song(tmp_path, "closer", "stems:\n  - {file: t.wav, to: tracks, gain_db: -2}\n")
    cfg = config.load(show(tmp_path, "library: songs\nsetlists:\n"
                           "  friday: [Opener, ballad, {song: closer, after: pause}]\n"
                           "  acoustic: [Ballad, {song: Opener, gains: {keys: -6}}]\n"
                           "setlist: acoustic\n"))
    assert cfg.setlist == "acoustic" and list(cfg.setlists) == ["friday", "acoustic"]
    assert [s.title for s in cfg.songs] == ["Ballad", "Opener"]
    opener = cfg.songs[1]
    # a left/right pair keeps its image: one channel each of the stereo output
    assert [st.channels for st in opener.stems] == [(0,), (5,), (6,)]
    assert [st.gain_db for st in opener.stems] == [0.0, -6.0, -6.0]  # that night's gains
    assert opener.stems[0].file == tmp_path / "songs" / "opener" / "Click.wav"
    friday = cfg.with_setlist("friday")
    assert [s.title for s in friday.songs] == ["Opener", "Ballad", "closer"]  # folder = title
    assert [s.after for s in friday.songs] == ["next", "stop", "pause"]
    assert [st.gain_db for st in friday.songs[0].stems] == [0.0, 0.0, 0.0]  # not overridden
    assert len(cfg.library) == 3


def test_inline_songs_still_load_as_the_implicit_setlist():
    cfg = config.load(Path(__file__).parent.parent / "config" / "example.yaml")
    assert cfg.setlist == "all" and list(cfg.setlists) == ["all"]
    assert [s.title for s in cfg.songs] == ["Opener", "Ballad"]


def test_setlist_naming_a_missing_song_is_an_error_with_a_suggestion(tmp_path):
    song(tmp_path, "opener", "title: Opener\nstems:\n  - {file: a.wav, to: click}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(show(tmp_path, "library: songs\nsetlists:\n  friday: [Openr]\n"))
    (p,) = e.value.problems
    assert (Path(p.file).name, p.line, p.key) == ("show.yaml", 5, "setlists.friday[0]")
    assert "no song titled 'Openr'" in p.message and "'Opener'" in p.message


def test_bad_song_file_is_named_with_its_own_file_and_line(tmp_path):
    song(tmp_path, "good", "title: Good\nstems:\n  - {file: a.wav, to: click}\n")
    bad = song(tmp_path, "bad", "title: Bad\nstems:\n  - {file: a.wav, to: click}\n"
               "  - {file: b.wav, to: drums}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(show(tmp_path, "library: songs\nsetlists:\n  friday: [Good, Bad]\n"))
    (p,) = e.value.problems
    assert (p.file, p.line, p.key) == (str(bad), 4, "stems[1].to")
    assert "no output named 'drums'" in p.message and "click, cues, tracks, keys" in p.message
    # the same broken song in no setlist: a warning, and the show loads
    cfg = config.load(show(tmp_path, "library: songs\nsetlists:\n  friday: [Good]\n"))
    (w,) = cfg.warnings
    assert (w.file, w.line, w.severity) == (str(bad), 4, "warning")
    assert "no setlist uses this song" in w.message


def test_duplicate_titles_refused_only_where_a_setlist_is_ambiguous(tmp_path):
    song(tmp_path, "a", "title: Same\nstems:\n  - {file: a.wav, to: click}\n")
    song(tmp_path, "b", "title: Same\nstems:\n  - {file: b.wav, to: click}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(show(tmp_path, "library: songs\nsetlists:\n  x: [Same]\n"))
    err = [p for p in e.value.problems if p.severity == "error"]
    assert len(err) == 1 and "2 songs are titled 'Same'" in err[0].message
    cfg = config.load(show(tmp_path, "library: songs\nsetlists:\n  x: [a, b]\n"))
    assert [s.stems[0].file.name for s in cfg.songs] == ["a.wav", "b.wav"]
    assert any("also the title" in w.message for w in cfg.warnings)


def test_library_problems(tmp_path):
    song(tmp_path, "s", "title: S\nstems:\n  - {file: a.wav, to: click}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(show(tmp_path, "library: [songs, nowhere]\nsetlists:\n  x: [{song: S, "
                                   "gains: {bass: -3}, after: later}]\n"
                                   "setlist: y\n"))
    keys = {p.key for p in e.value.problems}
    assert keys == {"library[1]", "setlists.x[0].gains.bass", "setlists.x[0].after",
                    "setlist"}
    gains = next(p for p in e.value.problems if p.key.endswith("bass"))
    assert "has no stem named 'bass'; its stems: a" in gains.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(config.ConfigError) as e:
        config.load(show(tmp_path, "library: empty\n"))
    assert "no song files" in e.value.problems[0].message


def test_setlist_action_in_controls_and_on_the_socket(tmp_path):
    song(tmp_path, "s", "title: S\nstems:\n  - {file: a.wav, to: click}\n")
    assert parse_action("setlist late show") == Action("setlist", "late show")
    assert request_action({"cmd": "setlist", "name": "x"}) == (Action("setlist", "x"), "")
    assert request_action({"cmd": "setlist"})[0] is None
    assert words_to_request(["setlist", "late", "show"]) == {"cmd": "setlist",
                                                             "name": "late show"}
    with pytest.raises(UserError, match="setlist needs a name"):
        words_to_request(["setlist"])
    base = "library: songs\nsetlists: {x: [S], y: [S]}\n"
    cfg = config.load(show(tmp_path, base + "footswitches: [{pin: 17, press: setlist y}]\n"))
    assert cfg.footswitches[0].press == Action("setlist", "y")
    with pytest.raises(config.ConfigError) as e:
        config.load(show(tmp_path, base + "footswitches: [{pin: 17, press: setlist z}]\n"))
    assert "there is no setlist 'z'; setlists: x, y" in e.value.problems[0].message
    cfg = config.load(show(tmp_path, base + "footswitches: [{pin: 17, press: goto s}]\n"))
    assert cfg.footswitches[0].press == Action("goto", "s")  # resolved when pressed
    with pytest.raises(config.ConfigError) as e:
        config.load(show(tmp_path, base + "footswitches: [{pin: 17, press: goto Nope}]\n"))
    assert "no setlist has a song titled 'Nope'" in e.value.problems[0].message


def wait_song(d: DaemonProcess, state: str, setlist: str, song: int) -> dict:
    return wait_for(lambda: (lambda st: st if (st["state"], st["setlist"], st["song"]) ==
                             (state, setlist, song) else None)(d.status()), 10,
                    f"{state} song {song} of {setlist}")


def test_daemon_plays_setlist_b_second_song_and_keeps_the_choice(jack_audio, tmp_path):
    """Setlist B is chosen through ctl while cued; play starts B's first song, next its
    second, which must be library song 1 exactly (one of its stems an ALAC M4A, decoded
    through PyAV); a choice while playing is refused; the choice survives a restart."""
    show_ = make_library(tmp_path, [4.0, 4.0, 4.0],
                         {"a": ["Song 1", "Song 2"], "b": ["song-3", "Song 1"]},
                         extra="state_file: state.json\n", alac=(0,))
    assert (tmp_path / "songs" / "song-1" / "pad.m4a").exists()  # decoded through PyAV
    with DaemonProcess(show_, jack_audio.environ()) as d:
        st = d.status()
        assert (st["setlist"], st["songs"], st["title"]) == ("a", 2, "Song 1")
        sl = d.ctl("setlists")
        assert [(x["name"], x["songs"], x["in_use"]) for x in sl["setlists"]] == [
            ("a", ["Song 1", "Song 2"], True), ("b", ["Song 3", "Song 1"], False)]
        reply = d.ctl({"cmd": "setlist", "name": "b"})
        assert reply["ok"], reply
        assert (reply["state"]["setlist"], reply["state"]["title"]) == ("b", "Song 3")
        assert not d.ctl({"cmd": "setlist", "name": "nope"})["ok"]
        d.ctl("play")
        time.sleep(0.6)
        refused = d.ctl({"cmd": "setlist", "name": "a"})
        assert not refused["ok"] and "stop first" in refused["error"]
        d.ctl("next")
        wait_song(d, "playing", "b", 2)
        time.sleep(1.0)
        w = d.status()["writer"]  # the writer's own cost per period, well inside a period
        assert w["periods"] > 100 and 0 < w["p50_us"] <= w["p99_us"] <= w["max_us"]
        assert w["p50_us"] < 256 / RATE * 1e6
        d.ctl("stop")
        time.sleep(0.3)
        # goto by title, in the setlist in use (case ignored as a setlist does)
        reply = d.ctl({"cmd": "goto", "song": "song 3"})
        assert reply["ok"] and (reply["state"]["song"], reply["state"]["title"]) == (1, "Song 3")
        miss = d.ctl({"cmd": "goto", "song": "Song 2"})  # in setlist a only
        assert not miss["ok"] and "no song titled 'Song 2'" in miss["error"]
    rec = jack_audio.stop()
    with judged(rec):
        first = find_song_start(rec.audio, show_.expected(2)[:64])
        assert first is not None, "setlist b's first song (library song 3) not heard"
        exp = show_.expected(0)
        at = find_song_start(rec.audio, exp[:64], first)
        assert at is not None, "setlist b's second song (library song 1) not heard"
        assert trace(rec, exp, at).song_end > 0.8 * RATE
    with DaemonProcess(show_, jack_audio.environ()) as d:  # the choice outlived the restart
        st = d.status()
        assert (st["setlist"], st["songs"]) == ("b", 2), d.log()[-800:]


def test_pair_follows_the_leaders_setlist_chosen_on_either_unit(jack_audio_factory, tmp_path):
    """A setlist chosen on the leader is taken by its follower (found by the setlist's hash
    among its own); one chosen on the follower is sent to the leader, and both switch."""
    from tests.test_protection import keyfile, peer, wait_both_protected
    ja = jack_audio_factory(seconds=40)
    jb = jack_audio_factory(seconds=40)
    key = keyfile(tmp_path / "peer.key")
    pa, pb = free_port(), free_port()
    lists = {"a": ["Song 1", "Song 2"], "b": ["Song 2"]}
    sa = make_library(tmp_path / "a", [3.0, 3.0], lists, extra=peer("leader", pa, pb, key))
    sb = make_library(tmp_path / "b", [3.0, 3.0], lists, extra=peer("follower", pb, pa, key))
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        wait_both_protected(a, b, timeout=15)
        assert a.ctl({"cmd": "setlist", "name": "b"})["ok"]
        wait_for(lambda: b.status()["setlist"] == "b", 5, "the follower on setlist b")
        wait_both_protected(a, b)
        reply = b.ctl({"cmd": "setlist", "name": "a"})
        assert reply["ok"] and "sent to the leader" in reply.get("message", ""), \
            (reply, b.log()[-2000:])
        wait_for(lambda: a.status()["setlist"] == "a", 5, "the leader on setlist a")
        wait_for(lambda: b.status()["setlist"] == "a", 5, "the follower back on setlist a")
        wait_both_protected(a, b)
        assert "setlist 'a' chosen (the leader's choice)" in b.log()


def test_library_example_loads():
    cfg = config.load(Path(__file__).parent.parent / "config" / "library-example" / "show.yaml")
    assert cfg.setlist == "friday" and [s.title for s in cfg.songs] == ["Opener", "Ballad"]
    acoustic = cfg.with_setlist("acoustic").songs
    assert [s.after for s in acoustic] == ["stop", "stop"]
    assert [st.gain_db for st in acoustic[1].stems if st.label == "keys"] == [-3.0, -3.0]
    assert cfg.routing_rules == (("pad|strings", "keys"),)


def test_sighup_picks_up_library_changes_between_songs(jack_audio, tmp_path):
    """A song folder added and named in the setlist, then SIGHUP: the daemon plays the new
    set, on the setlist chosen at run time; a song file broken on disk is refused with its
    file and line in the journal and the running set is kept."""
    import signal
    show_ = make_library(tmp_path, [2.0, 2.0], {"a": ["Song 1"], "b": ["Song 2"]})
    with DaemonProcess(show_, jack_audio.environ()) as d:
        assert d.ctl({"cmd": "setlist", "name": "b"})["ok"]
        new = tmp_path / "songs" / "encore"
        new.mkdir()
        (new / "song.yaml").write_text("title: Encore\nstems:\n"
                                       "  - {file: ../song-1/click.wav, to: click}\n")
        text = show_.config.read_text().replace("b: ['Song 2']", "b: ['Song 2', Encore]")
        show_.config.write_text(text)
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.status()["songs"] == 2, 5, "the reloaded setlist b")
        st = d.ctl("setlists")
        assert st["state"]["setlist"] == "b"
        assert [x["songs"] for x in st["setlists"]] == [["Song 1"], ["Song 2", "Encore"]]
        (new / "song.yaml").write_text("title: Encore\nstems:\n  - {file: x.wav, to: drums}\n")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload rejected" in d.log(), 5, "the reload refused")
        assert f"{new / 'song.yaml'}:3: stems[0].to: no output named 'drums'" in d.log()
        assert d.status()["songs"] == 2


def test_check_covers_the_library_and_sums_up_each_setlist(tmp_path, capsys):
    """check opens every song of the library: a stem missing from a song no setlist plays
    is a warning with that song file's path; one a setlist plays is an error; each
    setlist gets one line (songs, length, problems); --setlist narrows it."""
    import numpy as np
    import soundfile as sf

    from appliance.cli import main
    for name, secs in (("one", 1.0), ("two", 2.0), ("spare", 1.0)):
        d = tmp_path / "songs" / name
        song(tmp_path, name, f"title: {name.title()}\nstems:\n  - {{file: c.wav, to: click}}\n"
             "  - {file: missing.wav, to: cues}\n" if name == "spare" else
             f"title: {name.title()}\nstems:\n  - {{file: c.wav, to: click}}\n")
        sf.write(str(d / "c.wav"), np.full(int(secs * 48000), 0.1, np.float32), 48000)
    cfg = show(tmp_path, "library: songs\nsetlists:\n  a: [One, Two, One]\n  b: [Two]\n")
    assert main(["check", "--config", str(cfg), "--no-device"]) == 0
    out, err = capsys.readouterr()
    assert "setlist a (in use): 3 songs, 0:04.0, no problems" in out
    assert "setlist b: 1 songs, 0:02.0, no problems" in out
    assert "[in no setlist]" in out and "[a #1, a #3]" in out
    spare = tmp_path / "songs" / "spare" / "song.yaml"
    assert f"{spare}:4: stems[1].file:" in err and "no setlist plays this song" in err
    (tmp_path / "songs" / "two" / "c.wav").unlink()
    assert main(["check", "--config", str(cfg), "--no-device", "--setlist", "b"]) == 1
    out, err = capsys.readouterr()
    assert "setlist b: 1 songs" in out and "setlist a" not in out and "Spare" not in out
    two = tmp_path / "songs" / "two" / "song.yaml"
    assert f"{two}:3: stems[0].file:" in err and "file not found" in err
    assert main(["check", "--config", str(cfg), "--no-device", "--setlist", "c"]) == 1
    assert "there is no setlist 'c'" in capsys.readouterr().err


def test_stems_needing_conversion_are_converted_ahead_in_the_background(jack_audio, tmp_path):
    """A 44.1 kHz stem and an AAC stem (PyAV) of a song that is not cued are in the cache
    soon after start, converted by a low-priority child, before any song needs them; a
    setlist chosen later is warmed too."""
    import numpy as np
    import soundfile as sf

    from tests.showkit import encode_pyav
    show_ = make_library(tmp_path, [2.0, 2.0, 2.0], {"a": ["Song 1", "Song 2"], "b": ["Song 3"]})
    sf.write(str(tmp_path / "songs" / "song-2" / "extra.wav"),
             np.full(44100, 0.1, np.float32), 44100)
    encode_pyav(tmp_path / "songs" / "song-3" / "extra.m4a", "aac", 48000,
                np.full((48000, 1), 0.1))
    for n, f in ((2, "extra.wav"), (3, "extra.m4a")):
        yml = tmp_path / "songs" / f"song-{n}" / "song.yaml"
        yml.write_text(yml.read_text() + f"  - {{file: {f}, to: click}}\n")
    cache = tmp_path / ".backtrack-cache"
    with DaemonProcess(show_, jack_audio.environ()) as d:
        wait_for(lambda: any(cache.glob("extra-48000-*.wav")), 20, "song 2's stem in the cache")
        assert d.status()["state"] == "cued" and d.status()["song"] == 1  # nothing played
        wait_for(lambda: "the setlist's stems are converted" in d.log(), 10, "the warm-up done")
        assert d.ctl({"cmd": "setlist", "name": "b"})["ok"]
        wait_for(lambda: len(list(cache.glob("extra-48000-*.wav"))) == 2, 30,
                 "setlist b's AAC stem in the cache")

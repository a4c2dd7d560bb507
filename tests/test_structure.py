"""A song's structure: where jumps land, the count-in, the position text, and the song-file
keys that build it, each mistake reported with its file, line and key (pure: no audio)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config
from appliance.check import DeviceFacts, SongFacts, StemFacts, build_report
from appliance.structure import Section, Structure, parse_timecode, parse_when
from appliance.tempomap import Meter, TempoChange, TempoMap

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
BAR = 2 * RATE  # a 4/4 bar at 120

HEAD = """\
device: {channels: 8}
outputs: {click: 1, cue: 2, tracks: [3, 4], ltc: 5}
library: songs
"""
SONG = """\
title: X
stems:
  - {file: a.wav, to: tracks}
"""


def song_file(tmp_path: Path, body: str, name: str = "x") -> Path:
    d = tmp_path / "songs" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "song.yaml").write_text(SONG + body)
    return d / "song.yaml"


def show(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "show.yaml"
    p.write_text(HEAD + extra)
    return p


def load_song(tmp_path: Path, body: str, extra: str = ""):
    song_file(tmp_path, body)
    return config.load(show(tmp_path, extra)).songs[0]


def problems(path: Path) -> list[str]:
    with pytest.raises(config.ConfigError) as exc:
        config.load(path)
    return [str(p) for p in exc.value.problems if p.severity == "error"]


def simple(sections=(), count_in=0, start_s=0.0, when="bar") -> Structure:
    tempo = TempoMap([TempoChange(1, 120, Meter(4, 4))], start_s, RATE)
    secs = tuple(Section(n, tempo.frame_at(b), bar=b, beat=1) for n, b in sections)
    return Structure(tempo=tempo, sections=secs, count_in=count_in, jump_when=when)


# -- the model -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("now", "now"), ("Bar", "bar"), (" beat ", "beat"), ("section_end", "section_end"),
    ("2_bars", "2_bars"), ("1_bar", "1_bars"), ("04_bars", "4_bars"),
    ("0_bars", None), ("65_bars", None), ("bars", None), ("later", None), ("", None)])
def test_parse_when(text, want):
    assert parse_when(text) == want


def test_sections_find_and_end():
    st = simple([("intro", 1), ("Verse", 5), ("chorus", 13)])
    assert st.section_at(-1) == -1 and st.section_at(0) == 0
    assert st.section_at(4 * BAR - 1) == 0 and st.section_at(4 * BAR) == 1
    assert st.section_at(10**9) == 2
    assert st.find("verse") == 1 and st.find(" CHORUS") == 2 and st.find("bridge") is None
    assert st.section_end(0, 10**7) == 4 * BAR and st.section_end(2, 10**7) == 10**7


def test_boundary_for_every_when():
    st = simple([("intro", 1), ("verse", 5), ("chorus", 13)])
    end = 40 * BAR
    f = 5 * BAR + 30_000  # bar 6 beat 2 and a bit
    assert st.boundary(f, "now", end) == f
    assert st.boundary(f, "beat", end) == 5 * BAR + 48_000
    assert st.boundary(5 * BAR + 24_000, "beat", end) == 5 * BAR + 48_000  # strictly after
    assert st.boundary(f, "bar", end) == 6 * BAR
    assert st.boundary(5 * BAR, "bar", end) == 6 * BAR  # on a bar line: the next one
    assert st.boundary(f, "section_end", end) == 12 * BAR
    assert st.boundary(f, "1_bars", end) == 6 * BAR
    assert st.boundary(f, "4_bars", end) == 9 * BAR
    assert st.boundary(f, "2_bar", end) == 7 * BAR
    assert st.boundary(f, "section_end", 20 * BAR) == 12 * BAR
    assert st.boundary(13 * BAR, "section_end", 20 * BAR) == 20 * BAR  # the last: the end
    assert st.boundary(-100, "section_end", end) == 0  # before the first: where it starts
    # past the song's end
    assert st.boundary(f, "4_bars", 8 * BAR) is None
    assert st.boundary(f, "bar", 6 * BAR) == 6 * BAR
    with pytest.raises(ValueError, match="not a point to jump at"):
        st.boundary(f, "later", end)


def test_boundary_without_tempo_or_sections_says_why():
    st = Structure(tempo=None, sections=(Section("a", 0), Section("b", 5 * RATE)),
                   jump_when="section_end")
    assert st.boundary(RATE, "section_end", 10 * RATE) == 5 * RATE
    assert st.boundary(RATE, "now", 10 * RATE) == RATE
    for when in ("beat", "bar", "2_bars"):
        with pytest.raises(ValueError, match="needs a tempo"):
            st.boundary(RATE, when, 10 * RATE)
    assert st.position_text(RATE) == "" and st.count_in_start() == 0
    with pytest.raises(ValueError, match="needs the song's sections"):
        simple().boundary(0, "section_end", 10 * RATE)


def test_count_in_and_position_text():
    assert simple().count_in_start() == 0
    assert simple(count_in=1).count_in_start() == -BAR
    assert simple(count_in=2).count_in_start() == -2 * BAR
    # audio before bar 1 covers part of the count-in: play starts at the audio's first frame
    # only where it covers it all
    assert simple(count_in=1, start_s=1.0).count_in_start() == -RATE
    assert simple(count_in=1, start_s=3.0).count_in_start() == 0
    st = simple()
    assert st.position_text(12 * BAR + 48_000) == "13.3"
    assert st.position_text(-1) == "0.4"


@pytest.mark.parametrize("text, fps, drop, want", [
    ("01:00:00:00", 25, False, "01:00:00:00"), ("00:59:59;24", 25, False, "00:59:59:24"),
    ("00:10:00:00", 29.97, True, "00:10:00:00"), ("00:01:00:02", 29.97, True, "00:01:00:02"),
    ("00:01:00:00", 29.97, True, None), ("00:00:00:25", 25, False, None),
    ("24:00:00:00", 30, False, None), ("1:00:00:00", 25, False, None)])
def test_timecode(text, fps, drop, want):
    assert parse_timecode(text, fps, drop)[0] == want


# -- the song-file keys --------------------------------------------------------------------

def test_a_song_without_structure_keys_has_none(tmp_path):
    song = load_song(tmp_path, "")
    assert song.structure is None and song.tempo is None


def test_tempo_alone_is_a_one_change_map(tmp_path):
    song = load_song(tmp_path, "tempo: 96\nmeter: 3/4\n")
    assert song.tempo == 96.0
    st = song.structure
    assert st.tempo.changes == (TempoChange(1, 96.0, Meter(3, 4), line=4),)
    assert st.sections == () and st.count_in == 0 and st.jump_when == "bar"
    assert st.crossfade_ms == 10.0 and st.click is None and st.ltc is None


def test_a_full_structure(tmp_path):
    song = load_song(tmp_path, """\
tempo_map: [{bar: 1, bpm: 120, meter: 4/4}, {bar: 17, bpm: 90}, {bar: 25, ramp_to: 120, bars: 4}]
start: 0.5
sections:
  - {name: intro, at: 1}
  - {name: verse, at: 5}
  - {name: chorus, at: "13.3"}
  - {name: tag, at: 83.5s}
click: {to: click, mode: auto, subdivision: 2, sounds: {accent: hi.wav}}
count_in: 1
ltc: {to: ltc, fps: 29.97, start: 01:00:00:02}
jump_when: 4_bars
crossfade_ms: 25
guide: {to: [cue], files: {Chorus: cues/chorus.wav}}
""")
    st, tm = song.structure, song.structure.tempo
    assert song.tempo == 120.0
    assert [c.bar for c in tm.changes] == [1, 17, 25]
    assert tm.changes[2] == TempoChange(25, 90.0, Meter(4, 4), 120.0, 4, line=4)
    assert [(s.name, s.frame, s.bar, s.beat, s.line) for s in st.sections] == [
        ("intro", 24000, 1, 1, 7), ("verse", tm.frame_at(5), 5, 1, 8),
        ("chorus", tm.frame_at(13, 3), 13, 3, 9), ("tag", 83.5 * RATE, None, None, 10)]
    assert (st.count_in, st.jump_when, st.crossfade_ms) == (1, "4_bars", 25.0)
    base = tmp_path / "songs" / "x"
    assert (st.click.to, st.click.outputs, st.click.mode, st.click.subdivision) == (
        (0,), ("click",), "auto", 2)
    assert st.click.sounds == {"accent": base / "hi.wav"}
    assert (st.ltc.to, st.ltc.fps, st.ltc.drop_frame, st.ltc.start) == (
        (4,), 29.97, True, "01:00:00:02")
    assert st.guide.to == (1,) and st.guide.files == {"chorus": base / "cues/chorus.wav"}
    assert st.count_in_start() == 24000 - BAR
    assert hash(song) == hash(song)  # check keys songs in a dict


def test_show_defaults_and_a_songs_own_keys(tmp_path):
    extra = ("click: {to: click, level_db: -3}\ncount_in: 2\njump_when: 2_bars\n"
             "crossfade_ms: 30\nltc: {to: ltc, fps: 25}\n"
             "guide: {to: cue, files: {CHORUS: cues/c.wav}}\n")
    song_file(tmp_path, "tempo: 120\nsections: [{name: Chorus, at: 5}]\n", "a")
    song_file(tmp_path, "click: off\nltc: off\ncount_in: 0\njump_when: now\n", "b")
    song_file(tmp_path, "click: {to: cue, mode: stem}\ncrossfade_ms: 5\n", "c")
    a, b, c = config.load(show(tmp_path, extra)).songs
    sa, sb, sc = a.structure, b.structure, c.structure
    assert (sa.click.level_db, sa.count_in, sa.jump_when, sa.crossfade_ms) == (-3.0, 2, "2_bars",
                                                                              30.0)
    assert sa.ltc.fps == 25.0 and sa.guide.files == {"Chorus": tmp_path / "cues/c.wav"}
    assert sa.count_in_start() == -2 * BAR
    assert sb.click.mode == "off" and sb.ltc is None and sb.count_in == 0
    assert sb.jump_when == "now"
    # no tempo: a bar-counting default falls back to section_end; the count-in is moot
    assert sc.click.mode == "stem" and sc.click.to == (1,) and sc.jump_when == "section_end"
    assert sc.crossfade_ms == 5.0 and sc.count_in_start() == 0


def test_a_setlist_changes_the_count_in(tmp_path):
    song_file(tmp_path, "tempo: 120\ncount_in: 1\n", "a")
    song_file(tmp_path, "tempo: 120\nstart: 4\nsections: [{name: pre, at: 0}]\n", "b")
    song_file(tmp_path, "", "c")
    cfg = config.load(show(tmp_path, "setlists:\n  s: [a, {song: a, count_in: 3}, "
                                     "{song: c, count_in: 0}]\n"))
    assert [s.structure.count_in if s.structure else None for s in cfg.songs] == [1, 3, None]
    p = show(tmp_path, "setlists:\n  s:\n    - {song: b, count_in: 1}\n"
                       "    - {song: c, count_in: 2}\n    - {song: a, count_in: 9}\n")
    errs = problems(p)
    assert any(f"{p}:6: setlists.s[0].count_in: 'X' has section 'pre' before bar 1: inside a "
               "1-bar count-in" in e for e in errs), errs
    assert any(f"{p}:7: setlists.s[1].count_in: 'X' has no tempo" in e for e in errs), errs
    assert any(f"{p}:8: setlists.s[2].count_in: 9 is out of range; valid: 0 to 8" in e
               for e in errs), errs


BAD = [
    # (song-file body; the line marked #! is where the problem is), key, what the message says
    ("tempo: 500  #!", "tempo", "valid: 20 to 400"),
    ("tempo: 0  #!", "tempo", "valid: 20 to 400"),
    ("tempo: 120\nmeter: 4  #!", "meter", "e.g. 4/4, 3/4, 6/8, 7/8"),
    ("tempo: 120\ntempo_map: [{bar: 1, bpm: 90}]  #!", "tempo_map", "not both"),
    ("tempo_map:\n  - {bar: 1, bpm: 120}\n  - {bar: 17.5, bpm: 90}  #!", "tempo_map[1].bar",
     "bar is a whole number from 1"),
    ("tempo_map:\n  - {bar: 2, bpm: 120}  #!", "tempo_map[0].bar", "it is at bar 1"),
    ("tempo_map:\n  - {bar: 1, meter: 3/4}  #!", "tempo_map[0].bpm", "is required"),
    ("tempo_map:\n  - {bar: 1, bpm: 120}\n  - {bar: 17, bpm: 90}\n  - {bar: 9, bpm: 100}  #!",
     "tempo_map[2].bar", "changes go in bar order: bar 9 after bar 17 (tempo_map[1])"),
    ("tempo_map:\n  - {bar: 1, bpm: 120}\n  - {bar: 9, ramp_to: 140, bars: 8}  #!\n"
     "  - {bar: 13, bpm: 90}", "tempo_map[1].bars", "lasts to bar 17, past the next change"),
    ("tempo_map:\n  - {bar: 1, bpm: 120}\n  - {bar: 9, ramp_to: 140}  #!", "tempo_map[1].bars",
     "a ramp needs bars"),
    ("tempo_map:\n  - {bar: 1, bpm: 120}\n  - {bar: 9, bpm: 19}  #!", "tempo_map[1].bpm",
     "valid: 20 to 400"),
    ("tempo_map:\n  - {bar: 1, bpm: 120}\n  - {bar: 9, meter: 5/5}  #!", "tempo_map[1].meter",
     "not a meter"),
    ("start: 2  #!", "start", "only with the song's tempo"),
    ("sections:\n  - {name: a, at: 5}  #!", "sections[0].at",
     "bar positions need the song's tempo"),
    ("tempo: 120\nsections:\n  - {name: a, at: 13.10}  #!", "sections[0].at",
     "beat 10 is not one of its beats; valid: 13.1 to 13.4"),
    ("tempo: 120\nmeter: 3/4\nsections:\n  - {name: a, at: '2.4'}  #!", "sections[0].at",
     "bar 2 is in 3/4"),
    ("tempo: 120\nsections:\n  - {name: a, at: 13.0}  #!", "sections[0].at", "valid: 13.1"),
    ("tempo: 120\nsections:\n  - {name: a, at: soon}  #!", "sections[0].at",
     "write a bar (17), bar.beat (13.3) or seconds"),
    ("tempo: 120\nsections:\n  - {name: Verse, at: 1}\n  - {name: verse, at: 5}  #!",
     "sections[1].name", "also the name of sections[0]"),
    ("tempo: 120\nsections:\n  - {name: a, at: 9}\n  - {name: b, at: 5}  #!",
     "sections[1].at", "sections go in song order: 'b' at bar 5 is not after 'a'"),
    ("tempo: 120\nsections:\n  - {name: a, at: 9}\n  - {name: b, at: 16s}  #!",
     "sections[1].at", "is not after 'a'"),
    ("tempo: 120\nsections:\n  - {name: next_section, at: 9}  #!", "sections[0].name",
     "a word of the jump command"),
    ("tempo: 120\ncount_in: 1\nstart: 4\nsections:\n  - {name: a, at: 0}  #!",
     "sections[0].at", "inside the count-in (count_in: 1"),
    ("tempo: 120\ncount_in: 1\nstart: 2\nsections:\n  - {name: a, at: 1.5s}  #!", "sections[0].at",
     "inside the count-in"),
    ("tempo: 120\nsections:\n  - {name: a, at: 0}  #!", "sections[0].at",
     "before the audio begins"),
    ("tempo: 120\ncount_in: 9  #!", "count_in", "valid: 0 to 8"),
    ("count_in: 1  #!", "count_in", "the song has none"),
    ("jump_when: later  #!", "jump_when", "use now, beat, bar, section_end or N_bars"),
    ("jump_when: 2_bars  #!", "jump_when", "the song needs a tempo"),
    ("crossfade_ms: 2  #!", "crossfade_ms", "valid: 5 to 50"),
    ("crossfade_ms: 51  #!", "crossfade_ms", "valid: 5 to 50"),
    ("click: {to: click, mode: loud}  #!", "click.mode", "use one of: auto, stem, off"),
    ("click: {to: clik}  #!", "click.to", "no output named 'clik'; outputs are: click, cue"),
    ("click: {mode: auto}  #!", "click.to", "is required"),
    ("click: {to: click, subdivision: 9}  #!", "click.subdivision", "valid: 1 to 8"),
    ("click: {to: click, sounds: {boom: a.wav}}  #!", "click.sounds.boom",
     "valid keys here: accent, beat, sub"),
    ("ltc: {to: ltc, fps: 28}  #!", "ltc.fps", "use one of: 24, 25, 29.97, 30"),
    ("ltc: {to: ltc}  #!", "ltc.fps", "is required"),
    ("ltc: {to: ltc, fps: 25, drop_frame: true}  #!", "ltc.drop_frame", "only at 29.97"),
    ("ltc: {to: ltc, fps: 25, start: 25:00:00:00}  #!", "ltc.start", "hours 00-23"),
    ("ltc: {to: ltc, fps: 29.97, start: '00:01:00:00'}  #!", "ltc.start",
     "does not exist in drop-frame"),
    ("guide: {to: cue, mode: loud}  #!", "guide.mode", "use one of: auto, off"),
    ("tempo: 120\nsections: [{name: a, at: 1}]\nguide:\n  to: cue\n  files: {chorus: c.wav}  #!",
     "guide.files.chorus", "no section named 'chorus'; its sections: a"),
]


@pytest.mark.parametrize("body, key, says", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_song_keys_name_file_line_and_key(tmp_path, body, key, says):
    f = song_file(tmp_path, body)
    line = (SONG + body).splitlines().index(next(x for x in (SONG + body).splitlines()
                                                 if "#!" in x)) + 1
    errs = problems(show(tmp_path))
    want = f"{f}:{line}: {key}: "
    assert any(e.startswith(want) and says in e for e in errs), (want, says, errs)


def test_inline_songs_and_show_defaults_are_reported_in_the_show_file(tmp_path):
    p = tmp_path / "show.yaml"
    p.write_text("""\
device: {channels: 8}
outputs: {click: 1, ltc: 5}
click: {to: click, mode: sometimes}
ltc: {to: ltc, fps: 25, start: "00:00:00:30"}
jump_when: whenever
count_in: 10
crossfade_ms: 100
songs:
  - title: One
    tempo: 120
    sections: [{name: a, at: 9}, {name: b, at: 5}]
    stems:
      - {file: a.wav, to: click}
""")
    errs = problems(p)
    for line, key, says in [(3, "click.mode", "auto, stem, off"), (4, "ltc.start", "00-24"),
                            (5, "jump_when", "N_bars"), (6, "count_in", "0 to 8"),
                            (7, "crossfade_ms", "5 to 50"),
                            (11, "songs[0].sections[1].at", "song order")]:
        assert any(e.startswith(f"{p}:{line}: {key}: ") and says in e for e in errs), (key, errs)


# -- check: what needs the song's length ---------------------------------------------------

def test_check_refuses_sections_and_ramps_past_the_songs_end(tmp_path):
    f = song_file(tmp_path, """\
tempo_map:
  - {bar: 1, bpm: 120}
  - {bar: 9, ramp_to: 140, bars: 4}
sections:
  - {name: intro, at: 1}
  - {name: outro, at: 21}
""")
    cfg = config.load(show(tmp_path))
    song = cfg.songs[0]
    frames = 30 * RATE  # bar 16 or so: the ramp (bars 9-12) fits, bar 21 does not
    stems = [StemFacts(index=0, file=str(song.stems[0].file), to=["tracks"], channels=[2, 3],
                       gain_db=0.0, line=3, file_channels=2, file_rate=RATE, frames=frames)]
    facts = SongFacts(index=0, title="X", after="stop", line=1, stems=stems, frames=frames,
                      peaks=[0.5] * 8, file=str(f), key="", setlists=["all #1"],
                      structure=song.structure)
    asked = {"rate": RATE, "channels": 8, "format": "S32_LE", "period": 256, "periods": 3}
    rep = build_report(cfg, [facts], DeviceFacts("null", "ok", asked=asked, got=asked))
    assert [(p["file"], p["line"], p["key"]) for p in rep["problems"]] == [
        (str(f), 9, "sections[1].at")]
    assert "section 'outro' starts at bar 21, 0:37.1, past the song's end: the song lasts " \
           "0:30.0" in rep["problems"][0]["message"]
    facts.frames = stems[0].frames = 20 * RATE  # now the ramp ends past it too
    rep = build_report(cfg, [facts], DeviceFacts("null", "ok", asked=asked, got=asked))
    assert [(p["line"], p["key"]) for p in rep["problems"]] == [
        (9, "sections[1].at"), (6, "tempo_map[1].bars")]
    assert "the ramp from bar 9 to 140 BPM ends at bar 13" in rep["problems"][1]["message"]


# -- the example ---------------------------------------------------------------------------

def test_the_example_song_loads():
    cfg = config.load(ROOT / "config" / "library-example" / "show.yaml")
    assert cfg.warnings == ()
    saturday = cfg.with_setlist("saturday").songs
    closer = saturday[1]
    st = closer.structure
    assert closer.title == "Closer" and closer.tempo == 96.0
    assert [s.name for s in st.sections] == ["intro", "verse", "chorus", "bridge", "outro", "tag"]
    assert st.sections[4].bar == 48 and st.sections[4].beat == 6
    assert st.tempo.meter_at(st.sections[3].frame) == Meter(6, 8)
    assert st.count_in == 2 and st.count_in_start() == st.tempo.frame_at(-1) < 0
    lib = next(s for s in cfg.library if s.title == "Closer")
    assert lib.structure.count_in == 1  # the song file's, where the setlist says nothing
    assert (st.click.mode, st.click.subdivision, st.ltc.fps, st.ltc.start) == (
        "auto", 2, 25.0, "01:00:00:00")
    assert st.jump_when == "2_bars" and st.crossfade_ms == 15.0
    assert set(st.guide.files) == {"chorus"}
    # the show's click reaches the songs that say nothing of it
    opener = cfg.songs[0]
    assert opener.structure.click.mode == "auto" and opener.structure.jump_when == "bar"


def test_structure_actions_parse_and_round_trip():
    """jump/vamp/cancel from every control: the config's text, the socket's JSON and ctl's
    words all make the same Action, and str() parses back (the pair's wire relies on it)."""
    from appliance.actions import parse_action, request_action
    from appliance.ctl import words_to_request
    for text in ("jump chorus", "jump verse 1 bar", "jump next_section now", "vamp", "vamp 2",
                 "cancel"):
        a = parse_action(text)
        assert a is not None and parse_action(str(a)) == a, text
    assert request_action({"cmd": "jump", "to": "chorus", "when": "bar"})[0] == \
        parse_action("jump chorus bar")
    assert request_action({"cmd": "vamp", "bars": 2})[0] == parse_action("vamp 2")
    assert request_action({"cmd": "vamp", "bars": 0})[0] is None
    assert request_action({"cmd": "jump"})[0] is None
    assert words_to_request(["jump", "verse", "1", "4_bars"]) == \
        {"cmd": "jump", "to": "verse 1 4_bars"}
    assert words_to_request(["vamp", "4"]) == {"cmd": "vamp", "bars": 4}
    assert words_to_request(["cancel"]) == {"cmd": "cancel"}

"""`backtrack check` and the cache warmer on what a song's structure plays besides its stems:
click samples and recorded cues that cannot be read (error, with the file and key that
name them), a count-in without a click (warning), and the voice guide's spoken cues, which
both make into the cache with espeak-ng (a cue that cannot be made: a warning naming the
song and section). The report's verdicts are also checked from facts alone (pure)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from appliance import warmcache
from appliance.audio.overlays import spoken_cues_cached
from appliance.audio.voiceguide import cached_spoken
from appliance.check import AssetFacts, DeviceFacts, SongFacts, build_report
from appliance.config import load
from appliance.structure import ClickSpec, GuideSpec, Section, Structure
from appliance.tempomap import TempoChange, TempoMap

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000

SHOW = """\
device: {name: "null", channels: 4, rate: 48000, format: S16_LE}
outputs: {tracks: 1, click: 2, cue: 3}
click:
  to: click
  sounds: {accent: clicks/accent.wav, beat: clicks/beat.wav}
songs:
  - title: One
    stems: [{file: a.wav, to: tracks}]
    tempo: 120
    sections: [{name: intro, at: 1}, {name: Chorus, at: 2}]
    guide: {to: cue, files: {CHORUS: cues/chorus.wav}}
  - title: Two
    stems: [{file: a.wav, to: tracks}]
    tempo: 120
    count_in: 2
    click: off
    sections: [{name: verse, at: 1}, {name: bridge, at: 2}]
    guide: {to: cue, count: false}
"""


@pytest.fixture
def espeak() -> str:
    """espeak-ng is part of the machine (`make deps`): its absence is a failure, not a skip."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is not installed: run `make deps` (it installs espeak-ng)"
    return exe


def tone(seconds: float, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def make_show(d: Path, text: str = SHOW) -> Path:
    sf.write(str(d / "a.wav"), tone(4.0, 0.2), RATE, subtype="PCM_16")
    (d / "clicks").mkdir(exist_ok=True)
    sf.write(str(d / "clicks" / "beat.wav"), tone(0.02), RATE)
    (d / "cues").mkdir(exist_ok=True)
    cfg = d / "show.yaml"
    cfg.write_text(text)
    return cfg


def check(cfg: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "appliance", "check", "--config", str(cfg),
                        "--no-device", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=60, env={**os.environ, **(env or {})})
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r


def test_missing_samples_are_errors_naming_file_and_key(tmp_path, espeak):
    cfg = make_show(tmp_path)
    r = check(cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr
    # the show's click (song One's; Two has click: off), at the show file's line
    assert err.count("click.sounds.accent") == 1
    assert (f"{cfg}:5: click.sounds.accent: accent sound {tmp_path / 'clicks/accent.wav'}: "
            "file not found; the built-in accent sound plays instead") in err
    assert "click.sounds.beat" not in err  # that one is there
    # the song's recorded cue, under the key as written (CHORUS), the section as named
    assert (f"{cfg}:11: songs[0].guide.files.CHORUS: cue {tmp_path / 'cues/chorus.wav'}: "
            "file not found; the voice guide does not announce 'Chorus'") in err
    # a count-in with no click to count it
    assert (f"{cfg}:15: songs[1].count_in: count_in: 2 counts in silently: 'Two' has no "
            "click") in err
    assert "NOT PLAYABLE: 2 problems" in r.stdout
    # the spoken cues are in the cache now, for the decoder to read
    cache = tmp_path / ".backtrack-cache"
    for name in ("intro", "verse", "bridge"):
        assert cached_spoken(name, RATE, cache)[0] is not None, name
    assert cached_spoken("Chorus", RATE, cache)[0] is None  # it has a recording
    assert "voice guide: spoken cues in the cache for intro\n" in r.stdout
    assert "voice guide: spoken cues in the cache for verse, bridge\n" in r.stdout
    rep = json.loads(check(cfg, "--json").stdout)
    assert [p["key"] for p in rep["problems"]] == ["songs[0].guide.files.CHORUS",
                                                   "click.sounds.accent"]
    assert rep["songs"][1]["spoken_cues"] == ["verse", "bridge"]
    assert [w["key"] for w in rep["songs"][1]["warnings"]] == ["songs[1].count_in"]


def test_good_samples_and_cues_pass(tmp_path, espeak):
    cfg = make_show(tmp_path)
    sf.write(str(tmp_path / "clicks" / "accent.wav"), tone(0.02), RATE)
    sf.write(str(tmp_path / "cues" / "chorus.wav"), tone(0.5), RATE)
    cfg.write_text(SHOW.replace("    count_in: 2\n", ""))
    r = check(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""


def test_spoken_cue_not_made_is_a_warning_naming_song_and_sections(tmp_path):
    cfg = make_show(tmp_path)
    sf.write(str(tmp_path / "clicks" / "accent.wav"), tone(0.02), RATE)
    sf.write(str(tmp_path / "cues" / "chorus.wav"), tone(0.5), RATE)
    cfg.write_text(SHOW.replace("    count_in: 2\n", ""))
    r = check(cfg, env={"PATH": str(tmp_path / "no-espeak-here")})
    assert r.returncode == 0, r.stdout + r.stderr  # it plays; the guide is quieter
    err = r.stderr
    assert (f"{cfg}:10: songs[0].sections[0]: no spoken cue for section 'intro' of 'One': "
            "espeak-ng is not installed (apt install espeak-ng); the voice guide does not "
            "announce it") in err
    assert (f"{cfg}:16: songs[1].sections[0]: no spoken cue for sections 'verse', 'bridge' "
            "of 'Two': espeak-ng is not installed") in err
    assert "2 warning(s)" in err


def test_library_song_keys_and_a_setlist_count_in(tmp_path, espeak):
    """In a song file the key has no `songs[i].` prefix and the file is the song file; a
    setlist's count_in is pointed at in the setlist."""
    d = tmp_path / "songs" / "ballad"
    d.mkdir(parents=True)
    sf.write(str(d / "a.wav"), tone(4.0, 0.2), RATE)
    song = d / "song.yaml"
    song.write_text("title: Ballad\nstems: [{file: a.wav, to: tracks}]\ntempo: 120\n"
                    "click:\n  to: click\n  sounds:\n    sub: tick.wav\n")
    cfg = tmp_path / "show.yaml"
    cfg.write_text('device: {name: "null", channels: 2, rate: 48000, format: S16_LE}\n'
                   "outputs: {tracks: 1, click: 2}\nlibrary: songs\n"
                   "setlists:\n  friday:\n    - {song: Ballad, count_in: 1}\n")
    r = check(cfg)
    assert r.returncode == 1
    assert (f"{song}:7: click.sounds.sub: sub sound {d / 'tick.wav'}: file not found; the "
            "built-in sub sound plays instead") in r.stderr
    song.write_text(song.read_text().replace("click:\n  to: click\n  sounds:\n    sub: tick.wav\n",
                                             "click: off\n"))
    r = check(cfg)
    assert r.returncode == 0, r.stderr
    assert (f"{cfg}:6: setlists.friday[0].count_in: count_in: 1 counts in silently: 'Ballad' "
            "has no click") in r.stderr


# -- the pure report -----------------------------------------------------------------------

def facts(index: int, title: str, st: Structure, setlists: list[str], **kw) -> SongFacts:
    return SongFacts(index=index, title=title, after="stop", line=10 + index, stems=[],
                     frames=8 * RATE, peaks=[0.1, 0.1], key=f"songs[{index}]",
                     setlists=setlists, structure=st, **kw)


def test_report_grades_samples_cues_and_count_in(tmp_path):
    cfg = load(make_show(tmp_path))
    tempo = TempoMap([TempoChange(1, 120)], 0.0, RATE)
    secs = (Section("verse", 0, line=20), Section("bridge", RATE, line=21),
            Section("coda", 2 * RATE, line=22))
    clicked = Structure(tempo, secs, click=ClickSpec(to=(1,)), guide=GuideSpec(to=(2,)))
    silent_count = Structure(tempo, secs, count_in=2, guide=GuideSpec(to=(2,)))
    shared = AssetFacts("accent sound", "/x/acc.wav", None, 5, "click.sounds.accent",
                        problem="accent sound /x/acc.wav: file not found", shared=True,
                        fallback="the built-in accent sound plays instead")
    long = AssetFacts("beat sound", "/x/b.wav", "/lib/s.yaml", 7, "click.sounds.beat",
                      note="beat sound /x/b.wav: longer than 1 s; only its start plays")
    songs = [
        facts(0, "Lib only", clicked, [], assets=[shared]),
        facts(1, "Set", clicked, ["all #1"], assets=[shared, long],
              unspoken=[("verse", "espeak-ng failed: no voice"),
                        ("coda", "espeak-ng failed: no voice")]),
        facts(2, "Counts", silent_count, ["all #2"],
              where={"count_in": (None, 30, "songs[2].count_in")}),
    ]
    rep = build_report(cfg, songs, DeviceFacts("null", "skipped"))
    # the show file's click sample: one error (a setlist song plays it), not one per song
    assert [(p["line"], p["key"], p["severity"]) for p in rep["problems"]] == [
        (5, "click.sounds.accent", "error")]
    assert rep["problems"][0]["message"].endswith("; the built-in accent sound plays instead")
    warn = {w["key"]: w for w in rep["warnings"]}
    assert warn["click.sounds.beat"]["file"] == "/lib/s.yaml"
    cue = warn["songs[1].sections[0]"]
    assert cue["line"] == 20 and cue["message"].startswith(
        "no spoken cue for sections 'verse', 'coda' of 'Set': espeak-ng failed: no voice")
    count = warn["songs[2].count_in"]
    assert count["line"] == 30 and "count_in: 2 counts in silently: 'Counts' has no click" \
        in count["message"]
    assert len(rep["warnings"]) == 3
    # only in no setlist: the same sample is a warning
    rep = build_report(cfg, songs[:1], DeviceFacts("null", "skipped"))
    assert rep["playable"] and [w["key"] for w in rep["warnings"]] == ["click.sounds.accent"]


# -- the cache warmer ----------------------------------------------------------------------

def test_warmer_speaks_the_setlists_cues_into_the_cache(tmp_path, espeak, monkeypatch):
    cfg = load(make_show(tmp_path))
    cache = cfg.cache_dir
    monkeypatch.setenv("PATH", str(tmp_path / "no-espeak-here"))
    made, failed = warmcache.warm_cues(cfg)
    assert made == 0 and failed == [
        "song 'One': no spoken cue for section 'intro': espeak-ng is not installed "
        "(apt install espeak-ng)",
        "song 'Two': no spoken cue for section 'verse': espeak-ng is not installed "
        "(apt install espeak-ng)",
        "song 'Two': no spoken cue for section 'bridge': espeak-ng is not installed "
        "(apt install espeak-ng)"]
    assert not any(spoken_cues_cached(s, RATE, cache) for s in cfg.songs)
    monkeypatch.undo()
    assert warmcache.warm_cues(cfg) == (3, [])
    assert all(spoken_cues_cached(s, RATE, cache) for s in cfg.songs)
    for name in ("intro", "verse", "bridge"):
        assert cached_spoken(name, RATE, cache)[0] is not None, name


def test_warmer_child_process_makes_cues_and_says_what_it_could_not(tmp_path, espeak):
    cfg = make_show(tmp_path)

    def run(env: dict) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance.warmcache", "--config",
                               str(cfg)], capture_output=True, text=True, cwd=ROOT,
                              timeout=60, env={**os.environ, **env})

    r = run({"PATH": str(tmp_path / "no-espeak-here")})
    assert r.returncode == 1
    assert "song 'Two': no spoken cue for section 'bridge': espeak-ng is not installed" \
        in r.stderr
    r = run({})
    assert r.returncode == 0, r.stderr
    assert cached_spoken("bridge", RATE, tmp_path / ".backtrack-cache")[0] is not None


def test_count_in_is_spoken_on_its_beats(tmp_path):
    """With the guide on and a count-in, the count's numbers are spoken into the cache with
    the section names, and the decoder's overlay has each one starting on its beat."""
    from appliance.audio.overlays import count_words, overlays_for, spoken_sections
    from appliance.audio.voiceguide import spoken
    tm = TempoMap([TempoChange(1, 120.0)], 0.0, RATE)
    st = Structure(tempo=tm, sections=(Section("verse", 0),), count_in=1,
                   guide=GuideSpec(to=(0,), outputs=("cue",)))
    from appliance.songfile import Song
    song = Song(title="T", stems=(), structure=st)
    words = count_words(song)
    assert [w for _f, w in words] == ["one", "two", "three", "four"]
    assert [f for f, _w in words] == [-96000, -72000, -48000, -24000]
    assert spoken_sections(song) == ["one", "two", "three", "four", "verse"]
    for w in spoken_sections(song):
        assert spoken(w, RATE, tmp_path)[0] is not None
    ov = overlays_for(song, RATE, tmp_path, 16384)
    mix = np.zeros((16384, 1), np.float32)
    for f, _w in words:
        mix.fill(0.0)
        ov.render(f - 100, mix)
        assert not mix[:100].any() and np.abs(mix[100:2500]).max() > 0.05, f
    quiet = Structure(tempo=tm, count_in=1, guide=GuideSpec(to=(0,), count=False))
    assert count_words(Song(title="Q", stems=(), structure=quiet)) == []

"""`backtrack import`: a folder of stems as a store or a DAW delivers it becomes a song file
that routes each stem where a band expects it, says why, and loads in the show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from appliance.cli import main
from appliance.config import load
from appliance.importer import BUILTIN_RULES, Show, decide, load_show, split_side, title_of
from appliance.library import read_song_file

SHOW = """\
device: {channels: 8}
outputs:
  click: 1
  cues: 2
  tracks: [3, 4]
  bass: 5
  keys: [6, 7]
routing_rules:
  "^pad": tracks
"""

STEMS = {"Click": 1, "Guide": 1, "Bass": 1, "Keys L": 1, "Keys R": 1, "Pad": 2}


def wav(path: Path, channels: int, seed: int = 0) -> Path:
    """A tiny stem of seeded noise: enough for libsndfile to say how many channels."""
    noise = np.random.default_rng(seed).standard_normal((480, channels)) * 0.1
    sf.write(str(path), noise.astype("float32"), 48000, subtype="PCM_16")
    return path


def song_folder(root: Path, name: str = "Song - 128 BPM",
                stems: dict[str, int] | None = None) -> Path:
    folder = root / "lib" / name
    folder.mkdir(parents=True)
    for i, (stem, channels) in enumerate((stems or STEMS).items()):
        wav(folder / f"{stem}.wav", channels, seed=i)
    return folder


def show_file(root: Path, text: str = SHOW, name: str = "show.yaml") -> Path:
    path = root / name
    path.write_text(text)
    return path


def stems_of(song: Path) -> list[dict]:
    return yaml.safe_load(song.read_text())["stems"]


def run(capsys, *args: str | Path) -> tuple[int, str, str]:
    rc = main(["import", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return rc, out, err


# -- routes --------------------------------------------------------------------------------

def test_routes_by_show_rules_output_names_and_builtin_table(tmp_path, capsys):
    folder = song_folder(tmp_path)
    rc, out, err = run(capsys, folder, "--config", show_file(tmp_path))
    assert (rc, err) == (0, "")
    assert stems_of(folder / "song.yaml") == [
        {"file": "Bass.wav", "to": "bass"},
        {"file": "Click.wav", "to": "click"},
        {"file": "Guide.wav", "to": "cues"},
        {"file": "Keys L.wav", "to": "keys.L", "name": "Keys"},
        {"file": "Keys R.wav", "to": "keys.R", "name": "Keys"},
        {"file": "Pad.wav", "to": "tracks"},
    ]
    assert "show routing_rules '^pad'" in out
    assert "built-in rule 'guide|cues?|voice|count|talkback'" in out
    assert "Keys: Keys L.wav + Keys R.wav" in out
    assert "Checked: song.yaml loads" in out


def test_title_and_tempo_from_the_folder_name(tmp_path, capsys):
    folder = song_folder(tmp_path)
    rc, out, _ = run(capsys, folder)
    song = yaml.safe_load((folder / "song.yaml").read_text())
    assert rc == 0
    assert (song["title"], song["tempo"]) == ("Song", 128)
    assert "Tempo: 128 BPM (from the folder name)" in out


def test_tempo_from_a_file_name_and_unknown_tempo(tmp_path, capsys):
    folder = song_folder(tmp_path, "Ballad", {"Click (96.5 bpm)": 1})
    assert run(capsys, folder)[0] == 0
    assert yaml.safe_load((folder / "song.yaml").read_text())["tempo"] == 96.5
    bare = song_folder(tmp_path, "Opener", {"Click": 1})
    rc, out, _ = run(capsys, bare)
    text = (bare / "song.yaml").read_text()
    assert rc == 0
    assert "# tempo: (unknown; add it)\n" in text
    assert "tempo" not in yaml.safe_load(text)
    assert "Tempo: not found" in out


def test_without_a_show_builtin_targets_are_assumed_and_said_so(tmp_path, capsys):
    folder = song_folder(tmp_path, stems={"Drums": 2, "Pad": 2, "Strings": 2})
    rc, out, _ = run(capsys, folder)
    assert rc == 0
    assert [s["to"] for s in stems_of(folder / "song.yaml")] == ["drums", "keys", "tracks"]
    assert "Routes were not checked against a show" in out


def test_a_builtin_rule_whose_output_the_show_lacks_falls_through():
    show = Show(outputs={"click": (0,), "tracks": (1, 2), "Bass": (3,)})
    assert decide("Drums", show) == ("tracks", "built-in catch-all")
    assert decide("bass gtr", show) == ("Bass", "built-in rule 'bass'")
    assert decide("TRACKS", show) == ("tracks", "named like the output")
    ruled = Show(outputs=show.outputs, rules=(("click", "tracks"),))
    assert decide("Click", ruled) == ("tracks", "show routing_rules 'click'")
    assert BUILTIN_RULES[-1] == (".", "tracks")


# -- L/R pairs -----------------------------------------------------------------------------

@pytest.mark.parametrize("left,right", [("Keys_L", "Keys_R"), ("Keys-L", "Keys-R"),
                                        ("Keys Left", "Keys Right"), ("Keys (L)", "Keys (R)")])
def test_pairs_are_joined_whatever_the_spelling(tmp_path, capsys, left, right):
    folder = song_folder(tmp_path, stems={left: 1, right: 1})
    assert run(capsys, folder, "--config", show_file(tmp_path))[0] == 0
    got = [(s["to"], s["name"]) for s in stems_of(folder / "song.yaml")]
    assert got == [("keys.L", "Keys"), ("keys.R", "Keys")]


def test_a_lone_side_is_an_ordinary_stem(tmp_path, capsys):
    folder = song_folder(tmp_path, stems={"Keys L": 1, "Guide": 1})
    assert run(capsys, folder, "--config", show_file(tmp_path))[0] == 0
    assert stems_of(folder / "song.yaml")[1] == {"file": "Keys L.wav", "to": "keys"}


def test_side_and_title_parsing():
    assert split_side("Bass DI R") == ("Bass DI", "R")
    assert split_side("Vocal Lead") is None and split_side("KeysL") is None
    assert title_of(Path("Ballad (96 bpm)")) == "Ballad"
    assert title_of(Path("Intro 92.5_BPM - Live")) == "Intro - Live"


# -- what cannot be placed or played -------------------------------------------------------

def test_unplaced_stems_are_reported_and_left_as_comments(tmp_path, capsys):
    folder = song_folder(tmp_path, stems={"Click": 1, "Guide": 1, "Strings": 2})
    show = show_file(tmp_path, "device: {channels: 2}\noutputs: {click: 1, cues: 2}\n")
    rc, out, _ = run(capsys, folder, "--config", show)
    song = folder / "song.yaml"
    assert rc == 0
    assert [s["file"] for s in stems_of(song)] == ["Click.wav", "Guide.wav"]
    assert "# - {file: Strings.wav, to: OUTPUT}  # not placed:" in song.read_text()
    assert "Not placed (written as comments in the song file):\n  Strings.wav:" in out
    assert read_song_file(song, load_show(str(show)).outputs).problems == []


def test_nothing_placeable_writes_nothing(tmp_path, capsys):
    folder = song_folder(tmp_path, stems={"Strings": 2})
    show = show_file(tmp_path, "device: {channels: 1}\noutputs: {click: 1}\n")
    rc, _, err = run(capsys, folder, "--config", show)
    assert rc == 1 and "none of the stems could be placed" in err
    assert not (folder / "song.yaml").exists()


def test_channel_counts_that_cannot_go_to_their_output_are_reported(tmp_path, capsys):
    folder = song_folder(tmp_path, stems={"Click": 2, "Keys L": 2, "Keys R": 1})
    rc, out, _ = run(capsys, folder, "--config", show_file(tmp_path))
    assert rc == 0
    assert "Click.wav: has 2 channels but click is 1 channel(s)" in out
    assert "Keys L.wav: has 2 channels but keys.L is 1 channel(s)" in out
    assert "has 2 channels" in (folder / "song.yaml").read_text()


def test_a_file_no_library_can_read_is_reported(tmp_path, capsys):
    folder = song_folder(tmp_path, stems={"Click": 1})
    (folder / "Guide.m4a").write_bytes(b"not audio")
    rc, out, _ = run(capsys, folder, "--config", show_file(tmp_path))
    assert rc == 0
    assert "Guide.m4a: not a readable audio file (" in out and "PyAV:" in out
    assert "so it would play as silence" in out


# -- files ---------------------------------------------------------------------------------

def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    folder = song_folder(tmp_path)
    song = folder / "song.yaml"
    song.write_text("title: mine\n")
    rc, out, err = run(capsys, folder)
    assert rc == 1 and out == ""
    assert err == f"backtrack: {song} already exists; add --force to overwrite it\n"
    assert song.read_text() == "title: mine\n"
    rc, _, _ = run(capsys, folder, "--force")
    assert rc == 0 and "Keys L.wav" in song.read_text()


def test_out_elsewhere_gets_paths_relative_to_it_and_skips_hidden_files(tmp_path, capsys):
    folder = song_folder(tmp_path, stems={"Click": 1})
    (folder / "._Click.wav").write_bytes(b"AppleDouble")
    (folder / "notes.txt").write_text("bridge twice")
    out = tmp_path / "songs" / "song.yaml"
    out.parent.mkdir()
    assert run(capsys, folder, "--out", out)[0] == 0
    assert stems_of(out) == [{"file": "../lib/Song - 128 BPM/Click.wav", "to": "click"}]


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "is not a folder"),
    (lambda p: p, "no audio files in"),
])
def test_expected_failures_are_one_plain_line(tmp_path, capsys, make, message):
    (tmp_path / "notes.txt").write_text("no stems yet")
    rc, out, err = run(capsys, make(tmp_path))
    assert rc == 1 and out == ""
    assert err.startswith("backtrack: ") and message in err and "Traceback" not in err


# -- the show ------------------------------------------------------------------------------

def test_the_imported_song_plays_in_a_show_that_names_it(tmp_path, capsys):
    """The show may name the song in a setlist before it exists: the import still routes
    by its outputs, and afterwards the show loads with the pair on channels 6 and 7."""
    folder = song_folder(tmp_path)
    show = show_file(tmp_path, SHOW + "library: lib\nsetlists:\n  friday: [Song]\n")
    rc, out, err = run(capsys, folder, "--config", show)
    assert (rc, err) == (0, "")
    assert "The show file does not load yet" in out and f"{show} loads now" in out
    cfg = load(show)
    (song,) = cfg.setlists["friday"]
    assert (song.title, song.tempo) == ("Song", 128.0)
    assert [s.channels for s in song.stem_named("Keys")] == [(5,), (6,)]
    assert [s.channels for s in song.stem_named("Pad")] == [(2, 3)]
    rc, out, _ = run(capsys, song_folder(tmp_path, "Opener", {"Click": 1}), "--config", show)
    assert rc == 0 and "does not load yet" not in out and "Checked: song.yaml loads" in out

"""The show file loader: config/example.yaml parses to the documented values, every problem
of a file is reported at once with its line and key, paths resolve beside the config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.actions import Action
from appliance.config import ConfigError, MidiMapping, MidiMessage, load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"

MINIMAL = """\
device: {{channels: 4}}
outputs:
  click: 1
  tracks: [2, 3]
songs:
  - title: One
    stems:
      - {{file: {file}, to: click}}
"""


def write(tmp_path: Path, text: str, name: str = "show.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems_of(path: Path) -> list:
    with pytest.raises(ConfigError) as exc:
        load(path)
    return exc.value.problems


# -- the example file ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def example():
    return load(EXAMPLE)


def test_example_device(example):
    d = example.device
    assert (d.name, d.channels, d.rate, d.format, d.period, d.periods) == (
        "hw:CARD=UMC1820,DEV=0", 10, 48000, "S32_LE", 256, 3)
    assert d.buffer_frames == 768


def test_example_outputs_are_zero_based(example):
    assert example.outputs == {"click": (0,), "cues": (1,), "tracks": (2, 3), "bass": (4,),
                               "keys": (5, 6), "pilot": (7,)}


def test_example_songs(example):
    base = EXAMPLE.parent
    opener, ballad = example.songs
    assert opener.title == "Opener" and opener.after == "next" and opener.tempo == 120.0
    assert [(s.file, s.to, s.channels, s.gain_db) for s in opener.stems] == [
        (base / "opener/click.wav", ("click",), (0,), 0.0),
        (base / "opener/cues.wav", ("cues",), (1,), 0.0),
        (base / "opener/tracks.wav", ("tracks",), (2, 3), -3.0),
    ]
    # Lines point at the declarations (for check's messages).
    assert [s.line for s in opener.stems] == [21, 22, 23] and opener.line == 18
    assert opener.midi_out == (MidiMessage("program", 5, 0, 1), MidiMessage("cc", 7, 100, 2))
    # Program and channel as printed on gear, minus one on the wire.
    assert opener.midi_out[0].to_bytes() == [0xC0, 4]
    assert opener.midi_out[1].to_bytes() == [0xB1, 7, 100]
    assert ballad.title == "Ballad" and ballad.after == "stop" and ballad.tempo == 72.0
    assert [(s.file.name, s.channels, s.gain_db) for s in ballad.stems] == [
        ("click.flac", (0,), 0.0), ("keys.flac", (5, 6), 0.0), ("bass.flac", (4,), -1.5)]
    assert ballad.midi_out == ()


def test_example_engine_control(example):
    e = example.engine
    assert (e.readahead, e.realtime_priority, e.fade_ms, e.cache_dir) == (2.0, 70, 5.0, None)
    assert example.cache_dir == EXAMPLE.parent / ".backtrack-cache"
    assert example.control.socket == "/run/backtrack/control.sock"
    assert example.state_file is None
    assert example.warnings == ()


def test_example_footswitches_led(example):
    f1, f2 = example.footswitches
    assert (f1.pin, f1.press, f1.hold, f1.double) == (
        17, Action("play_stop"), Action("stop"), Action("prev"))
    assert (f2.pin, f2.press, f2.hold, f2.double) == (27, Action("next"), None, None)
    assert (f1.hold_time, f1.bounce_ms, f1.double_ms) == (0.8, 20.0, 350.0)
    assert example.led.pin == 22 and example.led.rgb is None and example.led.pwm is True


def test_example_midi(example):
    m = example.midi
    assert (m.api, m.in_port, m.out_port, m.clock, m.mtc, m.mtc_fps) == (
        "alsa", "FCB1010", "Helix", True, False, 25)
    assert m.mappings == (
        MidiMapping("note", 60, Action("play_stop")),
        MidiMapping("cc", 80, Action("next"), value=127),
        MidiMapping("program", 2, Action("goto", 2)),
    )
    assert str(m.mappings[2].action) == "goto 2"


def test_example_peer(example):
    p = example.peer
    assert (p.role, p.priority, p.listen, p.peers, p.key_file, p.mode) == (
        "leader", 1, "0.0.0.0:47800", ("192.168.50.12:47800",), Path("/etc/backtrack/peer.key"),
        "unmute")
    assert p.pilot_output == 7 and p.pilot_hz == 1000.0  # output 8, 0-based


# -- problems ------------------------------------------------------------------------------

def test_example_remote_osc(example):
    r, o = example.remote, example.osc
    assert (r.listen, r.pin_file, r.update_hz, r.max_clients) == (
        "0.0.0.0:8080", Path("/etc/backtrack/remote.pin"), 4.0, 200)
    assert (o.listen, o.status_rate_hz, o.max_subscribers, o.subscription_s, o.allow) == (
        "0.0.0.0:9000", 10.0, 8, 60.0, ())


def test_all_problems_reported_at_once(tmp_path):
    cfg = write(tmp_path, """\
device:
  channels: ten
  format: S24_LE
outputs:
  click: 1
songs:
  - title: One
    stems:
      - {file: a.wav, to: clik}
""")
    probs = problems_of(cfg)
    assert [(p.line, p.key) for p in probs] == [
        (2, "device.channels"), (3, "device.format"), (9, "songs[0].stems[0].to")]
    assert all(p.file == str(cfg) and p.severity == "error" for p in probs)
    text = "\n".join(str(p) for p in probs)
    assert "S16_LE, S24_3LE, S32_LE, FLOAT_LE" in text  # says what would be valid
    assert "outputs are: click" in text
    assert f"{cfg}:2: device.channels:" in text


def test_unknown_keys_name_the_valid_ones(tmp_path):
    cfg = write(tmp_path, MINIMAL.format(file="a.wav").replace(
        "to: click}", "to: click, gain_bd: -6}") + "sngs: []\n")
    probs = problems_of(cfg)
    by_key = {p.key: p for p in probs}
    assert by_key["songs[0].stems[0].gain_bd"].line == 8
    assert "valid keys here: file, to, gain_db" in by_key["songs[0].stems[0].gain_bd"].message
    top = by_key["sngs"]
    assert top.line == 9
    for k in ("device", "outputs", "songs", "engine", "control", "footswitches", "led", "midi",
              "peer", "state_file"):
        assert k in top.message


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    show = tmp_path / "shows" / "tour"
    show.mkdir(parents=True)
    cfg = write(show, MINIMAL.format(file="stems/click.wav")
                + "engine: {cache_dir: cache}\nstate_file: state.json\n")
    monkeypatch.chdir(tmp_path)  # somewhere else entirely
    c = load(Path("shows/tour/show.yaml"))
    assert c.path == cfg
    assert c.songs[0].stems[0].file == show / "stems" / "click.wav"
    assert c.cache_dir == show / "cache"
    assert c.state_file == show / "state.json"


def test_default_cache_dir_is_beside_the_config(tmp_path):
    c = load(write(tmp_path, MINIMAL.format(file="a.wav")))
    assert c.cache_dir == tmp_path / ".backtrack-cache"


def test_absolute_paths_allowed(tmp_path):
    elsewhere = tmp_path / "media" / "click.wav"
    (tmp_path / "shows").mkdir()
    c = load(write(tmp_path / "shows", MINIMAL.format(file=elsewhere)))
    assert c.songs[0].stems[0].file == elsewhere
    assert os.path.isabs(c.songs[0].stems[0].file)


def test_duplicate_title_is_a_warning_not_an_error(tmp_path):
    text = MINIMAL.format(file="a.wav") + "  - title: One\n    stems:\n" \
        "      - {file: b.wav, to: tracks}\n"
    c = load(write(tmp_path, text))
    assert len(c.songs) == 2
    (w,) = c.warnings
    assert (w.severity, w.key, w.line) == ("warning", "songs[1].title", 9)
    assert "duplicate title 'One'" in w.message


def test_mono_and_stereo_routes(tmp_path):
    text = MINIMAL.format(file="a.wav") + "      - {file: b.wav, to: [click, tracks]}\n"
    c = load(write(tmp_path, text))
    assert c.songs[0].stems[1].channels == (0, 1, 2)
    assert c.songs[0].stems[1].to == ("click", "tracks")


def test_goto_beyond_the_setlist(tmp_path):
    text = MINIMAL.format(file="a.wav") + "footswitches:\n  - {pin: 17, press: goto 2}\n"
    (p,) = problems_of(write(tmp_path, text))
    assert p.key == "footswitches[0].press" and p.line == 10
    assert "songs are numbered 1 to 1" in p.message



def test_writer_cpu_accepts_auto_none_and_a_number(tmp_path):
    assert load(EXAMPLE).engine.writer_cpu == "auto"
    for text, want in (("auto", "auto"), ("none", "none"), ("1", 1), ("0", 0)):
        path = write(tmp_path, MINIMAL.format(file="click.wav")
                     + f"engine: {{writer_cpu: {text}}}\n")
        assert load(path).engine.writer_cpu == want
    bad = problems_of(write(tmp_path, MINIMAL.format(file="click.wav")
                            + "engine: {writer_cpu: -1}\n"))
    assert any("engine.writer_cpu" in str(p) for p in bad)

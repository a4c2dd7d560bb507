"""Groundwork (issue 16): YAML 1.1 traps through the real CLI, `--version`, `devices`,
`midi-ports`, the default show file, goto by title, `play_stop` in `ctl`'s help."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from appliance import cli, devices
from appliance.actions import Action, parse_action, request_action, resolve_goto
from appliance.config import load
from appliance.ctl import words_to_request
from appliance.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

# line numbers below refer to this show
SHOW = """\
device:
  name: "null"
  channels: 4
  period: 256
engine:
  readahead: 2
resume: true
outputs:
  click: 1
songs:
  - title: One
    stems:
      - {file: click.wav, to: click}
"""


def write_show(tmp_path: Path, old: str = "", new: str = "") -> Path:
    if old:
        assert old in SHOW
    sf.write(str(tmp_path / "click.wav"), np.zeros((4800, 1), np.float32), 48000)
    p = tmp_path / "show.yaml"
    p.write_text(SHOW.replace(old, new) if old else SHOW)
    return p


def check(path: Path, capsys) -> tuple[int, str]:
    code = cli.main(["check", "--config", str(path), "--no-device"])
    cap = capsys.readouterr()
    return code, cap.err


# -- YAML 1.1 traps -----------------------------------------------------------------------

@pytest.mark.parametrize("old,new,line,says", [
    ("period: 256", "period: 010", 4, "`010` would be read as 8 (octal): write 10"),
    ("period: 256", "period: 0256", 4, "write 256"),
    ("channels: 4", "channels: 0x4", 3, "`0x4` is 4 written in hexadecimal: write 4"),
    ("channels: 4", "channels: 0o4", 3, "`0o4` is 4 written in octal: write 4"),
    ("channels: 4", "channels: 04", 3, "write 4"),
    ("period: 256", "period: 4:16", 4, "`4:16` would be read as 256 (base 60"),
    ("readahead: 2", "readahead: 1:30", 6, "`1:30` would be read as 90"),
    ("readahead: 2", "readahead: 09", 6, "`09` starts with 0"),
    ("resume: true", "resume: yes", 7, "write true or false"),
    ("resume: true", "resume: off", 7, "write true or false"),
])
def test_a_number_or_boolean_yaml_reads_otherwise_is_an_error_with_its_line(
        tmp_path, capsys, old, new, line, says):
    code, err = check(write_show(tmp_path, old, new), capsys)
    assert code == 1
    assert f"show.yaml:{line}:" in err and says in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("written,title", [
    ("3:45", "3:45"), ("1:02:03", "1:02:03"), ("010", "010"), ("0x1F", "0x1F"),
    ("yes", "yes"), ("off", "off"), ("1999", "1999"), ("1.50", "1.50"), ("'3:45'", "3:45"),
])
def test_a_text_key_reads_what_was_written(tmp_path, capsys, written, title):
    path = write_show(tmp_path, "title: One", f"title: {written}")
    assert load(path).songs[0].title == title
    code, err = check(path, capsys)
    assert code == 0, err


def test_plain_true_false_and_underscored_numbers_still_read(tmp_path):
    cfg = load(write_show(tmp_path, "period: 256", "period: 1_024"))
    assert cfg.device.period == 1024 and cfg.resume is True
    cfg = load(write_show(tmp_path, "resume: true", "resume: False"))
    assert cfg.resume is False


def test_null_still_needs_quotes(tmp_path, capsys):
    code, err = check(write_show(tmp_path, 'name: "null"', "name: null"), capsys)
    assert code == 1 and "show.yaml:2:" in err and "got nothing (null)" in err


# -- --version, the default show file ------------------------------------------------------

def test_version_is_the_package_version():
    r = subprocess.run([sys.executable, "-m", "appliance", "--version"], capture_output=True,
                       text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0
    assert r.stdout.strip() == f"backtrack {importlib.metadata.version('backtrack-appliance')}"
    import appliance
    assert appliance.__version__ == importlib.metadata.version("backtrack-appliance")


def test_the_show_file_comes_from_backtrack_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BACKTRACK_CONFIG", str(write_show(tmp_path)))
    assert cli.main(["check", "--no-device"]) == 0
    assert "show.yaml" in capsys.readouterr().out
    # --config wins over the environment
    other = tmp_path / "other"
    other.mkdir()
    assert cli.main(["check", "--no-device", "--config",
                     str(write_show(other, "period: 256", "period: 010"))]) == 1


def test_a_missing_default_show_file_names_both_ways_to_give_one(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.delenv("BACKTRACK_CONFIG", raising=False)
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "config.yaml"))
    for argv in (["check"], ["render", "--song", "1", "--out", str(tmp_path / "o.wav")],
                 ["run"]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert str(tmp_path / "config.yaml") in err
        assert "--config FILE" in err and "$BACKTRACK_CONFIG" in err
    monkeypatch.setenv("BACKTRACK_CONFIG", str(tmp_path / "nope.yaml"))
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert "$BACKTRACK_CONFIG names" in err and "nope.yaml" in err


def test_import_takes_the_default_show_file_only_when_there(tmp_path, monkeypatch):
    monkeypatch.delenv("BACKTRACK_CONFIG", raising=False)
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "config.yaml"))
    assert cli.optional_config_path(None) is None
    (tmp_path / "config.yaml").write_text("")
    assert cli.optional_config_path(None) == str(tmp_path / "config.yaml")
    assert cli.optional_config_path("x.yaml") == "x.yaml"
    monkeypatch.setenv("BACKTRACK_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(UserError):
        cli.optional_config_path(None)


# -- goto by title, play_stop in ctl --------------------------------------------------------

def test_goto_by_title_from_every_control():
    assert parse_action("goto Ballad", titles=True) == Action("goto", "Ballad")
    assert parse_action("goto 3", titles=True) == Action("goto", 3)
    assert parse_action("goto Ballad") is None  # where nobody can check a title yet
    action = parse_action("goto Two Hearts", titles=True)
    assert parse_action(str(action), titles=True) == action  # the peer wire re-parses it
    assert request_action({"cmd": "goto", "song": "Ballad"}) == (Action("goto", "Ballad"), "")
    assert request_action({"cmd": "goto Ballad"}) == (Action("goto", "Ballad"), "")
    assert request_action({"cmd": "goto", "song": 2}) == (Action("goto", 2), "")
    assert request_action({"cmd": "goto", "song": "2"}) == (Action("goto", 2), "")
    for bad in ({"cmd": "goto", "song": "  "}, {"cmd": "goto", "song": True}, {"cmd": "goto"}):
        action, err = request_action(bad)
        assert action is None and "number or title" in err
    assert words_to_request(["goto", "Ballad"]) == {"cmd": "goto", "song": "Ballad"}
    assert words_to_request(["goto", "Two", "Hearts"]) == {"cmd": "goto", "song": "Two Hearts"}
    assert words_to_request(["goto", "3"]) == {"cmd": "goto", "song": 3}
    with pytest.raises(UserError, match="number or title"):
        words_to_request(["goto"])


def test_resolve_goto_in_the_setlist_in_use():
    titles = ["Intro", "Ballad", "Ballad II", "Encore", "encore"]
    assert resolve_goto(Action("goto", "Ballad"), titles) == (Action("goto", 2), "")
    assert resolve_goto(Action("goto", "ballad ii"), titles) == (Action("goto", 3), "")
    assert resolve_goto(Action("goto", "Encore"), titles) == (Action("goto", 4), "")
    action, err = resolve_goto(Action("goto", "ENCORE"), titles)
    assert action is None and "2 songs are titled 'ENCORE' (songs 4, 5)" in err
    action, err = resolve_goto(Action("goto", "Ball"), titles)  # no prefixes
    assert action is None and "no song titled 'Ball'" in err and "2 Ballad" in err
    for same in (Action("goto", 3), Action("next"), Action("setlist", "friday")):
        assert resolve_goto(same, titles) == (same, "")


def test_ctl_help_and_errors_list_play_stop(capsys):
    with pytest.raises(SystemExit):
        cli.main(["ctl", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "play_stop" in out and "goto N|TITLE" in out
    with pytest.raises(UserError, match="play_stop"):
        words_to_request(["rewind"])
    assert "play_stop" in request_action({"cmd": "rewind"})[1]


# -- devices, midi-ports --------------------------------------------------------------------

class FakeAlsa:
    """pyalsaaudio's listing calls, for a machine with cards this test machine lacks."""

    PCM_PLAYBACK, PCM_NONBLOCK = 0, 1

    class ALSAAudioError(Exception):
        pass

    def __init__(self):
        self.opened: list[str] = []

    def pcms(self, pcmtype=0):
        return ["default", "null", "hw:CARD=UMC1820,DEV=0", "plughw:CARD=UMC1820,DEV=0",
                "front:CARD=UMC1820,DEV=0", "hw:CARD=PCH,DEV=0", "dmix:CARD=PCH,DEV=0", "show"]

    def card_indexes(self):
        return [0, 1]

    def cards(self):
        return ["PCH", "UMC1820"]

    def card_name(self, i):
        return [("HDA Intel PCH", "HDA Intel PCH at 0xf7f10000"),
                ("UMC1820", "BEHRINGER UMC1820 at usb-0000:00:14.0-2")][i]

    def PCM(self, type, mode, device):  # noqa: N802 - pyalsaaudio's name
        self.opened.append(device)
        if "PCH" in device:
            raise self.ALSAAudioError(f"Device or resource busy [{device}]")
        alsa = self

        class Pcm:
            def getchannels(self):
                return [10]

            def getrates(self):
                return [44100, 48000, 96000]

            def getformats(self):
                return {"S24_3LE": 32, "S32_LE": 10}

            def close(self):
                alsa.opened.append("closed")
        return Pcm()


def test_devices_lists_cards_hw_channels_and_other_pcms():
    fake = FakeAlsa()
    cards, others = devices.alsa_devices(fake)
    assert fake.opened == ["hw:CARD=PCH,DEV=0", "hw:CARD=UMC1820,DEV=0", "closed"]  # hw only
    pch, umc = cards
    assert (umc.index, umc.id, umc.plugins) == (1, "UMC1820", ["front", "plughw"])
    assert devices.describe_pcm(umc.pcms[0]) == (
        "hw:CARD=UMC1820,DEV=0  10 channels, 44100, 48000, 96000 Hz, S24_3LE S32_LE")
    assert "busy" in pch.pcms[0].error and pch.plugins == ["dmix"]
    assert others == ["default", "null", "show"]
    assert devices.spans([1, 2, 3, 4, 6, 8, 9]) == "1-4, 6, 8, 9"
    assert devices.spans(list(range(1, 10001))) == "1-10000"


def test_midi_ports_without_a_sequencer_is_one_plain_line():
    r = subprocess.run([sys.executable, "-m", "appliance", "midi-ports", "--api", "alsa"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    if Path("/dev/snd/seq").exists():
        assert r.returncode == 0 and "MIDI ports to read from (alsa" in r.stdout
    else:
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # no ALSA lib lines
        assert r.stderr.startswith("backtrack: no ALSA sequencer")


def test_devices_and_midi_ports_see_the_virtual_card(jack_audio):
    from tests.midigear import Gear

    env = jack_audio.environ()
    r = subprocess.run([sys.executable, "-m", "appliance", "devices"], env=env,
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert jack_audio.pcm in r.stdout
    gear = Gear(env)
    try:
        r = subprocess.run([sys.executable, "-m", "appliance", "midi-ports", "--api", "jack"],
                           env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        gear.close()
    assert r.returncode == 0, r.stderr
    sends = r.stdout.split("MIDI ports to send to")[1]
    assert "testgear:gear" in sends, r.stdout

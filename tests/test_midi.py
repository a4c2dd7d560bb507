"""MIDI: the parser eats garbage, mappings match as documented, clock/MTC arithmetic follows
the audio position; then a daemon on a private JACK server driven by a test MIDI port, with
a test "gear" port receiving program changes, clock and MTC, judged against the recording."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.actions import Action
from appliance.config import ConfigError, MidiMapping, load
from appliance.controls.midi import MappingTable, MidiInput, MidiParser, find_port
from appliance.controls.midiclock import (
    CLOCK,
    CONTINUE,
    QUARTER_FRAME,
    SONG_POSITION,
    START,
    STOP,
    SyncScheduler,
    decode_quarter_frames,
    frames_per_tick,
    mtc_full_frame,
)
from tests.jackaudio import judged
from tests.midigear import Gear
from tests.showkit import RATE, ctl_request, find_song_start, make_show, wait_for
from tests.test_gpio import BASE, inproc, wait_state  # noqa: F401 - fixture
from tests.test_gpio import problems as config_error

# -- parser -------------------------------------------------------------------------------------


def test_parser_running_status_sysex_realtime_and_strays():
    p = MidiParser()
    assert p.feed([0x90, 60, 100, 62, 0]) == [(0x90, 60, 100), (0x90, 62, 0)]   # running status
    assert p.feed([64, 90]) == [(0x90, 64, 90)]                                # across calls
    assert p.feed([0xF0, 1, 2, 3, 0xF7, 5, 6]) == []                           # sysex clears it
    assert p.feed([0xB0, 0xF8, 80, 0xFE, 127]) == [(0xB0, 80, 127)]            # real-time inside
    assert p.feed([0xC2, 4, 5]) == [(0xC2, 4), (0xC2, 5)]
    assert p.feed([0xF2, 1, 2, 9, 9]) == []                                    # song position
    assert p.feed([0x91]) == [] and p.feed([60]) == [] and p.feed([1]) == [(0x91, 60, 1)]
    assert p.feed([300, -1, "x", None, 0xE0, 0, 64]) == [(0xE0, 0, 64)]


@given(st.lists(st.integers(-5, 300) | st.none(), max_size=300))
@settings(max_examples=300, deadline=None)
def test_parser_never_raises_and_only_emits_well_formed_messages(data):
    p = MidiParser()
    for msg in p.feed(data):
        assert 0x80 <= msg[0] <= 0xEF
        assert len(msg) == (2 if 0xC0 <= msg[0] <= 0xDF else 3)
        assert all(0 <= b <= 127 for b in msg[1:])


def test_mapping_table_channels_values_programs():
    t = MappingTable([
        MidiMapping("note", 60, Action("play_stop")),
        MidiMapping("note", 61, Action("next"), channel=2),
        MidiMapping("cc", 80, Action("stop")),                   # any value >= 64
        MidiMapping("cc", 81, Action("prev"), value=10),
        MidiMapping("program", 3, Action("goto", 3)),            # as printed: wire 2
    ])
    assert t.actions((0x90, 60, 1)) == [Action("play_stop")]
    assert t.actions((0x9F, 60, 1)) == [Action("play_stop")]
    assert t.actions((0x90, 60, 0)) == []                        # note-on velocity 0 = off
    assert t.actions((0x80, 60, 64)) == []
    assert t.actions((0x90, 61, 9)) == [] and t.actions((0x91, 61, 9)) == [Action("next")]
    assert t.actions((0xB0, 80, 63)) == [] and t.actions((0xB5, 80, 64)) == [Action("stop")]
    assert t.actions((0xB0, 81, 127)) == [] and t.actions((0xB0, 81, 10)) == [Action("prev")]
    assert t.actions((0xC0, 2)) == [Action("goto", 3)] and t.actions((0xC0, 3)) == []


def test_find_port_by_part_of_the_name_never_our_own():
    names = ["Midi Through:Midi Through Port-0 14:0", "backtrack-out:out",
             "FCB1010:FCB1010 MIDI 1 24:0"]
    assert find_port(names, "fcb1010") == (2, "FCB1010:FCB1010 MIDI 1 24:0")
    assert find_port(names, "out") is None
    assert find_port(names, "Helix") is None


def test_midi_input_survives_garbage_and_failing_actions():
    acts = []

    def act(a, src):
        acts.append(a)
        if len(acts) == 1:
            raise RuntimeError("transport exploded")

    mi = MidiInput(type("MC", (), {"mappings": (MidiMapping("note", 60, Action("play")),),
                                   "api": "jack", "in_port": "x"})(), act)
    rng = random.Random(4)
    for _ in range(2000):
        mi.handle([rng.randrange(-10, 400) for _ in range(rng.randrange(0, 12))])
    mi.handle(None)          # not even a list
    mi.handle([0x90, 60, 100])
    mi.handle([0x90, 60, 100])
    assert acts[-2:] == [Action("play"), Action("play")]


# -- config errors ------------------------------------------------------------------------------



def test_out_of_range_mappings_are_config_errors(tmp_path):
    msg = config_error(tmp_path, """\
midi:
  api: coreaudio
  in: {port: pedal}
  map:
    - {note: 128, action: play}
    - {cc: -1, action: stop}
    - {program: 0, action: next}
    - {note: 60, channel: 17, action: play}
    - {note: 61, action: fly}
    - {note: 62, cc: 3, action: play}
""")
    for want in [
        "midi.api", "midi.map[0].note", "midi.map[1].cc", "midi.map[2].program",
        "midi.map[3].channel", "midi.map[4].action: unknown action 'fly'",
        "midi.map[5]: give exactly one of note, cc or program",
    ]:
        assert want in msg, (want, msg)
    assert re.search(r"show\.yaml:\d+: midi\.map\[0\]\.note", msg)


def test_config_readme_controls_example_loads(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "config" / "README.md").read_text()
    block = readme.split("<!-- controls-example -->", 1)[1].split("```yaml\n", 1)[1]
    block = block.split("```", 1)[0]
    p = tmp_path / "show.yaml"
    p.write_text(BASE + "  - title: Two\n    stems: [{file: b.wav, to: click}]\n" + block)
    cfg = load(p)
    assert [f.pin for f in cfg.footswitches] == [17, 27]
    assert cfg.footswitches[1].double_ms == 300 and cfg.led.rgb == (5, 6, 13)
    assert cfg.midi.mappings[2] == MidiMapping("cc", 81, Action("prev"), None, 1)
    assert (cfg.midi.out_port, cfg.midi.clock, cfg.midi.mtc, cfg.midi.offset_ms) == (
        "Helix", True, True, 0.0)


def test_out_offset_is_read_and_bounded(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(BASE + "midi:\n  out: {port: Helix, clock: true, offset_ms: -7.5}\n")
    assert load(p).midi.offset_ms == -7.5
    msg = config_error(tmp_path, "midi:\n  out: {port: Helix, offset_ms: 900}\n")
    assert "midi.out.offset_ms" in msg


def test_offset_moves_the_send_time():
    late = SyncScheduler(RATE, lambda song: 120.0, early_ns=-5_000_000)   # offset_ms: +5
    out, wake = late.step(0, 0, True, 0)
    assert [m.kind for m in out] == ["start"] and wake == 5_000_000
    out, _ = late.step(0, 240, True, 5_000_000)
    assert [m.kind for m in out] == ["clock"]


def test_song_midi_out_out_of_range_is_a_config_error(tmp_path):
    text = BASE.replace("    stems:", "    tempo: 500\n    midi_out: [{program: 129}, "
                        "{cc: 7, channel: 0, value: 1}]\n    stems:")
    p = tmp_path / "show2.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(p)
    msg = str(exc.value)
    for want in ("songs[0].tempo", "songs[0].midi_out[0].program", "songs[0].midi_out[1].channel"):
        assert want in msg, (want, msg)


# -- clock and MTC arithmetic ---------------------------------------------------------------------

class Sim:
    """A song playing at RATE, observed at irregular times with a jittery position."""

    def __init__(self, sched: SyncScheduler, seed: int = 1):
        self.s = sched
        self.rng = random.Random(seed)
        self.msgs: list = []
        self.t_ns = 1_000_000_000

    def run(self, song: int, start_frame: int, seconds: float, playing: bool = True,
            jitter: int = 200) -> int:
        """Returns the last true frame."""
        t_end = self.t_ns + int(seconds * 1e9)
        t0, frame = self.t_ns, start_frame
        while self.t_ns < t_end:
            frame = start_frame + (self.t_ns - t0) * RATE // 1_000_000_000
            seen = frame + self.rng.randint(-jitter, jitter) if playing else start_frame
            out, wake = self.s.step(song, max(0, seen), playing, self.t_ns)
            self.msgs += [(m, frame) for m in out]
            step = self.rng.randint(300_000, 3_000_000)
            if wake is not None:
                step = min(step, max(50_000, wake - self.t_ns + self.rng.randint(0, 200_000)))
            self.t_ns += step
        return frame

    def kinds(self) -> list[str]:
        return [m.kind for m, _f in self.msgs]


def test_clock_start_ticks_pause_continue_stop():
    s = SyncScheduler(RATE, lambda song: 120.0, clock=True, mtc=False)
    sim = Sim(s)
    fpt = frames_per_tick(120.0, RATE)
    end = sim.run(0, 0, 3.0)
    kinds = sim.kinds()
    assert kinds[0] == "start" and kinds[1] == "clock" and sim.msgs[1][0].frame == 0
    ticks = [m for m, _f in sim.msgs if m.kind == "clock"]
    # every tick whose frame has been reached, give or take the observation jitter
    assert abs(len(ticks) - (end // fpt + 1)) <= 1
    assert [m.frame for m in ticks] == [k * fpt for k in range(len(ticks))]
    for m, true_frame in sim.msgs:           # sent when its frame was reached, not before
        assert m.frame <= true_frame + 200
        assert true_frame - m.frame < 0.004 * RATE + 200
    sim.msgs.clear()
    sim.run(0, end, 0.5, playing=False)       # pause
    assert sim.kinds() == ["stop"]
    sim.msgs.clear()
    end2 = sim.run(0, end, 1.0)               # resume mid-song
    m0, m1 = sim.msgs[0][0], sim.msgs[1][0]
    assert m0.data[0] == SONG_POSITION and m1.data == (CONTINUE,)
    sixteenth = m0.data[1] | m0.data[2] << 7
    assert sixteenth * 6 * fpt >= end - 200 and (sixteenth - 1) * 6 * fpt < end + 200
    ticks = [m for m, _f in sim.msgs if m.kind == "clock"]
    assert ticks[0].frame == sixteenth * 6 * fpt
    assert abs(len(ticks) - ((end2 - sixteenth * 6 * fpt) // fpt + 1)) <= 1


def test_song_change_and_restart_send_stop_then_start():
    s = SyncScheduler(RATE, lambda song: [120.0, 90.0, None][song], clock=True)
    sim = Sim(s)
    sim.run(0, 0, 1.0)
    sim.msgs.clear()
    sim.run(1, 0, 1.0)                        # next song (gapless or not)
    assert sim.kinds()[:3] == ["stop", "start", "clock"]
    ticks = [m for m, _f in sim.msgs if m.kind == "clock"]
    assert abs(len(ticks) - 24 * 1.5) <= 2   # 90 BPM: 36 ticks a second
    sim.msgs.clear()
    sim.run(1, 0, 0.5)                        # the same song again from the top
    assert sim.kinds()[:2] == ["stop", "start"]
    sim.msgs.clear()
    sim.run(2, 0, 0.5)                        # no tempo: stop, and no clock at all
    assert sim.kinds() == ["stop"]


def test_mtc_quarter_frames_describe_the_song_position():
    for fps in (24, 25, 30):
        s = SyncScheduler(RATE, lambda song: None, clock=False, mtc=True, fps=fps)
        sim = Sim(s, seed=fps)
        end = sim.run(0, 0, 2.0)
        full = sim.msgs[0][0]
        assert full.data == mtc_full_frame(0, fps)
        qf = [m for m, _f in sim.msgs if m.kind == "qf"]
        assert all(m.data[0] == QUARTER_FRAME for m in qf)
        assert [m.data[1] >> 4 for m in qf[:16]] == list(range(8)) * 2
        groups = [decode_quarter_frames([m.data[1] for m in qf[i:i + 8]])
                  for i in range(0, len(qf) - 7, 8)]
        assert groups == [(2 * g, fps) for g in range(len(groups))]
        assert abs(len(qf) - (end * 4 * fps / RATE + 1)) <= 1
        # resume at 61.5 s: full frame there, quarter frames from the next even frame
        sim.msgs.clear()
        sim.run(0, end, 0.2, playing=False)
        sim.msgs.clear()
        at = int(61.5 * RATE)
        sim.run(0, at, 0.3)
        full = sim.msgs[0][0]
        assert full.data == mtc_full_frame(int(61.5 * fps), fps)
        qf = [m for m, _f in sim.msgs if m.kind == "qf"]
        tc, _ = decode_quarter_frames([m.data[1] for m in qf[:8]])
        assert tc % 2 == 0 and 0 <= tc / fps - 61.5 <= 2.5 / fps


def test_late_observation_sends_missed_ticks_and_a_long_stall_relocates():
    s = SyncScheduler(RATE, lambda song: 120.0)
    t = 0
    out, _ = s.step(0, 0, True, t)
    assert [m.kind for m in out] == ["start", "clock"]
    out, _ = s.step(0, int(0.1 * RATE), True, t + 100_000_000)   # 100 ms late: 4 ticks, burst
    assert [m.kind for m in out] == ["clock"] * 4
    out, _ = s.step(0, int(2.0 * RATE), True, t + 400_000_000)    # a jump: stop, relocate
    assert [m.kind for m in out][:3] == ["stop", "spp", "continue"]


def test_wake_time_is_the_next_due_message():
    s = SyncScheduler(RATE, lambda song: 120.0, mtc=True, fps=25)
    _out, wake = s.step(0, 0, True, 10_000)
    # next tick at 20.83 ms, next quarter frame at 10 ms
    assert wake == 10_000 + 10_000_000
    _out, wake = s.step(0, 0, False, 20_000)
    assert wake is None


# -- a daemon on JACK -----------------------------------------------------------------------------

TEMPO = 120.0
MIDI_YAML = """\
midi:
  api: jack
  in: {port: "testpedal:pedal"}
  map:
    - {note: 60, action: play}
    - {cc: 80, value: 127, action: stop}
    - {program: 2, action: "goto 2"}
  out: {port: "testgear:gear", clock: true, mtc: true, mtc_fps: 25}
"""


def midi_show(tmp_path: Path, seconds: list[float]):
    show = make_show(tmp_path, seconds, extra=MIDI_YAML)
    text = show.config.read_text()
    text = text.replace('  - title: "Song 1"\n', f'  - title: "Song 1"\n    tempo: {TEMPO}\n'
                        "    midi_out: [{program: 5, channel: 1}, {cc: 7, value: 100, "
                        "channel: 2}]\n")
    text = text.replace('  - title: "Song 2"\n', '  - title: "Song 2"\n    tempo: 90\n'
                        "    midi_out: [{program: 6}]\n")
    show.config.write_text(text)
    return show


class Pedal:
    def __init__(self):
        import rtmidi
        self.midi = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="testpedal")
        self.midi.open_virtual_port("pedal")

    def send(self, *msg: int) -> int:
        self.midi.send_message(list(msg))
        return time.monotonic_ns()

    def close(self):
        self.midi.delete()


def connected(d) -> bool:
    c = next(c for c in d.components if hasattr(c, "input"))
    return c.input.port.port_name is not None and c.output.port.port_name is not None


def test_note_plays_program_changes_at_song_start_and_clock_follows_audio(
        inproc, jack_audio, tmp_path):  # noqa: F811
    show = midi_show(tmp_path, [8.0, 3.0])
    gear, pedal = Gear(jack_audio.environ()), Pedal()
    try:
        d = inproc(show.config)
        wait_for(lambda: connected(d), 5, "MIDI ports connected")
        time.sleep(0.3)
        t_note = pedal.send(0x90, 60, 100)
        wait_state(d, "playing", 1)
        time.sleep(4.0)
        t_stop = pedal.send(0xB0, 80, 127)
        wait_state(d, "cued", 1)
        time.sleep(0.3)
        pedal.send(0xC0, 1)                      # program 2 as printed: goto 2 (cued)
        wait_state(d, "cued", 2)
        d.act(Action("play"), "test")
        wait_state(d, "playing", 2)
        time.sleep(0.5)
        rec = jack_audio.stop()
        msgs = gear.stop()
    finally:
        gear.close()
        pedal.close()
    kinds = [m[0] for m, _t in msgs]
    # song start: its program change and CC first, then Start, then clock
    assert [m for m, _t in msgs[:2]] == [[0xC0, 4], [0xB1, 7, 100]], msgs[:4]
    assert kinds[2:4] == [0xF0, START] or kinds[2:4] == [START, 0xF0], kinds[:6]
    starts = [t for m, t in msgs if m == [START]]
    stops = [t for m, t in msgs if m == [STOP]]
    assert len(starts) == 2 and len(stops) >= 1 and starts[0] < stops[0] < t_stop + 0.1e9
    # song 2: its program change before its Start
    i2 = next(i for i, (m, _t) in enumerate(msgs) if m == [0xC0, 5])
    assert msgs[i2][1] < starts[1]
    # clock ticks of song 1, matched against the audio
    exp = show.expected(0)
    with judged(rec):
        at = find_song_start(rec.audio, exp[:64])
        assert at is not None
        assert 0 < (rec.time_of_frame(at) - t_note) / 1e6 < 300
        ticks = [t for m, t in msgs if m == [CLOCK] and starts[0] <= t < stops[0]]
        fpt = frames_per_tick(TEMPO, RATE)
        # tick k against the moment song frame k * fpt was heard (a tick lost in JACK transit
        # would shift the rest by one: 20.8 ms at 120 BPM, still inside the last bound). Each
        # frame is found in the recording by its samples: after an underrun (seen in CI on a
        # loaded machine) the recording holds the silence the card played meanwhile, so
        # `at + k * fpt` is no longer that frame, though the clock rightly waited for it.
        heard, sent, i = [], [], at
        for k, t in enumerate(ticks):
            f = int(round(k * fpt))
            if f + 64 > len(exp):
                break
            j = find_song_start(rec.audio, exp[f:f + 64], start=i)
            if j is not None:
                i = j
                heard.append(rec.time_of_frame(j))
                sent.append(t)
        assert len(heard) >= 0.9 * len(ticks), (len(heard), len(ticks))
        err_ms = (np.array(sent) - np.array(heard)) / 1e6
        assert np.median(np.abs(err_ms)) < 10, err_ms[:20]
        assert np.max(np.abs(err_ms)) < 40, err_ms
        # the number of ticks over the heard span matches the tempo
        span_end = stops[0]
        heard_s = (rec.frame_at_time(span_end) - at) / RATE
        assert abs(len(ticks) - heard_s * TEMPO / 60 * 24) <= 3, (len(ticks), heard_s)
    # MTC: a full frame at 00:00:00:00, then quarter-frame groups counting up by 2 frames
    with judged(rec):
        assert [0xF0, 0x7F, 0x7F, 0x01, 0x01, 0x20, 0, 0, 0, 0xF7] in [m for m, _t in msgs]
        qf = [(m[1], t) for m, t in msgs if m[0] == QUARTER_FRAME and starts[0] <= t < stops[0]]
        assert qf[0][0] >> 4 == 0
        assert abs(len(qf) - heard_s * 100) <= 3
        groups, g = [], 0
        while g + 8 <= len(qf):                     # resync on piece 0 should JACK lose one
            if [d >> 4 for d, _t in qf[g:g + 8]] != list(range(8)):
                g += 1
                continue
            tc, fps = decode_quarter_frames([d for d, _t in qf[g:g + 8]])
            heard = (rec.frame_at_time(qf[g][1]) - at) / RATE
            assert fps == 25 and abs(tc / 25 - heard) < 0.02, (tc, heard)
            groups.append(tc)
            g += 8
        assert len(groups) >= heard_s * 12.5 - 2 and groups[0] == 0
        assert all(b - a >= 2 and (b - a) % 2 == 0 for a, b in zip(groups, groups[1:], strict=False))


def test_controller_plugged_in_late_unplugged_and_back(inproc, jack_audio, tmp_path):  # noqa: F811
    show = midi_show(tmp_path, [6.0, 3.0])
    d = inproc(show.config)
    comp = next(c for c in d.components if hasattr(c, "input"))
    time.sleep(1.2)
    assert comp.input.port.port_name is None       # nothing there yet, and no harm done
    pedal = Pedal()
    try:
        wait_for(lambda: comp.input.port.port_name, 4, "the pedal found")
        pedal.send(0xF0, 1, 2, 0xF7)                # garbage first: sysex, strays, half
        pedal.send(0x45, 0x12)
        pedal.send(0x93, 60)
        pedal.send(0xB0, 200 % 128)
        pedal.send(0x90, 60, 100)
        wait_state(d, "playing", 1)
        pedal.close()
        wait_for(lambda: comp.input.port.port_name is None, 4, "the pedal gone")
        pedal = Pedal()
        wait_for(lambda: comp.input.port.port_name, 4, "the pedal back")
        time.sleep(0.2)
        pedal.send(0xB0, 80, 127)
        wait_state(d, "cued", 1)
        assert comp.input.is_alive() and comp.output.is_alive()
        st = comp.status()
        assert st["midi_in"] == "testpedal:pedal" and st["midi_out"] is None
        assert st["midi_in_actions"] == 2
    finally:
        pedal.close()


def test_no_sequencer_or_server_is_retried_quietly_never_raised(monkeypatch, caplog):
    """`api: jack` with no JACK server (and `alsa` wherever there is no sequencer or no such
    port): nothing connects, nothing raises, one warning, slower retries."""
    from appliance.controls.midi import _Port

    monkeypatch.setenv("JACK_DEFAULT_SERVER", "bt-nonexistent-server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    port = _Port("in", "jack", "pedal", "backtrack-in")
    assert port.poll() is False and port.midi is None
    first_retry = port.retry_at
    assert port.poll() is False and port.retry_at == first_retry   # not retried before then
    port.retry_at = 0.0
    assert port.poll() is False and port.backoff > 1.0
    assert sum("api not available" in r.message for r in caplog.records) == 1
    alsa = _Port("out", "alsa", "surely-no-such-port-here", "backtrack-out")
    assert alsa.poll() is False and alsa.port_name is None
    alsa.close()


def ctl(show, req: dict) -> dict:
    return ctl_request(show.socket, req)


def c_out(d):
    return next(c for c in d.components if hasattr(c, "output")).output


def test_jump_sends_song_position_of_the_section(inproc, jack_audio, tmp_path):  # noqa: F811
    """`jump chorus now` over the control socket while song 1 plays: the gear gets Stop, Song
    Position Pointer 32 (the chorus is bar 3: 8 quarters, 32 16ths in), Continue and a
    full-frame MTC at 00:00:04:00, then the clock goes on at the tempo, with no burst."""
    show = make_show(tmp_path, [10.0, 1.0], extra=MIDI_YAML)
    text = show.config.read_text().replace(
        '  - title: "Song 1"\n', '  - title: "Song 1"\n    tempo: 120\n'
        "    sections: [{name: intro, at: 1}, {name: chorus, at: 3}]\n")
    show.config.write_text(text)
    gear = Gear(jack_audio.environ())
    try:
        d = inproc(show.config)
        wait_for(lambda: c_out(d).port.port_name is not None, 5, "MIDI out connected")
        time.sleep(0.3)
        assert ctl(show, {"cmd": "play"})["ok"]
        wait_state(d, "playing", 1)
        time.sleep(1.0)
        t_jump = time.monotonic_ns()
        r = ctl(show, {"cmd": "jump", "to": "chorus", "when": "now"})
        assert r["ok"], r
        wait_for(lambda: d.status()["section"] == "chorus", 3, "the chorus")
        time.sleep(1.0)
        ctl(show, {"cmd": "stop"})
        time.sleep(0.2)
        msgs = gear.stop()
    finally:
        gear.close()
    after = [(m, t) for m, t in msgs if t >= t_jump]
    spps = [(i, m) for i, (m, _t) in enumerate(after) if m[0] == SONG_POSITION]
    assert len(spps) == 1, after[:12]
    i, spp = spps[0]
    assert spp[1] | spp[2] << 7 == 32, spp
    assert after[i - 1][0] == [STOP] and after[i + 1][0] == [CONTINUE], after[i - 2:i + 3]
    assert [0xF0, 0x7F, 0x7F, 0x01, 0x01, 0x20, 0, 4, 0, 0xF7] in [m for m, _t in after]
    # before the jump, no relocation (the song ran from its Start)
    assert [m for m, t in msgs if t < t_jump and m[0] in (SONG_POSITION, CONTINUE)] == []
    # after Continue: the clock at 120 BPM (48 ticks a second), no burst
    t_cont = after[i + 1][1]
    stops = [t for m, t in after[i + 2:] if m == [STOP]]
    ticks = [t for m, t in after[i + 2:] if m == [CLOCK] and t < stops[0]]
    span_s = (ticks[-1] - ticks[0]) / 1e9
    assert abs(len(ticks) - 1 - span_s * 48) <= 2, (len(ticks), span_s)
    assert sum(t < t_cont + 15_000_000 for t in ticks) <= 2, [(t - t_cont) / 1e6 for t in ticks[:5]]


def test_a_fader_trims_a_stem_and_a_note_mutes_one(inproc, jack_audio, tmp_path):  # noqa: F811
    """`{cc: 7, trim: pad}`: the fader's value sets the output's live trim by the GM volume
    law; `{note: 40, action: "mute s1_bass"}` mutes a stem."""
    yaml_ = MIDI_YAML.replace("    - {note: 60, action: play}\n",
                              "    - {note: 60, action: play}\n    - {cc: 7, trim: pad}\n"
                              '    - {note: 40, action: "mute s1_bass"}\n')
    show = make_show(tmp_path, [6.0, 2.0], extra=yaml_)
    pedal = Pedal()
    try:
        d = inproc(show.config)
        comp = next(c for c in d.components if hasattr(c, "input"))
        wait_for(lambda: comp.input.port.port_name, 5, "the pedal found")
        pedal.send(0xB0, 7, 64)
        wait_for(lambda: d.status()["mix"]["trim_db"] == {"pad": -11.9}, 3, "the fader's trim")
        pedal.send(0xB0, 7, 0)
        wait_for(lambda: d.status()["mix"]["trim_db"] == {"pad": -60.0}, 3, "the fader down")
        pedal.send(0x90, 40, 100)
        wait_for(lambda: d.status()["mix"]["muted"] == ["s1_bass"], 3, "the note's mute")
    finally:
        pedal.close()


def test_midi_trim_needs_a_cc_without_value(tmp_path):
    from appliance import config
    bad = MIDI_YAML.replace("    - {note: 60, action: play}\n",
                            "    - {note: 60, trim: pad}\n")
    show = make_show(tmp_path, [1.0], extra=bad)
    with pytest.raises(config.ConfigError, match=r"midi.map\[0\].trim: trim goes with a cc"):
        config.load(show.config)

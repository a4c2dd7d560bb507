"""`backtrack render --script`: presses of vamp, release and jump rendered offline, judged
against the song rendered straight (every output frame must be the song frame the engine
would play, the crossfades the equal-power mix of the two sides), against the live writer
and decoder fed the same switches (byte for byte), and the script's error messages.

The stem is seeded noise, so a frame out of place cannot pass for another; the song has a
click, a spoken voice guide and LTC, which the decoder generates from the song frame: a
turn of a vamp must replay them too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from appliance.audio.crossfade import equal_power, fade_frames
from appliance.audio.engine import DECODE_BLOCK, Decoder
from appliance.audio.formats import FORMAT_INFO
from appliance.audio.writer import Slot, Writer
from appliance.config import load
from appliance.renderscript import ScriptError, parse_script, plan_script
from appliance.structure import Section, Structure
from appliance.tempomap import Meter, TempoChange, TempoMap

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
BAR = RATE             # 240 BPM in 4/4: a bar is one second
BEAT = BAR // 4
COUNT_IN = BAR         # count_in: 1 -> play starts a bar before bar 1
SONG_FRAMES = 8 * BAR  # bars 1-8
XF = int(0.010 * RATE)  # the default crossfade, 10 ms
CHANNELS = 5           # tracks L/R, click, cue, ltc

SONG = """\
device: {{name: "null", channels: 5, rate: 48000, format: {fmt}}}
outputs: {{tracks: [1, 2], click: 3, cue: 4, ltc: 5}}
songs:
  - title: Song
    stems: [{{file: tracks.wav, to: tracks}}]
    tempo: 240
    count_in: 1
    sections: [{{name: intro, at: 1}}, {{name: verse, at: 3}}, {{name: chorus, at: 5}},
               {{name: outro, at: 7}}]
    click: {{to: click}}
    guide: {{to: cue}}
    ltc: {{to: ltc, fps: 25}}
"""

SCRIPT = "vamp@3.3 release@4.1#2 jump:outro@5.2"
# What the engine makes of SCRIPT, in song frames, worked out by hand:
# - vamp pressed at 3.3 loops the verse, bars 3-4 (frames 2 s to 4 s): at 5.1 back to 3.1;
# - release at 4.1 the second time it plays (in the second turn): no switch at the loop end;
# - jump at 5.2 to the outro at the next bar line (6.1): from frame 5 s to 7 s, on to the end.
# Output frame -> song frame, from the count-in (song frame -1 s) on:
SEGMENTS = [  # (first output frame, first song frame, frames)
    (0, -COUNT_IN, COUNT_IN + 4 * BAR),        # count-in, bars 1-4 (first pass of the verse)
    (5 * BAR, 2 * BAR, 2 * BAR),               # the verse again (second turn)
    (7 * BAR, 4 * BAR, BAR),                   # released: the chorus's first bar
    (8 * BAR, 6 * BAR, 2 * BAR),               # the jump: outro to the end
]
TOTAL = 10 * BAR


def write_show(d: Path, fmt: str = "FLOAT_LE") -> Path:
    if not (d / "tracks.wav").exists():
        rng = np.random.default_rng(12)
        noise = (0.4 * rng.uniform(-1, 1, (SONG_FRAMES, 2))).astype(np.float32)
        sf.write(str(d / "tracks.wav"), noise, RATE, subtype="FLOAT")
    cfg = d / f"show-{fmt}.yaml"
    cfg.write_text(SONG.format(fmt=fmt))
    return cfg


def render_cli(cfg: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "appliance", "render", "--config", str(cfg),
                        "--song", "1", "--out", str(out), *extra],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def wav_data(path: Path) -> bytes:
    """The data chunk of a WAV: the device bytes as the render wrote them."""
    raw = path.read_bytes()
    pos = 12
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4:pos + 8], "little")
        if raw[pos:pos + 4] == b"data":
            return raw[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


@pytest.fixture(scope="module")
def show_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("render-script")


@pytest.fixture(scope="module")
def straight(show_dir: Path) -> np.ndarray:
    """The song rendered without a script: count-in, then every song frame once."""
    out = show_dir / "straight.wav"
    r = render_cli(write_show(show_dir), out)
    assert r.returncode == 0, r.stderr
    got = sf.read(str(out), dtype="float32", always_2d=True)[0]
    assert got.shape == (COUNT_IN + SONG_FRAMES, CHANNELS)
    return got


def at_song(straight: np.ndarray, frame: int, n: int) -> np.ndarray:
    return straight[COUNT_IN + frame:COUNT_IN + frame + n]


def test_straight_render_has_the_count_in_click_guide_and_ltc(straight: np.ndarray):
    """What the decoder adds from the song frame is in the render: the count-in bar is the
    click alone (and timecode); the click sounds on every beat, the guide speaks before
    each section, the LTC channel carries a signal."""
    count_in = straight[:COUNT_IN]
    assert not np.any(count_in[:, :2])  # no audio yet
    for beat in range(4):  # the count-in's four beats
        assert np.abs(count_in[beat * BEAT:beat * BEAT + 200, 2]).max() > 0.1
    assert np.abs(straight[COUNT_IN:, 2]).max() > 0.1
    # the guide speaks each section's name in the bar before it: 'intro' in the count-in,
    # 'verse' in bar 2
    assert np.abs(count_in[:, 3]).max() > 0.1
    assert np.abs(at_song(straight, BAR, BAR)[:, 3]).max() > 0.1
    assert np.abs(straight[:, 4]).max() > 0.05  # timecode


def test_script_plays_exact_frames_with_equal_power_crossfades(show_dir: Path,
                                                               straight: np.ndarray):
    out = show_dir / "script.wav"
    r = render_cli(write_show(show_dir), out, "--script", SCRIPT)
    assert r.returncode == 0, r.stderr
    assert "vamp@3.3: vamp 'verse' (3.1 to 5.1) until released" in r.stdout
    assert "0:05.000  5.1 -> 3.1 (vamp)" in r.stdout
    assert "0:08.000  6.1 -> 7.1 (jump)" in r.stdout
    got = sf.read(str(out), dtype="float32", always_2d=True)[0]
    assert got.shape == (TOTAL, CHANNELS)
    g_out, g_in = equal_power(XF)
    # independently of the implementation: cos/sin at the middle of each frame
    t = (np.arange(XF) + 0.5) / XF * (np.pi / 2)
    np.testing.assert_allclose(g_out[:, 0], np.cos(t), atol=1e-7)
    np.testing.assert_allclose(g_in[:, 0], np.sin(t), atol=1e-7)
    prev_end = None  # song frame where the previous segment stopped: the crossfade's old side
    for out0, song0, n in SEGMENTS:
        want = at_song(straight, song0, n)
        seg = got[out0:out0 + n]
        if prev_end is None or prev_end == song0:
            assert np.array_equal(seg, want), f"segment at output {out0}"
        else:
            # the crossfade: new side in, old side (the song read on) out, as the writer
            # computes it in float32; then the new side's exact frames
            old = at_song(straight, prev_end, XF)
            mixed = want[:XF] * g_in + old * g_out
            assert np.array_equal(seg[:XF], np.clip(mixed, -1, 1)), f"crossfade at {out0}"
            assert np.array_equal(seg[XF:], want[XF:]), f"after the crossfade at {out0}"
        prev_end = song0 + n
    # a turn of the vamp is exactly the verse long: the switch back comes 2 bars after the
    # first, and the verse's frames (click, cue and timecode included) repeat
    assert np.array_equal(got[5 * BAR + XF:7 * BAR], got[3 * BAR + XF:5 * BAR])


@pytest.mark.parametrize("fmt", ["S24_3LE", "S16_LE", "FLOAT_LE"])
def test_render_is_byte_for_byte_what_the_decoder_and_writer_play(show_dir: Path, fmt: str):
    """The live pipeline, driven by hand in this thread: the engine's Decoder fills slots
    (mix, overlays, device bytes), the Writer plays them period by period and makes the
    switches the engine posts for SCRIPT (a vamp's next turn posted after each switch, the
    release cancelling it, the jump). Its bytes are the render's."""
    cfg_path = write_show(show_dir, fmt)
    out = show_dir / f"script-{fmt}.wav"
    r = render_cli(cfg_path, out, "--script", SCRIPT)  # also makes the spoken cues
    assert r.returncode == 0, r.stderr
    rendered = wav_data(out)
    cfg = load(cfg_path)
    dev = cfg.device
    fb = dev.channels * FORMAT_INFO[dev.format][0]
    assert len(rendered) == TOTAL * fb
    slots = [Slot(i, 4 * DECODE_BLOCK, fb) for i in range(5)]
    writer = Writer(dev, slots, 240)  # never started: no device opened
    decoder = Decoder(cfg, slots, writer)
    # slot 0 from the count-in, 1 and 3 from the verse (the turns), 2 from the outro
    for slot, frame in zip(slots[:4], (-COUNT_IN, 2 * BAR, 6 * BAR, 2 * BAR), strict=True):
        slot.want = (0, frame, slot.index + 1)
    for _ in range(40):
        decoder._step()
    assert all(s.have == s.want for s in slots[:4])
    gains = equal_power(fade_frames(cfg.songs[0].structure.crossfade_ms, dev.rate))

    def switch(frm: int, at: int, to: int, tag: str) -> None:
        writer.post("switch", frm, at, to, *gains, (tag, 0))

    writer.post("start", 0, False)
    heard = bytearray()
    switched = []
    posted_release = posted_jump = False
    while len(heard) < (TOTAL + 4 * dev.period) * fb:
        for _ in range(2):
            decoder._step()
        out_frame = len(heard) // fb
        if out_frame == dev.period:
            switch(0, 4 * BAR, 1, "vamp")           # pressed at 3.3: the loop's end, 5.1
        if not posted_release and out_frame >= 6 * BAR:
            writer.post("cancel_switch", None)      # release, in the second turn (at 4.1)
            posted_release = True
        if not posted_jump and out_frame >= 7 * BAR + BEAT:
            switch(1, 5 * BAR, 2, "jump")           # pressed at 5.2: the bar line 6.1
            posted_jump = True
        data = writer._render_period()
        heard += bytes(data)
        writer._release_held()
        writer.written += dev.period
        while writer.events:
            ev = writer.events.popleft()
            if ev[0] == "switched":
                switched.append((ev[1][0], ev[4]))
                if ev[1][0] == "vamp":
                    switch(1, 4 * BAR, 3, "vamp")   # the engine posts the next turn
    assert writer.starved == 0
    assert switched == [("vamp", 5 * BAR), ("jump", 8 * BAR)]
    assert bytes(heard[:TOTAL * fb]) == rendered
    assert not any(heard[TOTAL * fb:])  # the song ended there: silence


def test_count_in_only_where_play_starts_the_song(show_dir: Path):
    """`--song all`: the first song counts in (play from cued), a song after one with
    `after: next` does not (gapless), one after `after: stop` does (play again)."""
    text = write_show(show_dir).read_text()
    song = text[text.index("  - title: Song"):]
    two = text.replace("    tempo: 240\n", "    after: next\n    tempo: 240\n", 1)
    cfg = show_dir / "three-songs.yaml"
    cfg.write_text(two + song.replace("title: Song", "title: Again") +
                   song.replace("title: Song", "title: Third"))
    out = show_dir / "all.wav"
    r = subprocess.run([sys.executable, "-m", "appliance", "render", "--config", str(cfg),
                        "--song", "all", "--out", str(out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    frames = sf.info(str(out)).frames
    assert frames == (COUNT_IN + SONG_FRAMES) + SONG_FRAMES + (COUNT_IN + SONG_FRAMES)
    r = subprocess.run([sys.executable, "-m", "appliance", "render", "--config", str(cfg),
                        "--song", "all", "--out", str(out), "--script", "vamp@3.1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "--script plays the presses in one song: give --song N, not all" in r.stderr


# -- the script, pure ----------------------------------------------------------------------

def structure(first_bar: int = 1) -> Structure:
    tempo = TempoMap([TempoChange(1, 240, Meter(4, 4))], 0.0, RATE)
    names = [("intro", first_bar), ("verse", 3), ("chorus", 5), ("outro", 7)]
    secs = tuple(Section(n, tempo.frame_at(b), bar=b, beat=1) for n, b in names)
    return Structure(tempo=tempo, sections=secs, count_in=1)


def plan(text: str, st: Structure | None = None):
    st = st or structure()
    return plan_script(parse_script(text, st, RATE, "Song"), st, SONG_FRAMES,
                       st.count_in_start(), RATE, "Song")


def test_plan_of_the_script():
    p = plan(SCRIPT)
    assert p.start == -COUNT_IN and p.frames == TOTAL
    assert [(s.at, s.to, s.kind, s.out) for s in p.switches] == [
        (4 * BAR, 2 * BAR, "vamp", 5 * BAR), (5 * BAR, 6 * BAR, "jump", 8 * BAR)]


@pytest.mark.parametrize("text, switches, frames", [
    # three turns of a one-bar vamp from the bar holding 4.2, then on
    ("vamp1@4.2 release@4.3#3", [(4 * BAR, 3 * BAR)] * 2, COUNT_IN + SONG_FRAMES + 2 * BAR),
    # pressing vamp again releases it, as on the box
    ("vamp@3.1 vamp@3.1#2", [(4 * BAR, 2 * BAR)], COUNT_IN + SONG_FRAMES + 2 * BAR),
    # jump now, on a beat, at the section's end; next_section and prev_section
    ("jump:outro:now@2.2", [(BAR + BEAT, 6 * BAR)], COUNT_IN + BAR + BEAT + 2 * BAR),
    ("jump:outro:beat@2.2", [(BAR + 2 * BEAT, 6 * BAR)], COUNT_IN + BAR + 2 * BEAT + 2 * BAR),
    ("jump:next_section:section_end@3.2", [(4 * BAR, 4 * BAR)], COUNT_IN + SONG_FRAMES),
    ("jump:prev_section@6.1", [(6 * BAR, 2 * BAR)], COUNT_IN + SONG_FRAMES + 4 * BAR),
    ("jump:chorus:2_bars@1.3", [(2 * BAR, 4 * BAR)], COUNT_IN + SONG_FRAMES - 2 * BAR),
    # a jump replaces a vamp; cancel forgets a jump; seconds as positions
    ("vamp@3.1 jump:outro@3.2", [(3 * BAR, 6 * BAR)], COUNT_IN + 3 * BAR + 2 * BAR),
    ("jump:outro@3.1 cancel@3.2", [], COUNT_IN + SONG_FRAMES),
    ("jump:outro@2.5s", [(3 * BAR, 6 * BAR)], COUNT_IN + 3 * BAR + 2 * BAR),
    # during the count-in: the first section is the next one
    ("jump:chorus:bar@0.2", [(0, 4 * BAR)], COUNT_IN + SONG_FRAMES - 4 * BAR),
])
def test_plan_follows_the_engine(text, switches, frames):
    p = plan(text)
    assert [(s.at, s.to) for s in p.switches] == switches
    assert p.frames == frames


@pytest.mark.parametrize("text, message", [
    ("vamp@1.3", "--script 'vamp@1.3': bar 1 beat 3 is before the first section of 'Song' "
                 "('intro' at 2.1); vampN loops N bars there"),
    ("release@4.1", "--script 'release@4.1': no vamp to release (press vamp first)"),
    ("jump:refrain@5.1", "--script 'jump:refrain@5.1': no section 'refrain' in 'Song'; "
                         "sections: intro, verse, chorus, outro"),
    ("jump:chorus@9.1", "--script 'jump:chorus@9.1': bar 9 is past the song's end: 'Song' "
                        "ends at 9.1 (8.00 s)"),
    ("jump:chorus:2_bars@8.1", "--script 'jump:chorus:2_bars@8.1': jump to 'chorus' 2_bars: "
                               "no such point before the song ends"),
    ("vamp@3.1", "--script 'vamp@3.1': the vamp of 'verse' is never released: the box would "
                 "loop it for ever; add release@POSITION inside the loop"),
    ("vamp@3.1 release@6.1", "--script 'release@6.1': not reached: the vamp of 'verse' "
                             "(3.1 to 5.1) loops before it"),
    ("jump:outro@3.1 release@4.1", "--script 'release@4.1': not reached: after "
                                   "jump:outro@3.1 the song does not come to bar 4"),
    ("jump:chorus:soon@5.1", "--script 'jump:chorus:soon@5.1': 'soon' is not a point to "
                             "jump at; use now, beat, bar"),
    ("vamp3.1", "--script 'vamp3.1': not a press; write EVENT@POSITION"),
    ("vamp@3.5", "--script 'vamp@3.5': bar 3 is in 4/4: beat 5 is not one of its beats; "
                 "valid: 3.1 to 3.4"),
    ("vamp@3.x", "--script 'vamp@3.x': '3.x' is not a position"),
    ("release@4.1#0", "--script 'release@4.1#0': '#0' is not a count"),
    ("vamp99@3.1", "--script 'vamp99@3.1': a vamp loops 1 to 64 bars, not 99"),
    ("loop@3.1", "--script 'loop@3.1': 'loop' is not an event"),
    ("cancel@2.1", "--script 'cancel@2.1': nothing to cancel"),
    ("vamp@-3.1", "--script 'vamp@-3.1': bar -3 is before the render starts (at 0.1, the "
                  "start of the count-in)"),
    ("'jump:outro@3.1", "--script: No closing quotation"),
    ("", "--script is empty"),
])
def test_script_errors_name_the_token(text, message):
    with pytest.raises(ScriptError) as exc:
        plan(text, structure(first_bar=2))
    assert message in str(exc.value)


def test_script_without_tempo_or_sections():
    with pytest.raises(ScriptError, match="bar positions need the song's tempo"):
        parse_script("vamp@3.1", None, RATE, "Song")
    with pytest.raises(ScriptError, match="song 'Song' has no sections to jump to"):
        parse_script("jump:chorus@2s", None, RATE, "Song")
    with pytest.raises(ScriptError, match="song 'Song' has no sections to vamp"):
        plan_script(parse_script("vamp@2s", None, RATE, "Song"), None, SONG_FRAMES, 0,
                    RATE, "Song")


def test_bad_script_on_the_command_line_writes_nothing(show_dir: Path):
    out = show_dir / "bad.wav"
    r = render_cli(write_show(show_dir), out, "--script", "vamp@3.1 jump:refrain@5.1")
    assert r.returncode == 1
    assert "backtrack: --script 'jump:refrain@5.1': no section 'refrain' in 'Song'" \
        in r.stderr
    assert not out.exists()

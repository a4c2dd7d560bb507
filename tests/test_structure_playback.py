"""Song structure on the real rig (issue 12): vamps, quantized jumps, the generated click,
the count-in and LTC, judged from what the JACK recorder heard.

The stems are seeded noise (tests/showkit.py), so every recorded frame says which song
frame it is: a loop that repeats a frame too many or lands a frame off fails.
"""

from __future__ import annotations

import time

import numpy as np

from tests.jackaudio import judged
from tests.ltcdecode import decode as decode_ltc
from tests.showkit import (
    RATE,
    DaemonProcess,
    aligned_song,
    clean_after,
    find_frame,
    known_runs,
    make_show,
    song_frame_of,
    wait_for,
)

BAR = 2 * RATE            # 120 BPM in 4/4: a bar is two seconds
XFADE = int(0.010 * RATE)  # the default crossfade, 10 ms


def with_structure(show, song_lines: str, song: int = 1):
    """Put song-level keys (indented YAML lines) into song `song` of a make_show config."""
    text = show.config.read_text()
    head = f'  - title: "Song {song}"\n'
    assert head in text
    show.config.write_text(text.replace(head, head + song_lines, 1))
    return show


SECTIONS = ("    tempo: 120\n"
            "    sections: [{name: intro, at: 1}, {name: verse, at: 2}, "
            "{name: chorus, at: 4}, {name: outro, at: 6}]\n")


def runs(rec_audio: np.ndarray, exp: np.ndarray, start: int, stop: int, step: int = 64):
    """(recorded index, song frame) every `step` frames: where the recording is in the song."""
    out = []
    for at in range(start, min(stop, len(rec_audio) - 64), step):
        f = song_frame_of(rec_audio, exp, at)
        out.append((at, f))
    return out


def switch_points(pairs: list[tuple[int, int | None]]) -> list[tuple[int, int, int]]:
    """(recorded index, song frame before, song frame after) where the song frame stops
    advancing with the recording."""
    pts = []
    known = [(r, f) for r, f in pairs if f is not None]  # a crossfade matches neither side
    for (r0, f0), (r1, f1) in zip(known, known[1:], strict=False):
        if f1 - f0 != r1 - r0:
            pts.append((r1, f0 + (r1 - r0), f1))
    return pts


def crossfade(exp: np.ndarray, old: int, new: int) -> np.ndarray:
    """What the 10 ms equal-power crossfade from song frame `old` to `new` should be, written
    out here (cos/sin of a quarter turn at each frame's middle), not taken from the code."""
    t = (np.arange(XFADE) + 0.5) / XFADE * (np.pi / 2)
    return exp[old:old + XFADE, :7] * np.cos(t)[:, None] \
        + exp[new:new + XFADE, :7] * np.sin(t)[:, None]


def exact_after_switch(audio: np.ndarray, exp: np.ndarray, rec_at: int, song_at: int,
                       n: int) -> bool:
    """The recording from `rec_at` is song frames `song_at`.. exactly, for n frames."""
    return np.array_equal(audio[rec_at:rec_at + n, :7], exp[song_at:song_at + n, :7])


def test_vamp_repeats_the_section_exactly_and_leaves_on_its_end(jack_audio, tmp_path):
    """Vamp the verse (bars 2-3: song frames 2 s to 6 s): each turn is the section's exact
    frames (past the 10 ms crossfade), turns are exactly a section long, and after the
    release the song plays on from the loop's end."""
    show = with_structure(make_show(tmp_path, [16.0]), SECTIONS)
    S, E = BAR, 3 * BAR
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        wait_for(lambda: d.status()["section"] == "verse", timeout=5)
        st = d.status()
        r = d.ctl("vamp")
        assert r["ok"], r
        assert r["state"]["vamp"] and "verse" in r["state"]["pending"]["text"]
        # two turns, then release in the third
        for turn in (1, 2):
            wait_for(lambda: d.status()["position_s"] > 5.0, timeout=8, what="the loop's end")
            wait_for(lambda: d.status()["position_s"] < 3.0, timeout=3, what=f"turn {turn}")
        rel = d.ctl("vamp")
        assert rel["ok"] and not rel["state"]["vamp"], rel
        wait_for(lambda: d.status()["section"] == "chorus", timeout=8, what="the chorus")
        time.sleep(0.5)
        d.ctl("stop")
        time.sleep(0.2)
    rec = jack_audio.stop()
    exp = show.expected(0)
    assert st["bar_beat"].startswith("2.") and st["next_section"] == "chorus"
    with judged(rec):
        a = rec.audio
        start = find_frame(a, exp, 0)
        assert start is not None
        loops: list[int] = []
        released = None
        pos = start
        while True:
            end_at = find_frame(a[pos:], exp, E - 64)
            if end_at is None:
                break
            r_loop = pos + end_at + 64     # recorded index where song frame E would be
            if exact_after_switch(a, exp, r_loop, E, RATE // 2):
                released = r_loop          # no turn: the song plays on from the loop's end
                break
            loops.append(r_loop)
            # past the crossfade: the section's frames from S + XFADE, exactly
            assert exact_after_switch(a, exp, r_loop + XFADE, S + XFADE, BAR), \
                f"turn at recorded {r_loop} is not the verse from its start"
            # the crossfade itself: equal-power mix of the two sides, no step
            assert np.allclose(a[r_loop:r_loop + XFADE, :7], crossfade(exp, E, S), atol=1e-6)
            pos = r_loop + BAR
        assert len(loops) >= 2, f"only {len(loops)} turns heard; {d.log()[-2000:]}"
        # each turn exactly a section long (E - S frames), unless the recorder missed cycles
        if rec.missed_cycles() == 0:
            assert all(b - a_ == E - S for a_, b in zip(loops, loops[1:], strict=False)), loops
        # released: a section after the last turn the song runs on past E into the chorus
        assert released == loops[-1] + (E - S) or rec.missed_cycles(), (released, loops)


def test_jump_at_bar_lands_on_the_bar_line(jack_audio, tmp_path):
    """`jump outro bar` in the intro: the switch happens at the first bar line after the
    press (song frame a multiple of a bar), to the outro's first frame, with no step."""
    show = with_structure(make_show(tmp_path, [16.0]), SECTIONS)
    with DaemonProcess(show, jack_audio.environ()) as d:
        d.ctl("play")
        wait_for(lambda: d.status()["position_s"] > 0.6, timeout=5)
        before = d.status()["position_s"]
        r = d.ctl({"cmd": "jump", "to": "outro", "when": "bar"})
        assert r["ok"], r
        assert r["state"]["pending"]["to"] == "outro"
        wait_for(lambda: d.status()["section"] == "outro", timeout=5, what="the outro")
        assert d.status()["pending"] is None
        # a bad name is refused with the names, and nothing changes
        bad = d.ctl({"cmd": "jump", "to": "bridge"})
        assert not bad["ok"] and "intro, verse, chorus, outro" in bad["error"]
        time.sleep(0.5)
        d.ctl("stop")
    rec = jack_audio.stop()
    exp = show.expected(0)
    with judged(rec):
        a = rec.audio
        start = find_frame(a, exp, 0)
        pairs = runs(a, exp, start, start + 3 * BAR, 256)
        pts = switch_points(pairs)
        assert pts, "no jump heard"
        # locate it to the frame: the last frame of the intro heard before the switch
        r_prev = max(r for r, f in pairs if f is not None and r < pts[0][0])
        f_prev = song_frame_of(a, exp, r_prev)
        bar_line = (f_prev // BAR + 1) * BAR
        assert bar_line == BAR * (int(before * RATE) // BAR + 1), (bar_line, before)
        r_switch = r_prev + (bar_line - f_prev)
        target = 5 * BAR
        assert exact_after_switch(a, exp, r_switch + XFADE, target + XFADE, RATE // 4), \
            "the outro does not start at the bar line"
        assert np.allclose(a[r_switch:r_switch + XFADE, :7], crossfade(exp, bar_line, target),
                           atol=1e-6)


def test_click_count_in_and_ltc_follow_the_tempo_map(jack_audio, tmp_path):
    """A song without a click stem: the generated click has an onset on every beat the map
    says (through a meter change and a tempo ramp), a one-bar count-in comes first, and the
    LTC on its own output says the song position."""
    show = make_show(tmp_path, [14.0])
    text = show.config.read_text().replace("s1_click.wav, to: click", "s1_click.wav, to: pad")
    text = text.replace("outputs: {", "outputs: {ltc: [8], ")
    show.config.write_text(text)
    with_structure(show, "    tempo_map: [{bar: 1, bpm: 120, meter: 4/4}, {bar: 3, bpm: 120, "
                         "meter: 3/4}, {bar: 5, bpm: 120, ramp_to: 180, bars: 2}]\n"
                         "    click: {to: click, level_db: -6}\n"
                         "    count_in: 1\n"
                         "    ltc: {to: ltc, fps: 25}\n")
    with DaemonProcess(show, jack_audio.environ()) as d:
        r = d.ctl("play")
        assert r["ok"], r
        wait_for(lambda: d.status()["count_in"] and d.status()["position_s"] < -1.0,
                 timeout=2, what="the count-in shown in status")
        wait_for(lambda: d.status()["position_s"] > 9.0, timeout=15, what="9 s of the song")
        d.ctl("stop")
    rec = jack_audio.stop()
    exp = show.expected(0)
    with judged(rec):
        # by song frame from 3 s before the song (the count-in), placed by the tracks and
        # bass outputs (not the click output); NaN where the harness itself lost frames
        pre = 3 * RATE
        a = aligned_song(rec, exp, slice(2, 5), before=pre)
        n = pre + 9 * RATE
        assert (~np.isnan(a[:n, 0])).mean() > 0.5, "the harness kept too little"
        # expected beats, computed here by hand: bars 1-2 in 4/4 and 3-4 in 3/4 at 120
        # (24000 frames a beat), then bars 5-6 ramp 120 -> 180 linearly in beats
        beats = [-4 * 24000 + k * 24000 for k in range(4)]       # the count-in bar
        beats += [k * 24000 for k in range(8)]
        beats += [8 * 24000 + k * 24000 for k in range(6)]
        t = 14 * 24000 / RATE
        for k in range(6):  # the 6 beats of the ramp (3/4 bars 5 and 6)
            beats.append(round(t * RATE))
            # the integral of 60 / bpm(b) over beat k, bpm = 120 + 10 b (linear in beats)
            t += 6 * np.log((120 + 10 * (k + 1)) / (120 + 10 * k))
        click = np.nan_to_num(a[:n, 0])
        onsets = []
        above = np.flatnonzero(np.abs(click) > 0.05)
        last = -10**9
        for i in above:
            if i - last > 2000:
                onsets.append(int(i) - pre)
            last = i
        # every beat the recording kept (2000 frames either side) is heard, and nothing else
        kept = [(x - pre, y - pre) for x, y in known_runs(a[:n, 0])]
        want = [b for b in beats if b < 9 * RATE - 2000
                and any(x + 2000 <= b < y - 2000 for x, y in kept)]
        heard = [o for o in onsets if any(x + 2000 <= o < y - 2000 for x, y in kept)]
        assert len(want) >= len(beats) // 2, "the harness kept too few beats"
        assert heard == want, (heard, want)
        # LTC: every decoded frame starts at song frame round(k * rate / fps)
        frames = []
        for x, y in known_runs(a[pre:pre + 8 * RATE, 7], min_len=RATE // 2):
            frames += [(x + idx, tc, df) for idx, tc, df in decode_ltc(a[pre + x:pre + y, 7],
                                                                      RATE)]
        assert len(frames) > 80
        for idx, tc, _df in frames:
            hh, mm, ss, ff = (int(x) for x in tc.replace(";", ":").split(":"))
            k = ((hh * 60 + mm) * 60 + ss) * 25 + ff
            assert abs(idx - k * RATE / 25) < 2, (idx, tc)


def test_pair_follower_vamps_with_the_leader_and_a_takeover_goes_on_vamping(
        jack_audio_factory, tmp_path):
    """The leader vamps the verse; the follower (silent) makes the same turns at the same
    song frames (it stays locked through them), and when the leader is killed mid-vamp the
    follower, now heard, goes on vamping: its recording turns from the verse's end back to
    its start."""
    from tests.test_protection import default_pair, wait_both_protected
    ja = jack_audio_factory(seconds=40)
    jb = jack_audio_factory(seconds=40)
    sa, sb = default_pair(tmp_path, a_seconds=(16.0,), b_seconds=(16.0,))
    for s in (sa, sb):
        with_structure(s, SECTIONS)
    S, E = BAR, 3 * BAR
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        wait_for(lambda: a.status()["role"] == "leader", timeout=10, what="A leading")
        wait_both_protected(a, b, timeout=20)  # says why not, from both units
        a.ctl("play")
        try:
            wait_for(lambda: b.status()["peer"]["locked"], timeout=20,
                     what="the follower locked")
        except AssertionError as e:  # say why: the follower's peer status and its log
            raise AssertionError(f"{e}; follower: {b.status()['peer']}; log: "
                                 f"{b.log()[-1500:]}") from None
        wait_for(lambda: a.status()["section"] == "verse", timeout=5)
        assert a.ctl("vamp")["ok"]
        wait_for(lambda: b.status()["vamp"], timeout=2, what="the follower's copy of the vamp")
        # one turn: both still locked, the follower made it at the same frame
        wait_for(lambda: a.status()["position_s"] > 5.0, timeout=8, what="the loop's end")
        wait_for(lambda: a.status()["position_s"] < 3.0, timeout=3, what="the first turn")
        time.sleep(0.3)
        pb = b.status()["peer"]
        # mid-turn 2 (song 3-4 s): the leader dies
        wait_for(lambda: 3.0 < a.status()["position_s"] < 4.0, timeout=5)
        a.proc.kill()
        wait_for(lambda: b.status()["role"] == "leader", timeout=3, what="the takeover")
        after = b.status()
        wait_for(lambda: b.status()["position_s"] > 5.0, timeout=5, what="B at the loop end")
        wait_for(lambda: b.status()["position_s"] < 3.0, timeout=3, what="B turning the vamp")
        time.sleep(0.5)
    rb = jb.stop()
    assert pb["locked"] and abs(pb["lock_error_ms"]) < 1.0, pb
    assert after["vamp"], after
    exp = sb.expected(0)
    with judged(rb):
        a_ = rb.audio
        # B is heard only after the takeover: find where it reaches E and turns back to S
        end_at = find_frame(a_, exp, E - 64)
        assert end_at is not None, "B never played up to the loop's end"
        r_loop = end_at + 64
        # judged as far as the harness kept the recording whole from the loop's end
        n = clean_after(rb, end_at, 64 + XFADE + RATE // 4) - 64 - XFADE
        assert n >= 2048, "the harness lost the turn"
        assert exact_after_switch(a_, exp, r_loop + XFADE, S + XFADE, n), \
            "B did not turn the vamp after taking over"


def test_voice_guide_names_a_jumps_target_a_bar_before_it_lands(jack_audio, tmp_path):
    """`jump outro 2_bars` pressed in bar 2: the switch lands on bar 4 and the guide says
    "outro" on the cue output from bar 3's first frame, exactly (the cache warmer speaks
    the cues after start)."""
    show = make_show(tmp_path, [20.0])
    text = show.config.read_text().replace("outputs: {", "outputs: {cue: [8], ")
    show.config.write_text(text)
    with_structure(show, "    tempo: 120\n    sections: [{name: intro, at: 1}, "
                         "{name: verse, at: 2}, {name: chorus, at: 8}, {name: outro, at: 9}]\n"
                         "    guide: {to: cue}\n")
    from appliance.audio.voiceguide import spoken_path
    with DaemonProcess(show, jack_audio.environ()) as d:
        cache = tmp_path / ".backtrack-cache"
        wait_for(lambda: spoken_path("outro", RATE, cache).exists(),
                 timeout=30, what="the spoken cue in the cache")
        d.ctl("play")
        wait_for(lambda: 2.3 < d.status()["position_s"] < 3.0, timeout=5)
        r = d.ctl({"cmd": "jump", "to": "outro", "when": "2_bars"})
        assert r["ok"], r
        wait_for(lambda: d.status()["section"] == "outro", timeout=6, what="the outro")
        time.sleep(0.3)
        d.ctl("stop")
    rec = jack_audio.stop()
    exp = show.expected(0)
    with judged(rec):
        a = rec.audio
        start = find_frame(a, exp, 0)
        cue = np.flatnonzero(a[start + RATE:, 7] != 0)
        assert len(cue), "no cue heard"
        first = start + RATE + int(cue[0])
        assert song_frame_of(a, exp, first) == 2 * BAR, song_frame_of(a, exp, first)
        # and the jump landed on bar 4 (song frame 6 s) into the outro (bar 9)
        assert exact_after_switch(a, exp, start + 3 * BAR + XFADE, 8 * BAR + XFADE, RATE // 8)

"""The generated click: each sound starts on the frame its onset says, whatever the blocks,
and a bad user sample means the built-in sound and a readable problem, never a stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from appliance.audio.click import ClickRenderer, ClickSounds

RATE = 48000


def onsets_every(step: int, first: int, end: int, subs: int = 1) -> list[tuple[int, int, int, int]]:
    """(frame, bar, beat, sub) on a 4/4 grid from `first`, `subs` clicks per beat."""
    out = []
    i = 0
    while first + i * step < end:
        beat_no, sub = divmod(i, subs)
        bar, beat = divmod(beat_no, 4)
        out.append((first + i * step, bar + 1, beat + 1, sub))
        i += 1
    return out


def render_in_blocks(renderer: ClickRenderer, onsets, song_frame0: int, out: np.ndarray,
                     sizes) -> None:
    """As the decode thread does: each block gets the onsets that can sound in it."""
    reach = renderer.sounds.longest
    pos = 0
    for n in sizes:
        n = min(n, len(out) - pos)
        if n <= 0:
            break
        f0 = song_frame0 + pos
        renderer.render(f0, out[pos:pos + n],
                        [o for o in onsets if f0 - reach < o[0] < f0 + n])
        pos += n
    assert pos == len(out)


def test_rendered_in_pieces_equals_rendered_whole_and_onsets_fall_on_their_frames():
    sounds = ClickSounds.built_in(RATE)
    renderer = ClickRenderer(sounds, 0.5)
    song_frame0, total = -3 * RATE // 2, 6 * RATE  # a count-in before the audio
    onsets = onsets_every(6000, song_frame0 + 1000, song_frame0 + total, subs=2)
    # the tail of an onset before the first block still sounds in it
    onsets.insert(0, (song_frame0 - 300, 0, 4, 1))
    whole = np.zeros(total, np.float32)
    renderer.render(song_frame0, whole, onsets)
    rng = np.random.default_rng(3)
    mix = np.zeros((total, 4), np.float32)
    render_in_blocks(renderer, onsets, song_frame0, mix[:, 2],
                     rng.integers(1, 16384, size=10000).tolist())
    assert np.array_equal(mix[:, 2], whole)
    assert not mix[:, [0, 1, 3]].any()
    # each onset is where the sound starts: find them back by a threshold
    loud = np.abs(whole) > 0.05  # the quietest onset (a sub) starts at 0.07
    starts = np.flatnonzero(loud[1:] & ~np.convolve(loud, np.ones(400), "full")[:total - 1]
                            .astype(bool)) + 1
    assert starts.tolist() == [o[0] - song_frame0 for o in onsets[1:]]
    assert whole[0] != 0.0  # the tail of the earlier one
    assert float(np.abs(whole).max()) <= 0.5 + 1e-6


def pitch(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x, 8 * len(x)))
    return float(np.argmax(spec)) * rate / (8 * len(x))


def test_every_sound_starts_loud_on_its_first_sample_and_the_accent_stands_out():
    for rate in (44100, 48000, 96000):
        s = ClickSounds.built_in(rate)
        for sound in (s.accent, s.beat, s.sub):
            assert sound.dtype == np.float32 and sound.ndim == 1
            assert abs(sound[0]) >= 0.25 * np.abs(sound).max()
            assert 0.010 * rate <= len(sound) <= 0.030 * rate
            assert abs(sound[-1]) < 1e-3  # no step at the end
        assert s.longest == max(len(s.accent), len(s.beat), len(s.sub))
        assert pitch(s.accent, rate) > 1.5 * pitch(s.beat, rate)
        assert np.abs(s.accent).max() > np.abs(s.beat).max() > np.abs(s.sub).max()
        assert np.abs(s.sub).max() < 0.5 * np.abs(s.beat).max()


def test_which_sound_each_onset_gets_and_accent_off():
    sounds = ClickSounds(accent=np.full(10, 1.0, np.float32), beat=np.full(10, 2.0, np.float32),
                         sub=np.full(10, 4.0, np.float32), rate=RATE)
    onsets = [(0, 1, 1, 0), (20, 1, 2, 0), (40, 1, 2, 1), (60, 2, 1, 0), (80, 2, 1, 1)]
    out = np.zeros(100, np.float32)
    ClickRenderer(sounds, 0.5).render(0, out, onsets)
    assert out[::20].tolist() == [0.5, 1.0, 2.0, 0.5, 2.0]
    out[:] = 0
    ClickRenderer(sounds, 0.5, accent=False).render(0, out, onsets)
    assert out[::20].tolist() == [1.0, 1.0, 2.0, 1.0, 2.0]
    out[:] = 0
    ClickRenderer(sounds, 1.0).render(1000, out, [(995, 1, 1, 0), (1095, 1, 2, 0)])
    assert out.tolist() == [1.0] * 5 + [0.0] * 90 + [2.0] * 5


def test_a_user_sample_at_another_rate_is_resampled_and_mixed_to_mono(tmp_path: Path):
    src_rate = 44100
    t = np.arange(int(0.05 * src_rate)) / src_rate
    tone = 0.5 * np.sin(2 * np.pi * 3000 * t) * np.exp(-t * 60)
    wav = tmp_path / "accent.wav"
    silence = np.zeros(200)  # a sample pack's leading silence: the beat is the first sound
    sf.write(wav, np.stack([np.r_[silence, tone], np.r_[silence, tone]], axis=1), src_rate)
    sounds, problems = ClickSounds.from_files(RATE, wav, None, None)
    assert problems == []
    assert sounds.accent.dtype == np.float32 and sounds.accent.ndim == 1
    assert abs(len(sounds.accent) - round(len(tone) * RATE / src_rate)) <= 2
    spec = np.abs(np.fft.rfft(sounds.accent, 1 << 16))
    assert abs(np.argmax(spec) * RATE / (1 << 16) - 3000) < 10
    built = ClickSounds.built_in(RATE)
    assert np.array_equal(sounds.beat, built.beat) and np.array_equal(sounds.sub, built.sub)
    assert sounds.longest == max(len(sounds.accent), len(built.beat))


@pytest.mark.parametrize("what", ["missing", "corrupt", "empty", "folder", "silent"])
def test_a_bad_sample_file_falls_back_to_the_built_in_sound_with_a_problem(tmp_path, what):
    path = tmp_path / "beat.wav"
    if what == "corrupt":
        path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 10)
    elif what == "empty":
        path.write_bytes(b"")
    elif what == "folder":
        path.mkdir()
    elif what == "silent":
        sf.write(path, np.zeros(4800, np.float32), RATE)
    sounds, problems = ClickSounds.from_files(RATE, None, path, tmp_path / "nosub.flac")
    built = ClickSounds.built_in(RATE)
    assert np.array_equal(sounds.beat, built.beat)
    assert np.array_equal(sounds.sub, built.sub)
    assert len(problems) == 2
    assert all(isinstance(p, str) and p for p in problems)
    assert str(path) in problems[0] and "nosub.flac" in problems[1]
    assert "file not found" in problems[1]


def test_a_long_sample_plays_its_first_second_with_a_note(tmp_path: Path):
    path = tmp_path / "song.flac"
    sf.write(path, np.full(3 * RATE, 0.1, np.float32), RATE)
    sounds, problems = ClickSounds.from_files(RATE, None, None, path)
    assert len(sounds.sub) == RATE and sounds.longest == RATE
    assert len(problems) == 1 and "longer than 1 s" in problems[0]

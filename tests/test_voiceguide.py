"""Spoken cues: made once with espeak-ng into the cache, read from there ever after, and added
at their song frames whatever the blocks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from appliance.audio.voiceguide import (
    GuideRenderer,
    cached_spoken,
    load_cue,
    spoken,
    spoken_path,
)

RATE = 48000


@pytest.fixture
def espeak() -> str:
    """espeak-ng is part of the machine (`make deps`): its absence is a failure, not a skip."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is not installed: run `make deps` (it installs espeak-ng)"
    return exe


def test_spoken_is_speech_made_once_and_read_from_the_cache_after(tmp_path: Path, espeak,
                                                                  monkeypatch):
    cache = tmp_path / "cache"
    assert cached_spoken("chorus", RATE, cache)[0] is None
    samples, why = spoken("chorus", RATE, cache)
    assert why == "" and samples is not None
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 0.15 * RATE < len(samples) < 2.0 * RATE
    assert 0.5 < float(np.abs(samples).max()) <= 1.0
    assert float(np.sqrt(np.mean(samples ** 2))) > 0.03  # speech, not a blip
    assert abs(samples[0]) > 1e-4  # its silence before is cut: the cue starts on time
    files = sorted(cache.iterdir())
    assert files == [spoken_path("chorus", RATE, cache)]  # no temporary file left behind
    assert sf.info(str(files[0])).samplerate == RATE
    made = files[0].stat().st_mtime_ns

    again, why = spoken("chorus", RATE, cache)
    assert why == "" and np.array_equal(again, samples)
    assert files[0].stat().st_mtime_ns == made and sorted(cache.iterdir()) == files
    # without espeak-ng on the PATH, the cached cue still speaks
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert np.array_equal(spoken("chorus", RATE, cache)[0], samples)
    assert np.array_equal(cached_spoken(" chorus ", RATE, cache)[0], samples)
    # ... and one it has not made yet says why
    none, why = spoken("bridge", RATE, cache)
    assert none is None and "espeak-ng" in why and "not installed" in why
    assert sorted(cache.iterdir()) == files


def test_each_rate_and_voice_has_its_own_cue(tmp_path: Path, espeak):
    at48, _ = spoken("verse two", RATE, tmp_path)
    at44, _ = spoken("verse two", 44100, tmp_path)
    assert at48 is not None and at44 is not None
    assert abs(len(at44) / len(at48) - 44100 / RATE) < 0.01
    assert len(list(tmp_path.iterdir())) == 2
    other, why = spoken("verse two", RATE, tmp_path, voice="de")
    assert why == "" and other is not None and not np.array_equal(other, at48)


def test_a_failing_espeak_ng_or_bad_input_is_a_reason_not_an_exception(tmp_path: Path, espeak):
    samples, why = spoken("chorus", RATE, tmp_path, voice="nosuchvoice")
    assert samples is None and "espeak-ng failed" in why
    samples, why = spoken("chorus", RATE, tmp_path, voice="--help")
    assert samples is None and "voice" in why
    samples, why = spoken("   ", RATE, tmp_path)
    assert samples is None and why
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    samples, why = spoken("chorus", RATE, blocked / "cache")
    assert samples is None and str(blocked) in why
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # words that look like options are words
    samples, why = spoken("-x --version", RATE, tmp_path / "c")
    assert why == "" and samples is not None and len(samples) > 0.2 * RATE


def test_a_user_cue_is_read_as_recorded_mono_at_the_device_rate(tmp_path: Path):
    t = np.arange(22050) / 44100
    tone = np.zeros((22050, 2))
    tone[1000:, 0] = 0.4 * np.sin(2 * np.pi * 440 * t[1000:])
    wav = tmp_path / "chorus.wav"
    sf.write(wav, tone, 44100)
    samples, why = load_cue(wav, RATE)
    assert why == "" and samples is not None and samples.dtype == np.float32
    assert abs(len(samples) - 24000) <= 2
    assert np.abs(samples[:1000]).max() < 1e-3  # its own silence is kept: its timing is the user's
    assert 0.15 < np.abs(samples).max() < 0.25  # two channels, one silent: averaged
    none, why = load_cue(tmp_path / "missing.wav", RATE)
    assert none is None and "not found" in why


def test_cues_render_in_pieces_as_whole(tmp_path: Path):
    rng = np.random.default_rng(5)
    cues = [(start, rng.uniform(-0.5, 0.5, length).astype(np.float32))
            for start, length in ((-30000, 40000), (5000, 9000), (9000, 30000),
                                  (200000, 100), (200050, 70000))]
    guide = GuideRenderer(list(reversed(cues)), 0.5)
    song_frame0, total = -48000, 400000
    whole = np.full(total, 0.125, np.float32)
    guide.render(song_frame0, whole)
    mix = np.full((total, 2), 0.125, np.float32)
    pos = 0
    while pos < total:
        n = min(int(rng.integers(1, 16384)), total - pos)
        guide.render(song_frame0 + pos, mix[pos:pos + n, 1])
        pos += n
    assert np.array_equal(mix[:, 1], whole)
    assert (mix[:, 0] == np.float32(0.125)).all()
    expect = np.zeros(total, np.float64)
    for start, s in cues:
        expect[start - song_frame0:start - song_frame0 + len(s)] += 0.5 * s
    assert np.allclose(whole - 0.125, expect, atol=1e-6)
    # a block long after the last cue, and one before the first, add nothing
    quiet = np.zeros(1000, np.float32)
    guide.render(10**7, quiet)
    guide.render(-10**6, quiet)
    assert not quiet.any()


def test_the_cache_never_holds_half_a_cue(tmp_path: Path, espeak):
    """The cue is written under a temporary name and renamed: a crash mid-write leaves no
    file under the final name for the next start to take for a finished one."""
    samples, _ = spoken("outro", RATE, tmp_path)
    assert samples is not None
    final = spoken_path("outro", RATE, tmp_path)
    # a stale half-written temporary file from a crash is not read as the cue
    os.replace(final, final.with_name(final.name + ".tmp1234-5"))
    again, why = spoken("outro", RATE, tmp_path)
    assert why == "" and np.array_equal(again, samples)

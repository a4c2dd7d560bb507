"""Stems libsndfile cannot read (AAC and ALAC in M4A, Opus in MP4/MKV) are decoded once with
PyAV into the convert-once cache, at `check` time or on first load; the real-time path only
ever reads the cached WAV. The files are made here with PyAV's own encoders.

AAC and Opus are lossy and delay the signal (encoder priming), so their content is compared
by correlation after finding the lag, or by the frequency of a sine; ALAC is lossless, so
its samples must come back exactly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from appliance.audio import source
from appliance.audio.source import SongReader, StemReader, cache_path, probe
from appliance.check import format_report, run_check
from appliance.config import load
from appliance.render import render
from tests.showkit import encode_pyav as encode

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
SECONDS = 1.5

# (file name, encoder, source rate, channels)
CASES = [
    ("stereo.m4a", "aac", 48000, 2),
    ("mono44.m4a", "aac", 44100, 1),
    ("lossless.m4a", "alac", 48000, 2),
    ("opus.mp4", "libopus", 48000, 2),
    ("opus.mkv", "libopus", 48000, 1),
]
FORMAT = {"stereo.m4a": "m4a/aac", "mono44.m4a": "m4a/aac", "lossless.m4a": "m4a/alac",
          "opus.mp4": "mp4/opus", "opus.mkv": "matroska/opus"}


def have_encoder(name: str) -> bool:
    return name in av.codecs_available


def tones(frames: int, channels: int, rate: int, seed: int = 1) -> np.ndarray:
    """A few seeded sines per channel (different per channel, so a swap shows) plus a
    little seeded noise: wide enough to correlate on, tonal enough for a lossy codec."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    x = np.zeros((frames, channels))
    for c in range(channels):
        for f in rng.uniform(150, 4000, 4):
            x[:, c] += 0.08 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        x[:, c] += 0.01 * rng.standard_normal(frames)
    return x


def show(d: Path, stems: list[tuple[str, str]], channels: int = 2) -> Path:
    """A one-song show at 48 kHz, FLOAT_LE, outputs `st` (1, 2) and `mono` (1)."""
    cfg = d / "show.yaml"
    items = ", ".join(f"{{file: {f}, to: {to}}}" for f, to in stems)
    cfg.write_text(f'device: {{name: "null", channels: {channels}, rate: {RATE}, '
                   "format: FLOAT_LE}\n"
                   "outputs: {st: [1, 2], mono: 1}\n"
                   f"songs:\n  - title: Song\n    stems: [{items}]\n")
    return cfg


def best_lag(got: np.ndarray, want: np.ndarray, max_lag: int = 4096) -> int:
    """The delay of `got` against `want` (encoder priming the container did not trim)."""
    n = min(len(want), len(got)) - max_lag
    spec = np.fft.rfft(got[:n + max_lag], 2 * (n + max_lag))
    ref = np.fft.rfft(want[:n], 2 * (n + max_lag))
    xc = np.fft.irfft(spec * np.conj(ref))[:max_lag]
    return int(np.argmax(xc))


def correlation(got: np.ndarray, want: np.ndarray) -> float:
    lag = best_lag(got, want)
    n = min(len(want), len(got) - lag)
    a, b = got[lag:lag + n], want[:n]
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def read_stem(reader: StemReader) -> np.ndarray:
    out = []
    reader.seek(0)
    while True:
        block = reader.read(reader.block)
        if block is None:
            break
        out.append(block.copy())
    return np.concatenate(out)[:reader.frames]


@pytest.fixture
def made(tmp_path: Path, request) -> tuple[Path, np.ndarray, str, int]:
    name, codec, rate, channels = request.param
    if not have_encoder(codec):
        # outside the project: which encoders a PyAV wheel carries is FFmpeg's build choice
        # (decoding, what the player needs, does not depend on it); none is missing here
        pytest.skip(f"this PyAV build has no {codec} encoder to make the test file with")
    x = tones(int(rate * SECONDS), channels, rate)
    encode(tmp_path / name, codec, rate, x)
    return tmp_path / name, x, codec, rate


@pytest.mark.parametrize("made", CASES, indirect=True, ids=[c[0] for c in CASES])
def test_probe_finds_the_stream_and_marks_it_for_decoding(made):
    path, x, _codec, rate = made
    cfg = load(show(path.parent, [(path.name, "st")]))
    info = probe(cfg.songs[0].stems[0])
    assert info.problem is None
    assert info.decoder == "pyav"
    assert (info.channels, info.rate) == (x.shape[1], rate)
    assert info.format == FORMAT[path.name]
    # from the container's bookkeeping: close to the length, give or take codec delay
    assert abs(info.frames - len(x)) <= 0.03 * len(x), (info.frames, len(x))


@pytest.mark.parametrize("made", CASES, indirect=True, ids=[c[0] for c in CASES])
def test_decoded_once_into_the_cache_and_content_matches(made, monkeypatch):
    path, x, codec, rate = made
    cfg = load(show(path.parent, [(path.name, "st")]))
    stem = cfg.songs[0].stems[0]
    cached = cache_path(cfg.cache_dir, path, RATE)
    assert not cached.exists()
    r = StemReader(stem, RATE, cfg.cache_dir, 4096)
    assert r.ok and r.info.problem is None, r.info.problem
    assert r.info.cache_file == cached and cached.exists()
    assert r.info.resampled_from == (rate if rate != RATE else None)
    f = sf.info(str(cached))
    assert (f.samplerate, f.channels, f.subtype) == (RATE, x.shape[1], "FLOAT")
    assert r.frames == f.frames  # the cached WAV's count is the truth
    got = read_stem(r)
    r.close()
    assert got.shape == (f.frames, x.shape[1])
    want = x if rate == RATE else None
    if codec == "alac":
        # lossless: the very 16-bit samples that went in, from the first frame
        q = np.round(x * 32768).clip(-32768, 32767) / 32768
        assert got.shape[0] == len(x)
        np.testing.assert_array_equal(got, q.astype(np.float32))
    elif want is not None:
        for c in range(x.shape[1]):
            assert correlation(got[:, c], want[:, c]) > 0.9
        if x.shape[1] == 2:  # channels in order, not swapped
            assert correlation(got[:, 0], want[:, 1]) < 0.5
    else:
        # 44.1 kHz source at 48 kHz: resampled after decoding, same length in seconds
        assert abs(got.shape[0] / RATE - len(x) / rate) < 0.05
    # a second reader (the next start) reads the cache and decodes nothing
    stamp = cached.stat().st_mtime_ns

    def no_decoding(*_a, **_k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(source, "_decoded", no_decoding)
    r2 = StemReader(stem, RATE, cfg.cache_dir, 4096)
    assert r2.ok and r2.info.problem is None and r2.frames == r.frames
    r2.close()
    assert cached.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cfg.cache_dir.iterdir()) == [cached.name]


def test_resampled_aac_sine_keeps_its_frequency(tmp_path: Path):
    """44.1 kHz AAC, 1 kHz sine: decoded, converted by libsoxr to 48 kHz, still 1 kHz."""
    n = 2 * 44100
    x = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / 44100)[:, None]
    encode(tmp_path / "sine.m4a", "aac", 44100, x)
    cfg = load(show(tmp_path, [("sine.m4a", "mono")]))
    r = SongReader(cfg.songs[0], cfg.device, cfg.cache_dir, 4096)
    assert r.problems == []
    assert r.stems[0].info.resampled_from == 44100
    out = np.zeros((4096, 2), np.float32)
    chunks = []
    while (k := r.read_into(out)):
        chunks.append(out[:k, 0].copy())
    r.close()
    y = np.concatenate(chunks)
    assert abs(len(y) - 2 * RATE) < 0.05 * RATE
    mid = y[len(y) // 2 - RATE // 2: len(y) // 2 + RATE // 2]  # 1 s: 1 Hz bins
    spec = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    assert np.fft.rfftfreq(len(mid), 1 / RATE)[spec.argmax()] == 1000.0
    level = spec.max() / (len(mid) / 2 * 0.5)
    assert 0.45 < level < 0.55


def test_song_with_m4a_and_wav_stems_plays_both(tmp_path: Path):
    x = tones(RATE, 2, RATE, seed=3)
    encode(tmp_path / "tracks.m4a", "aac", RATE, x)
    sf.write(str(tmp_path / "click.wav"), 0.25 * np.ones(RATE // 2), RATE, subtype="PCM_16")
    cfg = load(show(tmp_path, [("tracks.m4a", "st"), ("click.wav", "mono")]))
    r = SongReader(cfg.songs[0], cfg.device, cfg.cache_dir, 4096)
    assert r.problems == []
    cached = sf.info(str(cache_path(cfg.cache_dir, tmp_path / "tracks.m4a", RATE)))
    assert r.frames == cached.frames  # the longest stem, counted exactly
    out = np.zeros((4096, 2), np.float32)
    mix = []
    while (k := r.read_into(out)):
        mix.append(out[:k].copy())
    r.close()
    y = np.concatenate(mix)
    assert len(y) == r.frames
    assert correlation(y[RATE // 2:, 1], x[RATE // 2:, 1]) > 0.9  # channel 2: tracks only
    assert correlation(y[:, 0] - 0.25 * (np.arange(len(y)) < RATE // 2), x[:, 0]) > 0.9


def test_garbage_m4a_is_a_clear_problem_not_an_exception(tmp_path: Path):
    rng = np.random.default_rng(5)
    (tmp_path / "x.m4a").write_bytes(rng.integers(0, 256, 40000, dtype=np.uint8).tobytes())
    (tmp_path / "notes.m4a").write_text("lyrics, not audio\n")
    sf.write(str(tmp_path / "ok.wav"), 0.1 * np.ones(4800), RATE)
    cfg = load(show(tmp_path, [("x.m4a", "st"), ("notes.m4a", "st"), ("ok.wav", "mono")]))
    for stem in cfg.songs[0].stems[:2]:
        info = probe(stem)
        assert info.problem.startswith("not a readable audio file ("), info.problem
        assert "PyAV:" in info.problem and info.decoder == "libsndfile"
    r = SongReader(cfg.songs[0], cfg.device, cfg.cache_dir, 4096)
    assert [p.split(": ", 1)[1].startswith("not a readable audio file") for p in r.problems] \
        == [True, True]
    assert r.frames == 4800  # the good stem plays
    r.close()
    assert not cfg.cache_dir.exists() or not list(cfg.cache_dir.iterdir())


def test_decoding_failure_is_a_problem_and_leaves_no_cache_file(tmp_path: Path, monkeypatch):
    """Whatever goes wrong mid-conversion (here: the disk), the stem is silent with a
    problem, the song goes on, and no half file is left to be taken for a finished one."""
    encode(tmp_path / "a.m4a", "aac", RATE, tones(RATE, 2, RATE))
    sf.write(str(tmp_path / "ok.wav"), 0.1 * np.ones(4800), RATE)
    cfg = load(show(tmp_path, [("a.m4a", "st"), ("ok.wav", "mono")]))
    real = source._write_at_rate

    def disk_full(dst, blocks, src_rate, channels):
        real(dst, (b for _, b in zip(range(3), blocks, strict=False)), src_rate, channels)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(source, "_write_at_rate", disk_full)
    r = SongReader(cfg.songs[0], cfg.device, cfg.cache_dir, 4096)
    assert r.problems == [f"{tmp_path / 'a.m4a'}: decoding failed (PyAV): "
                          "No space left on device"]
    assert not r.stems[0].ok and r.frames == 4800
    out = np.zeros((4096, 2), np.float32)
    assert r.read_into(out) == 4096
    assert np.allclose(out[:, 0], 0.1, atol=1e-4) and not out[:, 1].any()  # a.m4a: silent
    r.close()
    assert list(cfg.cache_dir.iterdir()) == []
    monkeypatch.undo()
    r = SongReader(cfg.songs[0], cfg.device, cfg.cache_dir, 4096)  # next time it works
    assert r.problems == [] and r.frames > RATE * 0.9
    r.close()


def test_truncated_m4a_plays_the_part_that_is_there_and_says_so_every_time(tmp_path: Path):
    """An interrupted copy of an M4A whose index comes first (iTunes, `faststart`): the
    decode breaks off; what came before is cached and plays, and the damage is reported on
    every later load too (it is written into the cached file)."""
    x = tones(4 * RATE, 1, RATE)
    encode(tmp_path / "full.m4a", "aac", RATE, x, faststart=True)
    data = (tmp_path / "full.m4a").read_bytes()
    (tmp_path / "cut.m4a").write_bytes(data[:len(data) // 2])
    cfg = load(show(tmp_path, [("cut.m4a", "mono")]))
    stem = cfg.songs[0].stems[0]
    assert probe(stem).problem is None  # the header is whole
    for _ in range(2):
        r = StemReader(stem, RATE, cfg.cache_dir, 4096)
        assert r.ok and r.info.damaged
        assert r.info.problem.startswith("truncated or damaged: decoding stopped after ")
        assert "of about 4.0 s" in r.info.problem
        assert RATE < r.frames < 3 * RATE
        got = read_stem(r)
        r.close()
        assert correlation(got[:, 0], x[:len(got), 0]) > 0.9
    assert len(list(cfg.cache_dir.iterdir())) == 1


def test_check_decodes_ahead_of_the_show_and_says_so(tmp_path: Path):
    encode(tmp_path / "tracks.m4a", "aac", RATE, tones(RATE, 2, RATE))
    encode(tmp_path / "bass.m4a", "aac", 44100, tones(44100, 1, 44100))
    cfg = load(show(tmp_path, [("tracks.m4a", "st"), ("bass.m4a", "mono")]))
    rep = run_check(cfg, probe_device_too=False)
    assert rep["playable"], rep["problems"]
    tracks, bass = rep["songs"][0]["stems"]
    assert tracks["decoder"] == "pyav" and tracks["format"] == "m4a/aac"
    assert Path(tracks["cache_file"]).exists() and tracks["cached_before"] is False
    assert sf.info(tracks["cache_file"]).frames == tracks["frames"]
    assert bass["resampled_from"] == 44100
    out, err = format_report(rep)
    assert "tracks.m4a  (2 ch, 48000 Hz) -> st; decoded with PyAV (m4a/aac) into the " \
           "cache (now cached)" in out, out
    assert "bass.m4a  (1 ch, 44100 Hz) -> mono; decoded with PyAV (m4a/aac) and " \
           "converted from 44100 Hz into the cache (now cached)" in out, out
    assert "problem" not in err  # at most a length warning: AAC pads to whole 1024-frame blocks
    rep = run_check(cfg, probe_device_too=False)  # the show night pays nothing
    assert all(st["cached_before"] for st in rep["songs"][0]["stems"])
    assert "into the cache (was cached)" in format_report(rep)[0]


def test_render_writes_a_song_with_an_m4a_stem(tmp_path: Path):
    x = tones(RATE, 2, RATE, seed=9)
    encode(tmp_path / "tracks.m4a", "aac", RATE, x)
    cfg = load(show(tmp_path, [("tracks.m4a", "st")]))
    result = render(cfg, [0], tmp_path / "out.wav")
    assert result["problems"] == []
    y, rate = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert rate == RATE and y.shape[1] == 2 and len(y) == result["frames"]
    assert abs(len(y) - RATE) < 0.05 * RATE
    for c in range(2):
        assert correlation(y[:, c], x[:, c]) > 0.9


def test_pyav_is_not_imported_until_a_stem_needs_it():
    """The daemon must start fast; most shows never need FFmpeg."""
    code = ("import sys, appliance.audio.source, appliance.audio.engine, appliance.check; "
            "print('av' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_decoded_channels_win_over_the_header(tmp_path: Path, monkeypatch):
    """Mono AAC with parametric stereo says one channel and decodes to two (PyAV cannot
    encode that here, so the decode is faked): the reader follows the decoded file and
    checks the route again."""
    encode(tmp_path / "ps.m4a", "aac", RATE, tones(RATE, 1, RATE))
    stereo = tmp_path / "decoded.wav"
    sf.write(str(stereo), 0.1 * np.ones((RATE, 2), np.float32), RATE, subtype="FLOAT")
    monkeypatch.setattr(source, "decode_to_cache", lambda *_a: stereo)
    cfg = load(show(tmp_path, [("ps.m4a", "st"), ("ps.m4a", "mono")]))
    to_st, to_mono = (StemReader(s, RATE, cfg.cache_dir, 4096) for s in cfg.songs[0].stems)
    assert probe(cfg.songs[0].stems[0]).channels == 1
    assert to_st.ok and to_st.info.channels == 2 and to_st.info.problem is None
    assert to_st.read(4096).shape == (4096, 2)
    assert not to_mono.ok and to_mono.frames == 0
    assert to_mono.info.problem.startswith("has 2 channels but is routed to 1 output")
    to_st.close()

"""`backtrack render` against an independently computed mix.

The expected output is computed here from the stem files alone, in float64 NumPy, from the
documented rules (gain 10^(dB/20); a mono stem feeds every channel of its route, an
N-channel stem N channels in order; a song lasts as long as its longest stem, shorter
stems end in silence), then quantised as the device format says: round half to even of
x * 2^(bits-1), clipped. The renderer mixes in float32, so:

- S16_LE, S24_3LE: every sample within 1 LSB of the expectation;
- S32_LE: within 1 LSB *at 24-bit resolution* (256 LSB of 32 bits). float32 carries a
  24-bit mantissa, so a sum of scaled stems cannot be closer to a float64 reference than
  that; positive clipping also stops at 2^31 - 128, the largest float32 below 2^31;
- FLOAT_LE: within 1e-6;
- everywhere: exactly equal on channels fed by a single unity-gain stem, and exactly 0 on
  channels nothing is routed to.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
CHANNELS = 7
OUTPUTS = {"click": [1], "tracks": [2, 3], "keys": [4, 5], "hot": [6]}  # 1-based; 7 unused

# song -> stems: (file, to, gain_db, file channels, frames, subtype, level)
SONGS = {
    "First": [
        ("click.wav", "click", 0.0, 1, 24000, "PCM_24", 0.7),      # alone, unity: exact
        ("tracks.wav", "tracks", -3.0, 2, 24000, "PCM_24", 0.5),
        ("pad.wav", "tracks", 2.5, 1, 14000, "PCM_16", 0.3),       # mono -> 2 ch, ends early
        ("keys.wav", "keys", 0.0, 2, 28800, "PCM_16", 0.6),        # longest: the song's length
        ("hot.wav", "hot", 6.0, 1, 20000, "FLOAT", 0.8),           # clips
    ],
    "Second": [
        ("second.wav", "tracks", -6.0, 2, 9600, "PCM_24", 0.9),
        ("click2.wav", "click", 0.0, 1, 4800, "PCM_24", 0.5),
    ],
}
FORMATS = {"S16_LE": 16, "S24_3LE": 24, "S32_LE": 32, "FLOAT_LE": 0}


def signal(seed: int, frames: int, channels: int, level: float) -> np.ndarray:
    """Noise plus a tone, peaking near `level`, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / RATE
    f = 220.0 * (1 + np.arange(channels))[None, :]
    x = 0.6 * np.sin(2 * np.pi * f * t) + 0.4 * rng.uniform(-1, 1, (frames, channels))
    return level * x


def write_show(d: Path, fmt: str) -> Path:
    seed = 0
    lines = [f'device: {{name: "null", channels: {CHANNELS}, rate: {RATE}, format: {fmt}}}',
             "outputs:"]
    lines += [f"  {name}: {chans}" for name, chans in OUTPUTS.items()]
    lines.append("songs:")
    for title, stems in SONGS.items():
        lines += [f"  - title: {title}", "    after: next", "    stems:"]
        for file, to, gain, ch, frames, subtype, level in stems:
            seed += 1
            if not (d / file).exists():
                sf.write(str(d / file), signal(seed, frames, ch, level), RATE, subtype=subtype)
            lines.append(f"      - {{file: {file}, to: {to}, gain_db: {gain}}}")
    cfg = d / f"show-{fmt}.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def expected_mix(d: Path, title: str) -> np.ndarray:
    """The song's mix in float64, from the stem files and the documented rules only."""
    stems = SONGS[title]
    data = [sf.read(str(d / s[0]), dtype="float64", always_2d=True)[0] for s in stems]
    length = max(len(x) for x in data)
    out = np.zeros((length, CHANNELS))
    for (_file, to, gain, _ch, _fr, _st, _lv), x in zip(stems, data, strict=True):
        chans = [c - 1 for c in OUTPUTS[to]]
        g = 10.0 ** (gain / 20.0)
        for k, c in enumerate(chans):
            src = x[:, 0] if x.shape[1] == 1 else x[:, k]
            out[: len(src), c] += g * src
    return out


def quantise(x: np.ndarray, bits: int) -> np.ndarray:
    scale = 2.0 ** (bits - 1)
    return np.clip(np.rint(x * scale), -scale, scale - 1).astype(np.int64)  # rint: half-even


def read_rendered(path: Path, fmt: str) -> np.ndarray:
    bits = FORMATS[fmt]
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (RATE, CHANNELS)
    assert info.subtype == {"S16_LE": "PCM_16", "S24_3LE": "PCM_24", "S32_LE": "PCM_32",
                            "FLOAT_LE": "FLOAT"}[fmt]
    if bits == 0:
        return sf.read(str(path), dtype="float64", always_2d=True)[0]
    ints = sf.read(str(path), dtype="int16" if bits == 16 else "int32", always_2d=True)[0]
    ints = ints.astype(np.int64)
    if bits == 24:
        assert not np.any(ints & 0xFF)  # libsndfile left-justifies 24-bit samples
        ints >>= 8
    return ints


def render_cli(cfg: Path, song: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", "render", "--config", str(cfg),
                           "--song", song, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def single_unity_channels() -> dict[str, set[int]]:
    """Per song, the 0-based channels fed by exactly one stem, at unity gain."""
    out = {}
    for title, stems in SONGS.items():
        feeds: dict[int, list[float]] = {}
        for _f, to, gain, *_ in stems:
            for c in OUTPUTS[to]:
                feeds.setdefault(c - 1, []).append(gain)
        out[title] = {c for c, g in feeds.items() if g == [0.0]}
    return out


def compare(got: np.ndarray, want: np.ndarray, fmt: str, exact: set[int]) -> None:
    bits = FORMATS[fmt]
    assert got.shape == want.shape
    unused = [c for c in range(CHANNELS) if c not in {o - 1 for v in OUTPUTS.values() for o in v}]
    for c in unused:
        assert not np.any(got[:, c])
    if bits == 0:
        np.testing.assert_allclose(got, np.clip(want, -1, 1), rtol=0, atol=1e-6)
        for c in exact:
            assert np.array_equal(got[:, c], want[:, c].astype(np.float32))
        return
    q = quantise(want, bits)
    tol = 1 if bits < 32 else 2 ** (32 - 24)
    diff = np.abs(got - q)
    assert diff.max() <= tol, f"max diff {diff.max()} LSB at {np.unravel_index(diff.argmax(), diff.shape)}"
    for c in exact:
        assert np.array_equal(got[:, c], q[:, c]), f"channel {c + 1} not exact"


@pytest.fixture(scope="module")
def show_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("render-show")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_render_matches_independent_mix(show_dir: Path, fmt: str):
    cfg = write_show(show_dir, fmt)
    out = show_dir / f"first-{fmt}.wav"
    r = render_cli(cfg, "1", out)
    assert r.returncode == 0, r.stderr
    assert "samples clipped" in r.stderr  # the hot stem, and only it, clips
    want = expected_mix(show_dir, "First")
    assert len(want) == 28800  # the longest stem
    got = read_rendered(out, fmt)
    compare(got, want, fmt, single_unity_channels()["First"])
    # The hot channel really clipped (the comparison above covered clipping correctly).
    assert np.abs(want[:, 5]).max() > 1.0
    # Shorter stems end in silence: after the pad and tracks end, channels 2-3 are silent.
    assert not np.any(got[24000:, 1:3])


def test_render_all_songs_back_to_back(show_dir: Path):
    cfg = write_show(show_dir, "S24_3LE")
    out = show_dir / "all.wav"
    r = render_cli(cfg, "all", out)
    assert r.returncode == 0, r.stderr
    got = read_rendered(out, "S24_3LE")
    first, second = expected_mix(show_dir, "First"), expected_mix(show_dir, "Second")
    assert len(got) == len(first) + len(second)
    compare(got[: len(first)], first, "S24_3LE", single_unity_channels()["First"])
    compare(got[len(first):], second, "S24_3LE", single_unity_channels()["Second"])
    # Song 2 alone is the same samples as its part of the whole.
    assert render_cli(cfg, "2", show_dir / "two.wav").returncode == 0
    assert np.array_equal(read_rendered(show_dir / "two.wav", "S24_3LE"), got[len(first):])


@pytest.mark.parametrize("song, message", [
    ("0", "there is no song 0; songs are numbered 1 to 2"),
    ("99", "there is no song 99; songs are numbered 1 to 2"),
    ("x", "--song must be a song number (1 to 2) or 'all', not 'x'"),
])
def test_render_bad_song_number(show_dir: Path, song: str, message: str):
    cfg = write_show(show_dir, "S16_LE")
    out = show_dir / f"bad-{song}.wav"
    r = render_cli(cfg, song, out)
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    assert message in r.stderr
    assert not out.exists()


# -- sample-rate conversion ----------------------------------------------------------------

def blackman_harris(n: int) -> np.ndarray:
    """4-term Blackman-Harris (sidelobes below -92 dB); NumPy has no built-in one."""
    k = 2 * np.pi * np.arange(n) / n
    return 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)


@pytest.mark.parametrize("freq", [1000.0, 20000.0])
def test_resampled_stem_keeps_its_frequency_without_images(tmp_path: Path, freq: float):
    """A 44.1 kHz sine rendered at 48 kHz: the tone stays at its frequency, and no alias or
    image (e.g. 44.1k - 20k = 24.1k folding to 23.9k) rises above -90 dB of the tone."""
    n_in = 2 * 44100
    t = np.arange(n_in) / 44100
    sf.write(str(tmp_path / "sine.wav"), 0.5 * np.sin(2 * np.pi * freq * t), 44100,
             subtype="FLOAT")
    cfg = tmp_path / "show.yaml"
    cfg.write_text(f'device: {{name: "null", channels: 1, rate: {RATE}, format: FLOAT_LE}}\n'
                   "outputs: {out: 1}\nsongs:\n  - title: Sine\n"
                   "    stems: [{file: sine.wav, to: out}]\n")
    r = render_cli(cfg, "1", tmp_path / "out.wav")
    assert r.returncode == 0, r.stderr
    y = sf.read(str(tmp_path / "out.wav"), dtype="float64")[0]
    assert abs(len(y) - 2 * RATE) <= 1  # 2 s stays 2 s
    n = RATE  # 1 s from the steady middle: 1 Hz bins, both tones exactly on a bin
    mid = y[len(y) // 2 - n // 2: len(y) // 2 + n // 2]
    spec = np.abs(np.fft.rfft(mid * blackman_harris(n)))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    peak = int(spec.argmax())
    assert freqs[peak] == freq
    # Level: the window's coherent gain is 0.35875; the tone is 0.5 (passband within 0.1 dB).
    level_db = 20 * np.log10(spec[peak] / (n / 2 * 0.35875) / 0.5)
    assert abs(level_db) < 0.1, level_db
    away = np.abs(np.arange(len(spec)) - peak) > 8  # outside the window's main lobe (+-4)
    worst = 20 * np.log10(spec[away].max() / spec[peak])
    assert worst < -90, f"{worst:.1f} dB at {freqs[away][spec[away].argmax()]:.0f} Hz"


def test_resample_cache_is_filled_once_and_reused(tmp_path: Path):
    sf.write(str(tmp_path / "a.wav"), 0.1 * np.ones((4410, 2)), 44100, subtype="PCM_16")
    cfg = tmp_path / "show.yaml"
    cfg.write_text(f'device: {{name: "null", channels: 2, rate: {RATE}, format: S16_LE}}\n'
                   "outputs: {st: [1, 2]}\nsongs:\n  - title: A\n"
                   "    stems: [{file: a.wav, to: st}]\n")
    cache = tmp_path / ".backtrack-cache"
    assert not cache.exists()
    assert render_cli(cfg, "1", tmp_path / "1.wav").returncode == 0
    files = sorted(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".wav"
    info = sf.info(str(files[0]))
    assert (info.samplerate, info.channels, info.frames) == (RATE, 2, 4800)
    stamp = files[0].stat().st_mtime_ns
    assert render_cli(cfg, "1", tmp_path / "2.wav").returncode == 0
    assert sorted(cache.iterdir()) == files
    assert files[0].stat().st_mtime_ns == stamp
    assert (tmp_path / "1.wav").read_bytes() == (tmp_path / "2.wav").read_bytes()

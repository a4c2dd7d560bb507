"""A generated demo set: three short songs with the stems a real show has.

Each song has an accented click, spoken cues (espeak-ng when installed, else distinct tones),
a stereo pad and a bass line, so one listen shows routing, cues on the beat and gapless
`after: next`. Everything is synthesised with NumPy; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 48000

# title, tempo, bars, root (MIDI note), chord progression (semitones from root), after
SONGS = [
    ("Opener", 120, 8, 45, [0, 5, 7, 5], "next"),
    ("Ballad", 76, 6, 50, [0, 9, 5, 7], "next"),
    ("Closer", 140, 10, 43, [0, 7, 9, 5], "stop"),
]
CUES = ["intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"]


def midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def click_track(tempo: float, bars: int) -> np.ndarray:
    beat = 60.0 / tempo
    n = int(bars * 4 * beat * RATE)
    out = np.zeros(n, np.float32)
    t = np.arange(int(0.03 * RATE)) / RATE
    env = np.exp(-t * 160)
    accent = (0.8 * np.sin(2 * np.pi * 1760 * t) * env).astype(np.float32)
    normal = (0.5 * np.sin(2 * np.pi * 1320 * t) * env).astype(np.float32)
    for b in range(bars * 4):
        i = int(b * beat * RATE)
        blip = accent if b % 4 == 0 else normal
        out[i:i + len(blip)] += blip[: n - i]
    return out


def speak(word: str) -> np.ndarray | None:
    """A spoken cue at RATE, or None without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if not exe:
        return None
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "w.wav"
        try:
            subprocess.run([exe, "-s", "190", "-w", str(wav), word], check=True,
                           capture_output=True, timeout=10)
            data, rate = sf.read(str(wav), dtype="float32")
        except (OSError, subprocess.SubprocessError, RuntimeError):
            return None
    if data.ndim > 1:
        data = data[:, 0]
    if rate != RATE:
        import soxr
        data = soxr.resample(data, rate, RATE).astype(np.float32)
    peak = float(np.max(np.abs(data))) or 1.0
    return (0.7 * data / peak).astype(np.float32)


def tone_cue(index: int) -> np.ndarray:
    """Distinct two-note tone per cue name when there is no speech synthesiser."""
    t = np.arange(int(0.35 * RATE)) / RATE
    f1, f2 = 440 * 2 ** (index / 6), 440 * 2 ** ((index + 3) / 6)
    half = len(t) // 2
    sig = np.where(np.arange(len(t)) < half, np.sin(2 * np.pi * f1 * t),
                   np.sin(2 * np.pi * f2 * t))
    env = np.minimum(1, np.minimum(t, t[-1] - t) * 50)
    return (0.5 * sig * env).astype(np.float32)


def cue_track(tempo: float, bars: int, n: int) -> np.ndarray:
    """A cue one bar before every two-bar section."""
    bar = 4 * 60.0 / tempo
    out = np.zeros(n, np.float32)
    for k, section in enumerate(range(0, bars, 2)):
        name = CUES[k % len(CUES)]
        clip = speak(name)
        if clip is None:
            clip = tone_cue(CUES.index(name))
        i = int(max(section - 1, 0) * bar * RATE) if section else 0
        m = min(len(clip), n - i)
        out[i:i + m] += clip[:m]
    return out


def pad_track(tempo: float, bars: int, root: int, prog: list[int], n: int) -> np.ndarray:
    bar = int(4 * 60.0 / tempo * RATE)
    out = np.zeros((n, 2), np.float32)
    t = np.arange(bar) / RATE
    env = np.minimum(1.0, t / 0.4) * np.minimum(1.0, (t[-1] - t) / 0.3 + 0.01)
    for b in range(bars):
        chord = [root + 12 + prog[b % len(prog)] + iv for iv in (0, 4, 7)]
        left = sum(np.sin(2 * np.pi * midi_hz(c) * t) for c in chord)
        right = sum(np.sin(2 * np.pi * midi_hz(c) * 1.003 * t) for c in chord)
        i = b * bar
        m = min(bar, n - i)
        out[i:i + m, 0] = (0.08 * left * env)[:m]
        out[i:i + m, 1] = (0.08 * right * env)[:m]
    return out


def bass_track(tempo: float, bars: int, root: int, prog: list[int], n: int) -> np.ndarray:
    beat = int(60.0 / tempo * RATE)
    out = np.zeros(n, np.float32)
    t = np.arange(beat) / RATE
    env = np.exp(-t * 3.0) * np.minimum(1.0, t / 0.005)
    for b in range(bars * 4):
        note = root - 12 + prog[(b // 4) % len(prog)] + (12 if b % 4 == 2 else 0)
        f = midi_hz(note)
        wave = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)
        i = b * beat
        m = min(beat, n - i)
        out[i:i + m] = (0.35 * wave * env)[:m]
    return out


def write_demo_set(folder: Path, device: str, channels: int = 2,
                   socket_path: str | None = None) -> Path:
    """Write the stems and a demo config; returns the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    songs_yaml = []
    for title, tempo, bars, root, prog, after in SONGS:
        d = folder / title.lower()
        d.mkdir(exist_ok=True)
        click = click_track(tempo, bars)
        n = len(click)
        sf.write(str(d / "click.wav"), click, RATE, subtype="PCM_24")
        sf.write(str(d / "cues.wav"), cue_track(tempo, bars, n), RATE, subtype="PCM_24")
        sf.write(str(d / "pad.flac"), pad_track(tempo, bars, root, prog, n), RATE)
        sf.write(str(d / "bass.wav"), bass_track(tempo, bars, root, prog, n), RATE,
                 subtype="PCM_24")
        songs_yaml.append(
            f'  - title: "{title}"\n    tempo: {tempo}\n    after: {after}\n    stems:\n'
            f"      - {{file: {d.name}/click.wav, to: click}}\n"
            f"      - {{file: {d.name}/cues.wav, to: cues}}\n"
            f"      - {{file: {d.name}/pad.flac, to: pad, gain_db: -2}}\n"
            f"      - {{file: {d.name}/bass.wav, to: bass}}\n")
    # On a stereo card: click and cues left (the in-ear side), pad in stereo, bass centre.
    if channels >= 4:
        outputs = "  click: 1\n  cues: 2\n  pad: [3, 4]\n  bass: 3\n"
    else:
        outputs = "  click: 1\n  cues: 1\n  pad: [1, 2]\n  bass: 2\n"
    sock = socket_path or str(folder / "control.sock")
    cfg = folder / "demo.yaml"
    cfg.write_text(
        "# Generated by `backtrack demo`.\n"
        f'device:\n  name: "{device}"\n  channels: {channels}\n  rate: {RATE}\n'
        "  format: S16_LE\n  period: 512\n  periods: 3\n"
        f"outputs:\n{outputs}"
        f'control:\n  socket: "{sock}"\n'
        "songs:\n" + "".join(songs_yaml))
    return cfg

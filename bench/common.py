"""Shared pieces of the playback benchmarks: an 8-stem show on the virtual sound card, the
daemon as a real process, figures as percentiles. Benchmarks print; they assert nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import JackAudio, start_jack_audio  # noqa: E402
from tests.jackaudio import Recording  # noqa: E402
from tests.showkit import DaemonProcess, Show  # noqa: E402

RATE = 48000
__all__ = ["JackAudio", "start_jack_audio", "DaemonProcess", "Show", "make_set", "pct", "row", "sound_after",
           "proc_cpu_s", "proc_mem_mb", "rss_without_jack_mb", "CpuHogs"]

HOG = "while True:\n    pass\n"


class CpuHogs:
    """`n` pure-Python busy loops at normal priority, one process each: a busy host (the
    ordinary processes a real-time thread must win against). Stopped on exit."""

    def __init__(self, n: int):
        import subprocess
        self.procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n)]

    def __enter__(self) -> CpuHogs:
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def make_set(folder: Path, songs: int = 1, seconds: float = 30.0, stems: int = 8,
             period: int = 256, periods: int = 3, pcm: str = "backtrack_test",
             after: str = "next", readahead: float = 2.0, realtime: int = 70) -> Show:
    """`songs` songs of `stems` mono stems (tones plus a little noise: realistic work for the
    decoder, and the first frame is never silent), stem k to output k+1."""
    folder.mkdir(parents=True, exist_ok=True)
    sock = str(folder / "ctl.sock")
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    rng = np.random.default_rng(1)
    lines = [
        f'device: {{name: "{pcm}", channels: 8, rate: {RATE}, format: S32_LE, '
        f"period: {period}, periods: {periods}}}",
        "outputs: {" + ", ".join(f"o{k + 1}: {k + 1}" for k in range(8)) + "}",
        f'control: {{socket: "{sock}"}}',
        f"engine: {{readahead: {readahead}, realtime_priority: {realtime}}}",
        "log_dir: shows",
        "songs:",
    ]
    stem_files = []
    for k in range(stems):
        data = (0.1 * np.sin(2 * np.pi * (110 + 55 * k) * t)
                + 0.01 * rng.standard_normal(n)).astype(np.float32)
        data[0] = 0.5
        path = folder / f"stem{k + 1}.wav"
        sf.write(str(path), data, RATE, subtype="PCM_24")
        stem_files.append(path.name)
    for i in range(songs):
        lines += [f'  - title: "Song {i + 1}"', f"    after: {after if i < songs - 1 else 'stop'}",
                  "    stems:"]
        lines += [f"      - {{file: {f}, to: o{k % 8 + 1}}}" for k, f in enumerate(stem_files)]
    cfg = folder / "show.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return Show(cfg, socket=sock, frames=[n] * songs)


def sound_after(rec: Recording, sent_ns) -> list[float]:
    """ms from each command time (monotonic ns) to the first non-silent frame the recorder
    got after it: the "command -> first sample" figure of several benchmarks."""
    nz = np.flatnonzero(np.any(rec.audio != 0, axis=1))
    times = rec.time_of_frame(nz)
    out = []
    for t in sent_ns:
        k = np.searchsorted(times, t)
        if k < len(times):
            out.append((times[k] - t) / 1e6)
    return out


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else \
        float("nan")


def row(label: str, values, unit: str = "ms", extra: str = "") -> str:
    v = np.asarray(values, dtype=np.float64)
    return (f"  {label:<34} p50 {pct(v, 50):8.2f} {unit}  p99 {pct(v, 99):8.2f} {unit}  "
            f"max {v.max():8.2f} {unit}  n={len(v)}{extra}")


def proc_cpu_s(pid: int) -> float:
    """user+system CPU seconds of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_without_jack_mb(pid: int) -> float:
    """RSS in MB less the JACK server's shared segment (/dev/shm/jack-*), which the virtual
    sound card maps into every JACK client (100 MB here) and a Pi on a USB card never
    has."""
    total = 0
    jack = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            jack = len(head) > 5 and head[5].startswith("/dev/shm/jack")
        elif line.startswith("Rss:") and not jack:
            total += int(head[1])
    return total / 1024


def proc_mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            vals[k] = int(v.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)

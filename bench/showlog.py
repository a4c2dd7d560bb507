"""The black-box show log's cost and size, and the self-test's time on a 20-song set.

Prints figures; asserts nothing (machines differ).

    .venv/bin/python bench/showlog.py [--seconds 30] [--runs 3] [--song-s 240]

Rows (median and worst of the runs):

- `record()` cost: what a thread that logs an event pays (the engine's monitor, a control,
  the peer): one deque append, measured in this process over 100,000 calls.
- the log's thread during a show: a daemon plays an 8-stem set on the virtual card for
  `--seconds`, with a command every 5 s; CPU of the `backtrack-showlog` thread alone (from
  /proc/PID/task/TID/schedstat), the whole daemon's for scale, write+fsync rounds per second and bytes
  per second, from `status.showlog`.
- bytes per hour of show: the show file's size over the show's length, for a single unit
  and for both units of a pair (a pair's samples carry lock error, drift and offsets).
- `backtrack check --live` on a 20-song set of 8 mono 24-bit stems of `--song-s` seconds
  each (160 distinct files; 4-minute songs by default: 5.3 GB of scratch files, removed
  after), the daemon running and stopped (so the silent write runs too):
  once with the stems dropped from the page cache (posix_fadvise DONTNEED: what a box reads
  from its card), then `--runs` times warm; with the MB/s the checksums were read at.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import DaemonProcess, make_set, pct, proc_cpu_s, start_jack_audio  # noqa: E402

from tests.showkit import Show, free_port, wait_for  # noqa: E402

RATE = 48000
LOG = "selftest: {at_start: false}\n"  # log_dir: shows comes with common.make_set


def med_worst(label: str, values, unit: str, fmt: str = "8.2f") -> str:
    v = np.asarray(values, dtype=np.float64)
    return (f"  {label:<46} median {format(pct(v, 50), fmt)} {unit}   "
            f"worst {format(v.max(), fmt)} {unit}   n={len(v)}")


def thread_cpu_s(pid: int, name: str) -> float:
    """CPU seconds of the daemon's threads called `name` (the kernel keeps 15 characters),
    from /proc/PID/task/TID/schedstat (nanoseconds: the clock ticks of /stat are 10 ms, too
    coarse for a thread that works a few milliseconds a minute)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            if not name.startswith(comm):
                continue
            total += int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError):
            continue
    return total


def show_bytes_per_hour(folder: Path) -> float:
    from appliance.showlog import read_show, shows
    found = shows(folder)
    n = max(found)
    size = sum(f.size for f in found[n])
    _n, recs, _st = read_show(folder, n)
    t0 = next(r["t_mono_ns"] for r in recs if r["kind"] == "show_start")
    t1 = max(r["t_mono_ns"] for r in recs)
    return size / ((t1 - t0) / 1e9) * 3600


def bench_record() -> list[float]:
    from appliance.showlog import ShowLog
    out = []
    for _ in range(5):
        slog = ShowLog(Path(tempfile.gettempdir()) / "unused", queue_max=1 << 30)
        t0 = time.perf_counter_ns()
        for i in range(100_000):
            slog.record("underrun", count=i, song=3, state="playing")
        out.append((time.perf_counter_ns() - t0) / 100_000 / 1000)
    return out


def with_log(show: Show) -> Show:
    show.config.write_text(show.config.read_text() + LOG)
    return show


def bench_show(seconds: float, runs: int) -> None:
    cpu_thread, cpu_daemon, writes, bps, bph = [], [], [], [], []
    for run in range(runs):
        with tempfile.TemporaryDirectory() as td:
            ja = start_jack_audio(seconds=seconds + 20)
            try:
                show = with_log(make_set(Path(td), songs=3, seconds=seconds, stems=8))
                with DaemonProcess(show, ja.environ()) as d:
                    d.ctl("play")
                    wait_for(lambda d=d: d.status()["showlog"]["show"] is not None, 5)
                    time.sleep(1.0)
                    pid = d.proc.pid
                    st0 = d.status()["showlog"]
                    c0, t0 = thread_cpu_s(pid, "backtrack-showlog"), time.monotonic()
                    d0 = proc_cpu_s(pid)
                    end = t0 + seconds
                    k = 0
                    while time.monotonic() < end:
                        time.sleep(min(5.0, max(0.0, end - time.monotonic())))
                        k += 1
                        d.ctl("pause")
                        d.ctl("play")
                    dt = time.monotonic() - t0
                    st1 = d.status()["showlog"]
                    cpu_thread.append(100 * (thread_cpu_s(pid, "backtrack-showlog") - c0) / dt)
                    cpu_daemon.append(100 * (proc_cpu_s(pid) - d0) / dt)
                    writes.append((st1["writes"] - st0["writes"]) / dt)
                    bps.append((st1["bytes"] - st0["bytes"]) / dt)
                    d.stop()
                bph.append(show_bytes_per_hour(Path(td) / "shows"))
            finally:
                ja.close()
        print(f"    run {run + 1}: log thread {cpu_thread[-1]:.3f} % of a core, daemon "
              f"{cpu_daemon[-1]:.2f} %, {writes[-1]:.2f} writes/s", flush=True)
    print(med_worst("log thread CPU during a show", cpu_thread, "% of a core", "8.3f"))
    print(med_worst("whole daemon CPU (for scale)", cpu_daemon, "% of a core"))
    print(med_worst("write+fsync rounds per second", writes, "/s"))
    print(med_worst("bytes written per second", bps, "B/s", "8.1f"))
    print(med_worst("bytes per hour, single unit, steady", [b * 3.6 for b in bps], "KB/h",
                    "8.0f"))
    print(med_worst("bytes per hour, single unit, whole file", [b / 1024 for b in bph],
                    "KB/h", "8.0f"))


def bench_pair(seconds: float) -> None:
    from appliance.peer import wire
    with tempfile.TemporaryDirectory() as td:
        key = Path(td) / "peer.key"
        key.write_text(wire.generate_key())
        key.chmod(0o600)
        pa, pb = free_port(), free_port()
        ja = start_jack_audio(seconds=seconds + 30)
        jb = start_jack_audio(seconds=seconds + 30)
        try:
            shows = []
            for name, role, prio, me, other in (("a", "leader", 1, pa, pb),
                                                ("b", "follower", 2, pb, pa)):
                s = make_set(Path(td) / name, songs=1, seconds=seconds + 20, stems=8)
                s.config.write_text(s.config.read_text() + (
                    f"peer: {{role: {role}, priority: {prio}, listen: '127.0.0.1:{me}', "
                    f"peers: ['127.0.0.1:{other}'], key_file: {key}}}\n") + LOG)
                shows.append(s)
            with DaemonProcess(shows[0], ja.environ()) as a, \
                    DaemonProcess(shows[1], jb.environ()) as b:
                wait_for(lambda: a.status()["role"] == "leader", 10)
                a.ctl("play")
                wait_for(lambda: b.status()["peer"]["locked"], 20)
                time.sleep(2.0)
                b0 = [d.status()["showlog"]["bytes"] for d in (a, b)]
                t0 = time.monotonic()
                time.sleep(seconds)
                b1 = [d.status()["showlog"]["bytes"] for d in (a, b)]
                dt = time.monotonic() - t0
                a.stop()
                b.stop()
            for k, (name, s) in enumerate(zip(("leader", "follower"), shows, strict=True)):
                bph = show_bytes_per_hour(s.config.parent / "shows")
                steady = (b1[k] - b0[k]) / dt * 3.6
                print(f"  bytes per hour, pair {name:<9} steady {steady:8.0f} KB/h, whole file "
                      f"{bph / 1024:8.0f} KB/h   (one {seconds:.0f} s show)")
        finally:
            ja.close()
            jb.close()


def make_twenty(folder: Path, song_s: float) -> Show:
    """20 songs x 8 mono 24-bit stems, each file its own noise (distinct checksums)."""
    folder.mkdir(parents=True, exist_ok=True)
    sock = str(folder / "ctl.sock")
    n = int(song_s * RATE)
    rng = np.random.default_rng(5)
    lines = ['device: {name: "backtrack_test", channels: 8, rate: 48000, format: S32_LE, '
             "period: 256, periods: 3}",
             "outputs: {" + ", ".join(f"o{k + 1}: {k + 1}" for k in range(8)) + "}",
             f'control: {{socket: "{sock}"}}', "log_dir: shows", "songs:"]
    for i in range(20):
        lines += [f'  - title: "Song {i + 1}"', "    after: stop", "    stems:"]
        for k in range(8):
            path = folder / f"song{i + 1:02d}_stem{k + 1}.wav"
            data = (0.05 * rng.standard_normal(n)).astype(np.float32)
            data[0] = 0.5
            sf.write(str(path), data, RATE, subtype="PCM_24")
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            lines.append(f"      - {{file: {path.name}, to: o{k + 1}}}")
    cfg = folder / "show.yaml"
    cfg.write_text("\n".join(lines) + "\n" + LOG)
    return Show(cfg, socket=sock, frames=[n] * 20)


def drop_cache(files) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def live(config: Path) -> tuple[float, dict]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "appliance", "check", "--live", "--config",
                        str(config), "--json"], capture_output=True, text=True, cwd=ROOT)
    took = time.monotonic() - t0
    return took, json.loads(r.stdout)


def bench_check_live(song_s: float, runs: int) -> None:
    with tempfile.TemporaryDirectory() as td:
        t0 = time.monotonic()
        show = make_twenty(Path(td), song_s)
        files = sorted(Path(td).glob("*.wav"))
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"  (set written: 20 songs, {len(files)} stems, {mb:.0f} MB, "
              f"{time.monotonic() - t0:.0f} s)", flush=True)
        r = subprocess.run([sys.executable, "-m", "appliance", "check", "--config",
                            str(show.config), "--no-device", "--write-checksums"],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        ja = start_jack_audio(seconds=30)
        try:
            with DaemonProcess(show, ja.environ()) as d:
                drop_cache(files)
                cold, res = live(show.config)
                assert res["result"] == "pass", res
                warm = []
                for _ in range(runs):
                    t, res = live(show.config)
                    assert res["result"] == "pass", res
                    warm.append(t)
                d.stop()
        finally:
            ja.close()
    print(f"  check --live, 20 songs x 8 stems ({mb:.0f} MB), cold page cache   "
          f"{cold:8.2f} s   ({mb / cold:.0f} MB/s)")
    print(med_worst("check --live, same set, warm page cache", warm, "s"))
    print(f"  (warm: {mb / float(np.median(warm)):.0f} MB/s; the daemon's own time for the last "
          f"run: {res['took_s']:.2f} s)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--song-s", type=float, default=240.0)
    args = ap.parse_args()
    print("show log: record() cost to the caller")
    print(med_worst("record() per call", bench_record(), "us", "8.3f"))
    print(f"show log during a show ({args.seconds:.0f} s, 8 stems, a command every 5 s)")
    bench_show(args.seconds, args.runs)
    bench_pair(args.seconds)
    print(f"self-test: backtrack check --live on a 20-song set ({args.song_s:.0f} s songs)")
    bench_check_live(args.song_s, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real-audio test harness: a private JACK server, an ALSA PCM into it, and a recorder.

The chain a playback test builds (see DESIGN.md, "Testing without a Pi")::

    player (pyalsaaudio, its own process)
      -> ALSA PCM ``backtrack_test``: type ``plug`` over type ``jack`` (libasound2-plugins)
      -> JACK server, dummy backend (paced by the system clock, no hardware)
      -> recorder: a JACK client in its own process, writing every frame plus block
         timestamps (``time.monotonic_ns()``) into memmap files the test reads.

Usage::

    with JackServer(rate=48000, period=256) as server:
        conf = server.write_alsa_config(channels=8)      # PCM "backtrack_test"
        with Recorder(server, channels=8) as rec:
            subprocess.run([sys.executable, "player.py"], env=server.environ(), check=True)
            recording = rec.stop()
        start = recording.first_nonsilent()

(tests/conftest.py wraps this in the ``jack_audio`` / ``jack_audio_factory`` fixtures.)

Facts found while building this (jackd2 1.9.21, libasound2-plugins 1.2.7.1, alsa-lib 1.2.8,
pyalsaaudio 0.11.0, Debian 12):

* jackd flags: ``jackd -n NAME --realtime -d dummy -r RATE -p PERIOD -C 0 -P 0``. ``-C``/``-P``
  are *dummy backend* options (number of capture/playback ports); before ``-d`` they mean
  something else (``-C`` = internal session file), as do ``-r`` (no-realtime) and ``-p``
  (port-max). ``-C 0 -P 0`` works: the server has no ports at all. ``--realtime`` works as
  root (process thread SCHED_FIFO 10, or ``--realtime-priority``: 80 here, see
  ``appliance.devtools.virtualcard.CARD_PRIORITY``) and, where RT is not permitted (tested as an
  unprivileged user), jackd prints "Cannot use real-time scheduling" and runs on with normal
  scheduling, so it is always safe to ask for it. The dummy backend's ``-w`` does not change
  its pace; libfaketime does (see :func:`faketime_library`).
* Clients get ``JACK_NO_START_SERVER=1`` (in :meth:`JackServer.env`): libjack's default is
  to start a server itself when the named one is not up.
* jackd's tmpdir is /dev/shm. Per server it creates ``jack_NAME_0_0`` (socket) and
  ``jack_sem.UID_NAME_*`` (semaphores; one per client too); shared by all servers of a uid:
  ``jack-UID-N`` segments, ``jack-shm-registry``, ``jack_db-UID/``. SIGTERM cleans all of that
  up; after SIGKILL the per-name files stay behind (the next server reclaims the shared
  segments), so :meth:`JackServer.stop` removes only the per-name files.
* jack2 allows at most 8 servers at once per machine (a table in jack-shm-registry). A
  SIGKILLed server keeps its slot, and jackd reclaims a dead slot only for the same name, so
  with unique names each hard kill leaked a slot until jackd failed with "Too many servers
  already active". :meth:`JackServer.stop` frees the slot of its own dead server and
  :meth:`JackServer.start` frees dead ``bt-*`` slots (:func:`reclaim_dead_server_slots`, under
  jack's registry lock). Parallel test runs on one machine share those 8 slots.
* ALSA config: ``ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:<file>`` in the player's
  environment works: alsa.conf is loaded (with its hooks for /etc/asound.conf and ~/.asoundrc)
  and then our file, which defines the PCMs. No HOME trickery needed.
* The jack PCM plugin is a JACK client of the server named by ``JACK_DEFAULT_SERVER``,
  named ``<program>.P.<pid>.<n>`` (e.g. ``python.P.1234.0``). It supports FLOAT only, at the server's rate, hence the ``plug`` on top
  (S16/S32 conversion; note ``plug`` would also silently *resample* if the player asked for a
  different rate: check ``pcm.info()['rate']``). Its ports are connected to the
  ``playback_ports`` when the PCM *starts* (first period written), so the recorder must be
  up before the player starts, else the start fails (EIO).
* Latency of the chain: the plugin adds no buffer of its own. Its JACK process callback copies
  the next JACK period straight out of the ALSA ring buffer (period x periods, e.g. 256 x 3 =
  768 frames = 16 ms at 48 kHz) into its port, and the recorder reads it in the same cycle.
  A blocking writer's ``write()`` returns just after a cycle took a period out; the period it
  wrote then sits behind the 512 frames still queued and is processed 3 cycles after the one
  that freed the space: measured 16.0 ms after ``write()`` returned, 21.3 ms after it was
  called (it blocked ~5.3 ms), i.e. the whole ALSA buffer. Timestamps here are the start of
  the JACK cycle that processed the frame; a real card adds a constant output latency on top.
* On underrun the plugin outputs silence (no stale-buffer replay) until the player writes
  again; pyalsaaudio 0.11 ``write()`` then returns ``-32`` (-EPIPE) and *drops* that buffer
  (the PCM is re-prepared; the caller has to write it again).
* Drain: once, under heavy CPU overload, ~2560 frames of non-silent data followed the end of
  the signal after ``close()`` (drain); most likely the ring buffer replayed while the
  non-RT player was slow to notice the drain had finished (the plugin keeps copying until
  alsa-lib stops it). A player that ends with a buffer of silence would not show it.
* CPU load: with more busy processes than cores, the non-RT player underruns its 16 ms buffer
  and the recorder sometimes misses a cycle (``Recording.missed_cycles()``, ``xruns``; 2 of
  12 runs with 3 busy loops on this 2-core machine). With one busy loop: no xruns in 30 runs.
  The harness reports such runs; it cannot prevent them.
* The recorder's main thread blocks in read() on stdin until told to stop instead of polling:
  a non-RT thread preempted while holding the GIL would stall the RT process callback.

Timestamps: the recorder takes ``time.monotonic_ns()`` at the top of each JACK process
callback (CLOCK_MONOTONIC, the same clock as the test process and the player; the recorder is
never run under libfaketime). :meth:`Recording.time_of_frame` interpolates between blocks.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.devtools.virtualcard import (  # noqa: F401 - re-exported for the tests
    DEFAULT_PCM,
    JackError,
    JackServer,
    _die_with_parent_preexec,
    _live,
    alsa_config_path_env,
    faketime_library,
    jack_registry_servers,
    reclaim_dead_server_slots,
    write_alsa_config,
)

__all__ = [
    "DEFAULT_PCM",
    "JackServer",
    "JackError",
    "HarnessDisturbed",
    "Recorder",
    "Recording",
    "alsa_config_path_env",
    "faketime_library",
    "jack_registry_servers",
    "judged",
    "reclaim_dead_server_slots",
    "write_alsa_config",
]


# --------------------------------------------------------------------------------------------
# Recording (what the recorder heard)

# header slots (int64) of the recorder's memmap
_H_FRAMES, _H_BLOCKS, _H_RATE, _H_BLOCKSIZE, _H_CHANNELS, _H_DROPPED, _H_XRUNS, _H_READY = range(8)
_H_SHUTDOWN, _H_CAPACITY, _H_MAXBLOCKS = 8, 9, 10
_H_XRUN_MARKS = 32  # slots 32..: blocks recorded when each xrun was notified (first 64)
_MAX_XRUN_MARKS = 64
_HEADER_LEN = _H_XRUN_MARKS + _MAX_XRUN_MARKS


@dataclass
class Recording:
    """Everything the recorder received, frame-exact, with the time each block came out.

    ``audio``: float32 (frames x channels). ``block_frames[k]``: index of block k's first frame;
    ``block_times_ns[k]``: ``time.monotonic_ns()`` in the process callback of block k;
    ``block_jack_frames[k]``: JACK's frame time of that cycle (a jump larger than the block
    size means the recorder missed cycles). ``xruns``: JACK xruns the recorder was told of,
    ``xrun_blocks``: how many blocks had been recorded when each was notified. An xrun of the
    dummy backend itself (its thread woke up after the next cycle was due, e.g. CPU
    contention) re-anchors its clock: the time is lost, so later blocks are all late by it;
    :meth:`measured_rate` fits around those steps. ``dropped``: frames lost because the
    capacity was exceeded.
    """

    audio: np.ndarray
    rate: int
    block_frames: np.ndarray
    block_times_ns: np.ndarray
    block_jack_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xruns: int = 0
    xrun_blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dropped: int = 0
    steal_ms: float = 0.0

    @property
    def frames(self) -> int:
        return int(self.audio.shape[0])

    @property
    def channels(self) -> int:
        return int(self.audio.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def time_of_frame(self, i):
        """Monotonic ns at which frame ``i`` (int or array) came out, as float.

        Linear interpolation between block timestamps; beyond the last block, extrapolated at
        the nominal rate. Jitter of a single callback timestamp is typically tens of us.
        """
        bf, bt = self.block_frames, self.block_times_ns
        if len(bf) == 0:
            raise ValueError("empty recording")
        i_arr = np.asarray(i, dtype=np.float64)
        ns_per_frame = 1e9 / self.rate
        if len(bf) == 1:
            out = bt[0] + (i_arr - bf[0]) * ns_per_frame
        else:
            out = np.interp(i_arr, bf.astype(np.float64), bt.astype(np.float64))
            before = i_arr < bf[0]
            after = i_arr > bf[-1]
            out = np.where(before, bt[0] + (i_arr - bf[0]) * ns_per_frame, out)
            out = np.where(after, bt[-1] + (i_arr - bf[-1]) * ns_per_frame, out)
        return float(out) if np.ndim(out) == 0 else out

    def schedule_time_of_frame(self, i, window_s: float = 1.0):
        """Monotonic ns at which frame ``i`` came out by the server's cycle schedule, as
        float: what a DAC's clock would say, without the recorder's wake-up jitter.

        The callback timestamps of :meth:`time_of_frame` are late by the recorder's own
        scheduling (measured here: 0.3 ms median, 0.8 ms p99 above the lower envelope on a
        loaded 2-core machine), which is the harness, not the player. Here each block's time
        is its JACK frame time on the line through the lower envelope of (frame time,
        timestamp): the slope from a least-squares fit, the envelope as the larger of the
        lowest residual in the ``window_s`` before and after the block, which follows a
        step (the dummy backend re-anchoring after a late cycle) on either side of it.
        """
        if len(self.block_frames) < 4:
            return self.time_of_frame(i)
        sched, ns_per_frame, _x = self._schedule(window_s)
        i_arr = np.asarray(i, dtype=np.float64)
        k = self._block_of(i_arr)
        out = sched[k] + (i_arr - self.block_frames[k]) * ns_per_frame
        return float(out) if np.ndim(out) == 0 else out

    def schedule_step_ns(self, i0: int, i1: int, window_s: float = 1.0) -> float:
        """How far the server moved its cycle schedule between frames i0 and i1, beyond
        its steady rate by its own frame counter (ns, positive: later): the re-anchoring
        of a dummy server that woke late. A missed cycle is not one."""
        sched, ns_per_frame, x = self._schedule(window_s)
        k0, k1 = self._block_of(np.asarray([i0, i1], dtype=np.float64))
        return float(sched[k1] - sched[k0] - (x[k1] - x[k0]) * ns_per_frame)

    def schedule_moved(self, i: int, before: int, tol_ns: float = 50_000) -> bool:
        """Whether the server moved its cycle schedule (:meth:`schedule_step_ns`) by more
        than `tol_ns` in the `before` frames up to frame i: a unit whose "card" lost time
        there (a real card never does) and whose lock may still be catching up."""
        return abs(self.schedule_step_ns(max(0, i - before), i)) > tol_ns

    def _block_of(self, i: np.ndarray) -> np.ndarray:
        bf = self.block_frames
        return np.clip(np.searchsorted(bf, i, side="right") - 1, 0, len(bf) - 1)

    def _schedule(self, window_s: float) -> tuple[np.ndarray, float, np.ndarray]:
        """(each block's time on the schedule, ns per frame, each block's JACK frame time
        from the first, unwrapped), computed once per recording."""
        cache = self.__dict__.setdefault("_schedule_cache", {})
        if window_s in cache:
            return cache[window_s]
        bf = self.block_frames.astype(np.float64)
        jf = np.unwrap(self.block_jack_frames.astype(np.float64), period=2.0**32)
        bt = self.block_times_ns.astype(np.float64)
        x = jf - jf[0]
        y = bt - bt[0]
        w = max(1, int(window_s * self.rate / max(1.0, float(np.median(np.diff(bf))))))
        pad = np.full(w - 1, np.inf)

        def envelope(r: np.ndarray) -> np.ndarray:
            past = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, r]), w)
            future = np.lib.stride_tricks.sliding_window_view(np.concatenate([r, pad]), w)
            return np.maximum(past.min(1), future.min(1))

        b, a = np.polyfit(x, y, 1)  # ns per frame, from the server's own frame counter
        env = envelope(y - (a + b * x))
        if len(x) > 2 * w:
            # steps tilt a least-squares slope; the envelope's own typical slope (a median:
            # the steps are rare) is that tilt
            b += float(np.median((env[w:] - env[:-w]) / (x[w:] - x[:-w])))
            env = envelope(y - (a + b * x))
        cache[window_s] = (bt[0] + a + b * x + env, float(b), x)
        return cache[window_s]

    def frame_at_time(self, t_ns: float) -> float:
        """Inverse of :meth:`time_of_frame` (fractional frame index)."""
        bf, bt = self.block_frames.astype(np.float64), self.block_times_ns.astype(np.float64)
        if len(bf) < 2:
            return float(bf[0] + (t_ns - bt[0]) * self.rate / 1e9)
        if t_ns < bt[0]:
            return float(bf[0] + (t_ns - bt[0]) * self.rate / 1e9)
        if t_ns > bt[-1]:
            return float(bf[-1] + (t_ns - bt[-1]) * self.rate / 1e9)
        return float(np.interp(t_ns, bt, bf))

    def first_nonsilent(
        self, channel: int | None = None, threshold: float = 1e-4, start: int = 0
    ) -> int | None:
        """Index of the first frame >= start whose |sample| > threshold (any or one channel)."""
        a = self.audio[start:] if channel is None else self.audio[start:, channel]
        loud = np.abs(a) > threshold
        if loud.ndim == 2:
            loud = loud.any(axis=1)
        idx = np.flatnonzero(loud)
        return int(idx[0]) + start if len(idx) else None

    def last_nonsilent(self, channel: int | None = None, threshold: float = 1e-4) -> int | None:
        a = self.audio if channel is None else self.audio[:, channel]
        loud = np.abs(a) > threshold
        if loud.ndim == 2:
            loud = loud.any(axis=1)
        idx = np.flatnonzero(loud)
        return int(idx[-1]) if len(idx) else None

    def segments(self, guard: int = 3) -> list[tuple[int, int]]:
        """Block ranges [a, b) free of xruns (``guard`` blocks either side of each dropped)."""
        n = len(self.block_frames)
        cuts = sorted(int(x) for x in self.xrun_blocks)
        if self.xruns > len(self.xrun_blocks):  # more than we have marks for: no trust after
            n = min(n, cuts[-1] if cuts else n)
        out, a = [], 0
        for c in cuts:
            if c - guard > a:
                out.append((a, min(c - guard, n)))
            a = max(a, c + guard)
        if n > a:
            out.append((a, n))
        return [(a, b) for a, b in out if b - a >= 2]

    def clean_spans(self, guard: int = 3) -> list[tuple[int, int]]:
        """Recorded frame ranges [a, b) the harness kept whole: the xrun-free :meth:`segments`,
        cut again where the recorder missed cycles (what came out then is not in the
        recording, so the frames either side are not neighbours in the song)."""
        if len(self.block_frames) == 0:
            return []
        ends = np.append(self.block_frames, self.frames).astype(np.int64)
        missed = self.missed_frames() if len(self.block_jack_frames) > 1 else np.zeros(0)
        gaps = [int(k) + 1 for k in np.flatnonzero(missed > 0)]  # a block after a gap
        out = []
        for a, b in self.segments(guard):
            for g in [g for g in gaps if a < g < b] + [b]:
                if g - a >= 2:
                    out.append((int(ends[a]), int(ends[g])))
                a = g
        return out

    def measured_rate(self, first_block: int = 0, last_block: int | None = None) -> float:
        """Frames per second of CLOCK_MONOTONIC: least-squares slope of block frame index vs
        block timestamp, pooled over the xrun-free :meth:`segments` (each its own intercept).

        A free-running server gives ``rate`` within a few ppm; one under libfaketime
        ``x1.0005`` gives ``rate * 1.0005`` (measured +500 +- 5 ppm over 4 s).
        """
        last = len(self.block_frames) if last_block is None else last_block
        num = den = 0.0
        for a, b in self.segments():
            a, b = max(a, first_block), min(b, last)
            if b - a < 2:
                continue
            bf = self.block_frames[a:b].astype(np.float64)
            bt = self.block_times_ns[a:b].astype(np.float64)
            t = (bt - bt.mean()) / 1e9
            num += float((t * (bf - bf.mean())).sum())
            den += float((t * t).sum())
        if den == 0:
            raise ValueError("need at least two xrun-free blocks")
        return num / den

    def missed_frames(self) -> np.ndarray:
        """Frames the recorder did not see between block k and k + 1 (from JACK frame
        times; 0 where it saw every cycle)."""
        d = np.diff(self.block_jack_frames.astype(np.int64)) & 0xFFFFFFFF  # wraps at 2**32
        return d - np.diff(self.block_frames.astype(np.int64))

    def missed_cycles(self) -> int:
        """Cycles the recorder did not see (from JACK frame times), 0 in a clean run."""
        if len(self.block_jack_frames) < 2:
            return 0
        bs = np.diff(self.block_frames)
        return int((self.missed_frames() // np.maximum(bs, 1)).clip(min=0).sum())

    def disturbance(self) -> str:
        """What the harness itself reports went wrong in this recording ("" for a clean
        run): cycles the recorder missed and xruns it was told of (which include the dummy
        server re-anchoring its schedule after a late wake-up)."""
        missed = self.missed_cycles()
        parts = [f"{missed} missed cycles"] if missed else []
        if self.xruns:
            parts.append(f"{self.xruns} JACK xruns")
        if self.dropped:
            parts.append(f"{self.dropped} frames over capacity")
        if self.steal_ms >= STEAL_DISTURBS_MS:
            parts.append(f"the host took {self.steal_ms:.0f} ms of one CPU from this machine")
        return ", ".join(parts)


# A virtual machine's CPUs are taken away by its host now and then ("steal" in /proc/stat):
# every thread on that CPU stops, the player's writer and the recorder alike, for as long
# as the host likes (seen on the 2-core test host: 3-10 % of the time under a busy host,
# in stops of tens of ms). A stop of one CPU can make the player underrun without the
# recorder on the other CPU missing a cycle; so a recording during which the host took
# this much from one CPU is judged disturbed too (a check that fails is run again; one
# that fails every time still fails).
STEAL_DISTURBS_MS = 30.0


def cpu_steal_ms() -> list[float]:
    """Each CPU's steal time so far (ms; /proc/stat, in USER_HZ ticks), [] where unknown."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return []
    tick_ms = 1000.0 / os.sysconf("SC_CLK_TCK")
    return [int(f[8]) * tick_ms for f in (ln.split() for ln in lines)
            if f[0].startswith("cpu") and f[0] != "cpu" and len(f) > 8]


class HarnessDisturbed(AssertionError):
    """A check failed on a recording that the harness reports disturbed where it judged
    (see :meth:`Recording.disturbance`): the run says nothing about the player. pytest
    runs such a test again (pytest-rerunfailures, only for this error: see pyproject);
    a failure on a clean recording is an ordinary AssertionError and is never rerun."""


@contextlib.contextmanager
def judged(*recordings):
    """Checks inside that fail on a disturbed recording raise :class:`HarnessDisturbed`.
    Each argument is a :class:`Recording`, or a sound card (tests.conftest.JackAudio) whose
    recorder is stopped to read it: a check that failed while the daemons were still
    playing (a lock that never came) is judged on what was recorded until then."""
    try:
        yield
    except HarnessDisturbed:
        raise
    except AssertionError as e:
        recs = [r if isinstance(r, Recording) else r.stop() for r in recordings]
        why = "; ".join(d for d in (r.disturbance() for r in recs) if d)
        if why:
            raise HarnessDisturbed(f"{e} [the harness was disturbed: {why}]") from e
        raise


# --------------------------------------------------------------------------------------------
# Recorder (parent side)


class Recorder:
    """A JACK client in its own process recording ``channels`` input ports.

    Ports are ``<name>:in_1`` .. ``<name>:in_N``; the ALSA config from
    :meth:`JackServer.write_alsa_config` connects the test PCM to them. Recording starts when
    :meth:`start` returns (ports registered, client active); frame 0 is the first frame of the
    first cycle after activation. Capacity is ``seconds`` of audio; frames beyond it are
    counted in ``Recording.dropped``.
    """

    def __init__(
        self,
        server: JackServer | str,
        *,
        channels: int = 8,
        seconds: float = 60.0,
        name: str = "rec",
        workdir: str | os.PathLike | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.server_name = server if isinstance(server, str) else server.name
        self.channels = channels
        self.seconds = seconds
        self.name = name
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        if workdir is None:
            base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: cheap faults
            workdir = tempfile.mkdtemp(prefix=f"btrec-{self.server_name}-", dir=base)
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self._header: np.ndarray | None = None
        self.rate: int | None = None
        self.blocksize: int | None = None
        self.recording: Recording | None = None

    def start(self) -> Recorder:
        if self.proc is not None:
            raise JackError("recorder already started")
        env = dict(os.environ)
        for k in ("LD_PRELOAD", "FAKETIME"):
            env.pop(k, None)
        env["JACK_DEFAULT_SERVER"] = self.server_name
        env["JACK_NO_START_SERVER"] = "1"
        cmd = [
            sys.executable, os.path.abspath(__file__), "--record",
            "--server", self.server_name,
            "--name", self.name,
            "--channels", str(self.channels),
            "--seconds", str(self.seconds),
            "--dir", str(self.workdir),
        ]  # fmt: skip
        self._steal0 = cpu_steal_ms()
        self._stderr_path = self.workdir / "recorder.log"
        err = open(self._stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                preexec_fn=_die_with_parent_preexec(),
            )
        finally:
            err.close()
        _live.add(self)
        try:
            line = self._readline(self.start_timeout)
            if not line.startswith("READY "):
                raise JackError(f"recorder did not start ({line!r}):\n{self.log()}")
            info = json.loads(line[len("READY ") :])
            self.rate = info["rate"]
            self.blocksize = info["blocksize"]
            self._header = np.memmap(
                self.workdir / "header.i64", np.int64, "r", shape=(_HEADER_LEN,)
            )
        except BaseException:
            self.kill()
            raise
        return self

    def _readline(self, timeout: float) -> str:
        fd = self.proc.stdout
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return ""
        return fd.readline().decode(errors="replace").strip()

    def log(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def frames_so_far(self) -> int:
        """Frames recorded so far (readable while recording)."""
        if self._header is None:
            return 0 if self.recording is None else self.recording.frames
        return int(self._header[_H_FRAMES])

    def wait_frames(self, n: int, timeout: float = 10.0) -> int:
        """Block until at least ``n`` frames are recorded; returns frames_so_far()."""
        deadline = time.monotonic() + timeout
        while (f := self.frames_so_far()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorder has {f} of {n} frames after {timeout}s")
            if self.proc is not None and self.proc.poll() is not None:
                raise JackError(f"recorder exited:\n{self.log()}")
            time.sleep(0.005)
        return f

    def stop(self, timeout: float = 10.0) -> Recording:
        """Stop recording and return the :class:`Recording` (idempotent)."""
        if self.recording is not None:
            return self.recording
        if self.proc is None:
            raise JackError("recorder not started")
        try:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.proc.stdin.write(b"stop\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise JackError(f"recorder did not stop within {timeout}s:\n{self.log()}") from None
            if self.proc.returncode != 0:
                raise JackError(f"recorder exited with {self.proc.returncode}:\n{self.log()}")
            self.recording = self._load()
            after = cpu_steal_ms()
            if after and len(after) == len(self._steal0):
                self.recording.steal_ms = max(b - a for a, b in zip(self._steal0, after,
                                                                    strict=True))
            return self.recording
        finally:
            self._cleanup()

    def _load(self) -> Recording:
        d = self.workdir
        h = np.array(np.memmap(d / "header.i64", np.int64, "r", shape=(_HEADER_LEN,)))
        n, nb, ch = int(h[_H_FRAMES]), int(h[_H_BLOCKS]), int(h[_H_CHANNELS])
        cap, maxb = int(h[_H_CAPACITY]), int(h[_H_MAXBLOCKS])
        audio = np.array(np.memmap(d / "audio.f32", np.float32, "r", shape=(cap, ch))[:n])
        blocks = np.array(np.memmap(d / "blocks.i64", np.int64, "r", shape=(maxb, 3))[:nb])
        return Recording(
            audio=audio,
            rate=int(h[_H_RATE]),
            block_frames=blocks[:, 0].copy(),
            block_times_ns=blocks[:, 1].copy(),
            block_jack_frames=blocks[:, 2].copy(),
            xruns=int(h[_H_XRUNS]),
            xrun_blocks=h[
                _H_XRUN_MARKS : _H_XRUN_MARKS + min(int(h[_H_XRUNS]), _MAX_XRUN_MARKS)
            ].copy(),
            dropped=int(h[_H_DROPPED]),
        )

    def kill(self) -> None:
        """Hard stop without collecting a recording (teardown path)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._cleanup()

    close = kill

    def _cleanup(self) -> None:
        self._header = None
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(Exception):
                    f.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        _live.discard(self)

    def __enter__(self) -> Recorder:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.recording is None:
            self.kill()


# --------------------------------------------------------------------------------------------
# Recorder (child side): python tests/jackaudio.py --record ...


def _recorder_main(argv: list[str]) -> int:
    import argparse

    import jack

    ap = argparse.ArgumentParser()
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--server", required=True)
    ap.add_argument("--name", default="rec")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args(argv)

    client = jack.Client(a.name, use_exact_name=True, no_start_server=True, servername=a.server)
    rate, bs = client.samplerate, client.blocksize
    cap = int(a.seconds * rate)
    maxb = cap // max(bs, 1) + 4
    d = Path(a.dir)
    header = np.memmap(d / "header.i64", np.int64, "w+", shape=(_HEADER_LEN,))
    audio = np.memmap(d / "audio.f32", np.float32, "w+", shape=(cap, a.channels))
    blocks = np.memmap(d / "blocks.i64", np.int64, "w+", shape=(maxb, 3))
    header[_H_RATE], header[_H_BLOCKSIZE], header[_H_CHANNELS] = rate, bs, a.channels
    header[_H_CAPACITY], header[_H_MAXBLOCKS] = cap, maxb
    ports = [client.inports.register(f"in_{i + 1}") for i in range(a.channels)]
    audio_a, blocks_a, header_a = (
        audio.view(np.ndarray),
        blocks.view(np.ndarray),
        header.view(np.ndarray),
    )
    mono = time.monotonic_ns
    state = [0, 0]  # frames, blocks
    shutdown = threading.Event()

    @client.set_process_callback
    def process(n: int) -> None:
        t = mono()
        pos, nb = state
        if pos + n > cap or nb >= maxb:
            header_a[_H_DROPPED] += n
            return
        for c, p in enumerate(ports):
            audio_a[pos : pos + n, c] = p.get_array()
        b = blocks_a[nb]
        b[0], b[1], b[2] = pos, t, client.last_frame_time
        state[0], state[1] = pos + n, nb + 1
        header_a[_H_BLOCKS] = nb + 1  # blocks first: a reader never sees frames without times
        header_a[_H_FRAMES] = pos + n

    @client.set_xrun_callback
    def xrun(delay: float) -> None:
        k = int(header_a[_H_XRUNS])
        if k < _MAX_XRUN_MARKS:
            header_a[_H_XRUN_MARKS + k] = state[1]
        header_a[_H_XRUNS] = k + 1

    @client.set_shutdown_callback
    def on_shutdown(status, reason) -> None:
        header_a[_H_SHUTDOWN] = 1
        shutdown.set()

    gc.disable()  # no collector pauses inside the callback; this process lives briefly
    client.activate()
    header_a[_H_READY] = 1
    sys.stdout.write("READY " + json.dumps({"rate": rate, "blocksize": bs, "capacity": cap}) + "\n")
    sys.stdout.flush()
    # Block in read() (GIL released) until "stop" or EOF. No polling: a main thread that wakes
    # up holds the GIL for a moment, and if it is preempted then (it is not RT), the RT process
    # callback waits for the GIL and misses its cycle (seen under CPU load).
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line or line.strip() == b"stop":
            break
    if not shutdown.is_set():
        client.deactivate()
    client.close()
    for m in (audio, blocks, header):
        m.flush()
    return 0


if __name__ == "__main__":
    if "--record" in sys.argv[1:]:
        sys.exit(_recorder_main(sys.argv[1:]))
    sys.exit("usage: jackaudio.py --record --server NAME --dir DIR [--channels N] [--seconds S]")

"""Test shows and a daemon in a subprocess.

`make_show` writes songs whose stems are seeded noise quantised to 2^-20 (exact through
S32 and float), so a recorded frame can be traced back to its song, stem and frame by
value: a dropped, repeated or misplaced frame cannot hide. `DaemonProcess` runs `backtrack run`
as a real process against a JackAudio sound card.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from appliance.devtools.virtualcard import _die_with_parent_preexec

RATE = 48000
# stem name -> (output name, channels of the file)
STEMS = {"click": ("click", 1), "tracks": ("tracks", 2), "bass": ("bass", 1), "pad": ("pad", 1)}
OUTPUTS = {"click": [1], "tracks": [3, 4], "bass": [5], "pad": [6, 7]}


def noise(seed: int, frames: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-2**18, 2**18, size=(frames, channels)).astype(np.float32) / 2**20
    x[0] = 0.5  # frame 0 is never silent, so a song's start is found exactly
    x[x == 0] = 2**-20
    return x


@dataclass
class Show:
    config: Path
    stems: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (song, stem)
    frames: list[int] = field(default_factory=list)
    socket: str = ""

    def expected(self, song: int) -> np.ndarray:
        """What the device should carry for a song (8 channels), computed independently of
        the mixer: the routing rule written out by hand."""
        n = self.frames[song]
        out = np.zeros((n, 8), np.float32)
        for name, (out_name, _ch) in STEMS.items():
            data = self.stems.get((song, name))
            if data is None:
                continue
            chans = OUTPUTS[out_name]
            for k, c in enumerate(chans):
                src = data[:, 0] if data.shape[1] == 1 else data[:, k]
                out[: len(src), c - 1] += src
        return out


def _header(pcm: str, fmt: str, period: int, periods: int, sock: str) -> list[str]:
    return [
        f'device: {{name: "{pcm}", channels: 8, rate: {RATE}, format: {fmt}, '
        f"period: {period}, periods: {periods}}}",
        "outputs: {" + ", ".join(f"{k}: {v}" for k, v in OUTPUTS.items()) + "}",
        f'control: {{socket: "{sock}"}}',
        "engine: {readahead: 1.0}",
        "log_dir: shows",  # the show log beside the test's show, not in /var/lib
    ]


def _stems(show: Show, folder: Path, i: int, secs: float, prefix: str,
           alac: bool = False) -> list[str]:
    """Song i's stems written into `folder`: the `stems:` entries naming them. With `alac`,
    the pad stem is an ALAC M4A (lossless, so still exact; noise on the 16-bit grid)."""
    n = int(secs * RATE)
    show.frames.append(n)
    lines = []
    for j, (name, (out, ch)) in enumerate(STEMS.items()):
        # stems of one song differ in length; the song lasts as long as the longest
        frames = n if j == 0 else n - (j * RATE // 10)
        data = noise(1000 * i + j, frames, ch)
        if alac and name == "pad":
            data = np.round(data * 32768) / 32768
            data[data == 0] = 2**-15
            path = folder / f"{prefix}{name}.m4a"
            encode_pyav(path, "alac", RATE, data)
        else:
            path = folder / f"{prefix}{name}.wav"
            sf.write(str(path), data, RATE, subtype="FLOAT")
        show.stems[(i, name)] = data
        lines.append(f"  - {{file: {path.name}, to: {out}}}")
    return lines


def make_show(folder: Path, seconds: list[float], afters: list[str] | None = None,
              pcm: str = "backtrack_test", fmt: str = "S32_LE", period: int = 256,
              periods: int = 3, extra: str = "") -> Show:
    folder.mkdir(parents=True, exist_ok=True)
    afters = afters or ["stop"] * len(seconds)
    sock = str(folder / "ctl.sock")
    show = Show(folder / "show.yaml", socket=sock)
    lines = [*_header(pcm, fmt, period, periods, sock), "songs:"]
    for i, (secs, after) in enumerate(zip(seconds, afters, strict=True)):
        lines += [f'  - title: "Song {i + 1}"', f"    after: {after}", "    stems:"]
        lines += ["    " + x for x in _stems(show, folder, i, secs, f"s{i + 1}_")]
    show.config.write_text("\n".join(lines) + "\n" + extra)
    return show


def make_library(folder: Path, seconds: list[float], setlists: dict[str, list[str]],
                 pcm: str = "backtrack_test", period: int = 256, extra: str = "",
                 alac: tuple[int, ...] = ()) -> Show:
    """A show whose songs live in a library: `folder/songs/song-N/song.yaml` (titled "Song
    N", N from 1), each with its own stems; `setlists` name them by title or folder. Songs
    whose index (from 0) is in `alac` have an M4A stem (decoded through PyAV)."""
    sock = str(folder / "ctl.sock")
    show = Show(folder / "show.yaml", socket=sock)
    for i, secs in enumerate(seconds):
        d = folder / "songs" / f"song-{i + 1}"
        d.mkdir(parents=True)
        body = [f'title: "Song {i + 1}"', "stems:", *_stems(show, d, i, secs, "", i in alac)]
        (d / "song.yaml").write_text("\n".join(body) + "\n")
    lines = [*_header(pcm, "S32_LE", period, 3, sock), "library: songs", "setlists:"]
    lines += [f"  {name}: [{', '.join(repr(t) for t in songs)}]"
              for name, songs in setlists.items()]
    show.config.write_text("\n".join(lines) + "\n" + extra)
    return show


def encode_pyav(path: Path, codec: str, rate: int, x: np.ndarray, faststart: bool = False) -> None:
    """Write `x` (frames x channels, float in -1..1) with PyAV's encoder `codec`: the
    formats libsndfile lacks, made by PyAV itself."""
    import av

    layout = "mono" if x.shape[1] == 1 else "stereo"
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=rate)
        cc = stream.codec_context
        cc.layout = layout
        formats = [f.name for f in cc.codec.audio_formats]
        fmt = next(f for f in ("fltp", "flt", "s16p", "s16") if f in formats)
        if codec == "alac":
            fmt = "s16p"  # 16-bit ALAC: the decoded samples are the 16-bit input exactly
        step = cc.frame_size or 1024
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            if fmt.startswith("s16"):
                chunk = np.round(chunk * 32768).clip(-32768, 32767).astype(np.int16)
            else:
                chunk = chunk.astype(np.float32)
            arr = chunk.T if fmt.endswith("p") else chunk.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt,
                                               layout=layout)
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def find_frame(audio: np.ndarray, exp: np.ndarray, song_frame: int, n: int = 32) -> int | None:
    """Recorded index where song frame `song_frame` (and the next n) appears exactly."""
    ref = exp[song_frame:song_frame + n]
    for c in np.flatnonzero(audio[:, 0] == ref[0, 0]):
        if np.array_equal(audio[c:c + n, :7], ref[:, :7]):
            return int(c)
    return None


def song_frame_of(audio: np.ndarray, exp: np.ndarray, at: int, n: int = 32,
                  cols=slice(0, 7)) -> int | None:
    """Song frame whose n frames (on `cols`) are what was recorded at `at`."""
    ref = audio[at:at + n, cols]
    for c in np.flatnonzero(exp[:, cols][:, 0] == ref[0, 0]):
        if np.array_equal(exp[c:c + n, cols], ref):
            return int(c)
    return None


def aligned_song(rec, exp: np.ndarray, cols, before: int = 0, n: int = 64) -> np.ndarray:
    """The recording laid out by song frame: row ``before + k`` is what came out for song
    frame k (every channel), NaN where the harness lost track (its xruns and missed cycles:
    :meth:`tests.jackaudio.Recording.clean_spans`). Each clean span is placed by finding
    ``n`` frames of it on ``cols`` (outputs the test knows exactly) in ``exp``, so a check
    made on the result judges the player on everything the recorder kept, in a disturbed
    run too. A player that skipped or repeated frames inside a span shows as a mismatch."""
    out = np.full((before + len(exp), exp.shape[1]), np.nan, np.float64)
    a = rec.audio
    for fa, fb in rec.clean_spans():
        for i in range(fa, fb - n, 2400):
            win = a[i:i + n, cols]
            if not win.any():
                continue
            s = song_frame_of(a, exp, i, n, cols)
            if s is None:
                continue
            lo = max(fa, i - s - before)
            hi = min(fb, i - s + len(exp))
            out[lo - (i - s - before):hi - (i - s - before)] = a[lo:hi]
            break
    return out


def clean_after(rec, i: int, n: int) -> int:
    """How many of the n recorded frames from i lie in the harness's clean span holding i
    (0 when i is in none): a check of "exact for n frames from i" judges this many."""
    for a, b in rec.clean_spans():
        if a <= i < b:
            return min(n, b - i)
    return 0


def known_runs(x: np.ndarray, min_len: int = 1) -> list[tuple[int, int]]:
    """[a, b) runs of rows of an :func:`aligned_song` result that the harness kept."""
    ok = ~np.isnan(x if x.ndim == 1 else x[:, 0])
    d = np.diff(np.concatenate([[0], ok.astype(np.int8), [0]]))
    return [(int(a), int(b)) for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1),
                                             strict=True) if b - a >= min_len]


def find_song_start(audio: np.ndarray, first_frames: np.ndarray, start: int = 0) -> int | None:
    """Index in `audio` where a song's first frames (8 channels) appear exactly."""
    col = audio[start:, 0]
    for idx in np.flatnonzero(col == first_frames[0, 0]):
        i = start + int(idx)
        m = min(len(first_frames), audio.shape[0] - i)
        if m > 0 and np.array_equal(audio[i:i + m], first_frames[:m]):
            return i
    return None


@dataclass
class Trace:
    """How far a recording follows a song straight through (see :func:`trace`).

    ``song_end``: song frames heard in order from the start (the song's length when all of
    it was); ``rec_end``: recorded index where that run ended; ``problem``: what broke it
    (None when the song was heard to its end)."""

    song_end: int
    rec_end: int
    problem: str | None


def trace(rec, exp: np.ndarray, start: int, *, atol: float = 0.0) -> Trace:
    """Follow the recording from `start` through `exp` played straight through.

    The recording is cut at every JACK cycle the recorder missed (a harness glitch on a
    loaded machine: the recorder alone missed the cycle, or the whole graph skipped or
    re-ran it, and what the plugin took from the daemon in between is not known). Each
    piece must equal a contiguous run of `exp`, starting where the previous piece ended
    give or take the missed frames and a few JACK periods; the first two periods after a
    seam are not judged (after a late cycle the dummy server has been seen to hand the
    recorder one period twice). So a frame the daemon dropped, repeated or misrouted
    anywhere inside a piece is caught; only the harness's own seams get that slack.
    `atol` > 0 compares within that tolerance (a conversion on the way) instead of exactly."""
    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return np.array_equal(a, b) if atol == 0 else bool(np.allclose(a, b, rtol=0, atol=atol))

    bf = rec.block_frames.astype(np.int64)
    gaps = rec.missed_frames()
    period = int(np.median(np.diff(bf))) if len(bf) > 1 else 256
    cuts = [(int(bf[k + 1]), int(gaps[k])) for k in np.flatnonzero(gaps > 0)
            if bf[k + 1] > start]
    pos, song, slack = start, 0, (0, 0)
    for cut, missed in [*cuts, (rec.frames, 0)]:
        piece = rec.audio[pos:cut]
        n = min(len(piece), len(exp) - song + slack[1])
        if song < len(exp) and n > 0:
            for extra in sorted(range(slack[0], slack[1] + 1), key=abs):
                at = song + extra
                m = min(n, len(exp) - at)
                if at >= 0 and m > 0 and same(piece[:m], exp[at:at + m]):
                    song = at + m
                    if song >= len(exp):
                        return Trace(len(exp), pos + m, None)
                    break
            else:
                run = 0
                while run < min(len(piece), len(exp) - song) and \
                        same(piece[run], exp[song + run]):
                    run += 1
                return Trace(song + run, pos + run,
                             f"song frame {song + run} (recorded frame {pos + run}) differs")
        pos, song, slack = cut + 2 * period, song + 2 * period, \
            (-3 * period, missed + 3 * period)
    song = min(song, len(exp))
    return Trace(song, rec.frames, None if song >= len(exp) else
                 f"only {song} of {len(exp)} song frames were heard")


def mismatches(rec, exp: np.ndarray, start: int, *, atol: float = 0.0) -> list[str]:
    """Where the recording from `start` is not `exp` played straight through (:func:`trace`)."""
    t = trace(rec, exp, start, atol=atol)
    return [] if t.problem is None else [t.problem]


def locate(audio_frames: np.ndarray, song_audio: np.ndarray) -> int | None:
    """Song frame whose next frames equal `audio_frames` (a short run of recorded frames)."""
    col = song_audio[:, 0]
    for idx in np.flatnonzero(col == audio_frames[0, 0]):
        i = int(idx)
        m = len(audio_frames)
        if i + m <= len(song_audio) and np.array_equal(song_audio[i:i + m], audio_frames):
            return i
    return None


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port nobody uses on loopback now (UDP for the peers of a two-unit test and OSC;
    socket.SOCK_STREAM for the web remote)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float = 10.0, what: str = "condition", every: float = 0.02):
    """Poll `pred` until it returns something true (returned) or fail after `timeout`,
    naming `what` was awaited. A daemon answering half-started (no key yet) counts as not
    yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
        except (KeyError, TypeError):
            v = None
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def ctl_request(path: str, req: dict | str) -> dict:
    """One request on a daemon's control socket, as `backtrack ctl` sends it."""
    if isinstance(req, str):
        req = {"cmd": req}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


class DaemonProcess:
    """`backtrack run` in a subprocess with the sound card's environment."""

    def __init__(self, show: Show, env: dict[str, str], log: Path | None = None):
        env = {**env, "BACKTRACK_FAULTS": "1"}
        self.show = show
        self.log_path = log or show.config.with_suffix(".log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--config", str(show.config)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # a test or benchmark killed half way must not leave daemons playing (seen: two
            # orphans swapping roles for minutes, loading the machine for the next run)
            preexec_fn=_die_with_parent_preexec())
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                st = self.ctl({"cmd": "status"})
                if st.get("ok"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready:\n{self.log()}")

    def ctl(self, req: dict | str) -> dict:
        return ctl_request(self.show.socket, req)

    def status(self) -> dict:
        """What `backtrack ctl status` shows (the reply's "state")."""
        return self.ctl("status")["state"]

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.stop()

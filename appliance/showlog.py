"""The black-box show log: what happened on a show and when, kept on disk.

Why: when something goes wrong on stage, nobody can say afterwards what happened (which
footswitch, which underrun, when the standby took over). So every show gets an append-only
file in `log_dir`: songs, commands and their source, underruns, device loss, stems that
failed, role changes, takeovers, protection, lock error and drift, temperature.

Three rules shape this file:

- **Nobody waits for it.** `ShowLog.record` only appends a tuple to a bounded deque (no lock,
  no I/O, no formatting); when the deque is full the record is dropped and counted. Only
  the log's own thread formats, writes and fsyncs. The audio writer never calls it at all
  (the engine's monitor thread relays what the writer reports).
- **A power cut loses at most the last second and corrupts nothing before it.** The thread
  writes and `fdatasync`s what is queued every `flush_s` (0.5 s), appending only. Each
  record is framed with its length and CRC32, so a torn tail (half a record, or the zeros
  a file system leaves after a crash) is recognised and skipped, never read as a record.
- **Bounded.** A show file that reaches `max_file_bytes` continues in a next part; the
  oldest files are deleted when the folder holds more than `max_total_bytes`.

Record framing, one line per record (the JSON never holds a raw newline):

    R<length: 8 hex digits> <crc32 of the JSON bytes: 8 hex digits> <JSON>\\n

Every JSON object has `t_wall` (seconds since the epoch), `t_mono_ns` (CLOCK_MONOTONIC, the
clock a pair's units and the tests share), `kind`, and `seq` (its number in the show).

A show runs from the first play after the daemon starts (or after `idle_split_s` with
nothing playing) to the daemon's stop or that idle time; its file is
`show-NNNNNN-P.log` (show number, part). Events before the first play (the start-up self-
test, the pair finding each other) are kept in memory and written at the top of the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .realtime import lowest_fifo_no_inherit
from .threads import Worker

log = logging.getLogger("backtrack.showlog")

FLUSH_S = 0.5            # queued records are on disk (fsync'd) within this, plus the write
QUEUE_MAX = 8192         # records waiting for the thread; more are dropped (and counted)
PRE_SHOW_MAX = 256       # events kept from before the first play
FILE_RE = re.compile(r"^show-(\d{6})-(\d+)\.log$")
_HEADER = re.compile(rb"R([0-9a-f]{8}) ([0-9a-f]{8}) ")
_HEADER_LEN = 1 + 8 + 1 + 8 + 1
BEGIN = "show_start"
END = "show_end"


# ---- the record format ----------------------------------------------------------------------

def encode(rec: dict[str, Any]) -> bytes:
    """One framed record (see the module docstring)."""
    body = json.dumps(rec, separators=(",", ":"), default=str).encode()
    return b"R%08x %08x " % (len(body), zlib.crc32(body)) + body + b"\n"


@dataclass
class ReadStats:
    """What reading a file met besides good records."""

    records: int = 0
    bad: int = 0             # framed records whose length, CRC or JSON was wrong (skipped)
    torn_tail_bytes: int = 0  # bytes after the last good record that are not a record


def decode_all(data: bytes, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """The good records of a file's bytes, in order. A record is taken only when its header
    parses, the JSON that follows has exactly that length and CRC and is followed by a
    newline, and it is a JSON object. Anything else is skipped up to the next header."""
    stats = stats if stats is not None else ReadStats()
    pos, n = 0, len(data)
    last_good_end = 0
    while pos < n:
        m = _HEADER.match(data, pos)
        if m is not None:
            length, crc = int(m.group(1), 16), int(m.group(2), 16)
            start = pos + _HEADER_LEN
            end = start + length
            if end < n and data[end:end + 1] == b"\n":
                body = data[start:end]
                if zlib.crc32(body) == crc:
                    try:
                        rec = json.loads(body)
                    except ValueError:
                        rec = None
                    if isinstance(rec, dict):
                        stats.records += 1
                        pos = last_good_end = end + 1
                        yield rec
                        continue
        # not a record here: resynchronise at the next header (a line start first)
        nxt = _HEADER.search(data, pos + 1)
        if nxt is None:
            break
        stats.bad += 1
        pos = nxt.start()
    stats.torn_tail_bytes = n - last_good_end


def read_file(path: Path, stats: ReadStats | None = None) -> list[dict[str, Any]]:
    """Every good record of one show file (an unreadable file reads as none)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return []
    return list(decode_all(data, stats))


# ---- show files -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ShowFile:
    path: Path
    show: int
    part: int
    size: int


def show_files(folder: Path) -> list[ShowFile]:
    """The show files in `folder`, oldest first (by show number, then part)."""
    out = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for e in entries:
        m = FILE_RE.match(e.name)
        if m is None:
            continue
        try:
            size = e.stat().st_size
        except OSError:
            continue
        out.append(ShowFile(Path(e.path), int(m.group(1)), int(m.group(2)), size))
    out.sort(key=lambda f: (f.show, f.part))
    return out


def shows(folder: Path) -> dict[int, list[ShowFile]]:
    """Show number -> its parts, in order."""
    out: dict[int, list[ShowFile]] = {}
    for f in show_files(folder):
        out.setdefault(f.show, []).append(f)
    return out


def read_show(folder: Path, number: int | None = None
              ) -> tuple[int, list[dict[str, Any]], ReadStats]:
    """(show number, its records in order, what reading met) for show `number`, else the
    newest. KeyError when there is no such show (or none at all)."""
    found = shows(folder)
    if not found:
        raise KeyError(number)
    if number is None:
        number = max(found)
    if number not in found:
        raise KeyError(number)
    stats = ReadStats()
    recs: list[dict[str, Any]] = []
    for f in found[number]:
        recs.extend(read_file(f.path, stats))
    return number, recs, stats


def prune(folder: Path, max_total_bytes: int, keep: Iterable[Path] = ()) -> list[Path]:
    """Delete the oldest show files until the folder's show files fit `max_total_bytes`;
    never a file in `keep` (the one being written). Returns what was deleted."""
    files = show_files(folder)
    total = sum(f.size for f in files)
    keep = {Path(p) for p in keep}
    gone = []
    for f in files:
        if total <= max_total_bytes:
            break
        if f.path in keep:
            continue
        with contextlib.suppress(OSError):
            f.path.unlink()
            total -= f.size
            gone.append(f.path)
    return gone


def _fsync_dir(folder: Path) -> None:
    """A new file's name must survive a power cut too, not only its bytes."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- the writer -----------------------------------------------------------------------------

Sampler = Callable[[], "dict[str, Any] | None"]


@dataclass
class LogLimits:
    max_file_bytes: int = 16 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    sample_s: float = 1.0
    idle_split_s: float = 30 * 60.0
    flush_s: float = FLUSH_S


@dataclass
class _Open:
    fd: int
    path: Path
    show: int
    part: int
    size: int
    seq: int = 0
    started_mono: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    body: bool = False  # a record of the show is in this part (not just its first line)


def _no_header() -> dict[str, Any]:
    return {}


class ShowLog(Worker):
    """The log's thread and its inbox. `record` from any thread; `begin_show` when a song
    starts playing (cheap to call again: ignored while a show is open)."""

    def __init__(self, folder: Path, limits: LogLimits | None = None, priority: int = 0,
                 header: Callable[[], dict[str, Any]] = _no_header,
                 sampler: Sampler | None = None,
                 playing: Callable[[], bool] | None = None,
                 queue_max: int = QUEUE_MAX):
        super().__init__("backtrack-showlog", priority)
        self.folder = Path(folder)
        self.limits = limits or LogLimits()
        self.header = header
        self.sampler = sampler
        self.playing = playing
        self.queue_max = queue_max
        self._q: deque = deque()
        self.dropped = 0            # records the full inbox refused
        self._dropped_logged = 0
        self._pre: deque = deque(maxlen=PRE_SHOW_MAX)
        self._open: _Open | None = None
        self._want_show = False
        self._wake = threading.Event()
        self._next_sample = 0.0
        self._last_playing = time.monotonic()
        self.taken_items = 0        # inbox items the thread has taken, in order
        self.durable_items = 0      # of those, the first this many are fsync'd in a show file
        self.written_bytes = 0
        self.writes = 0             # write+fsync rounds
        self.error = ""             # the last write problem, for status ("" when fine)
        self._errors_logged: set[str] = set()
        self.shows_started = 0
        self._closing = False

    def take_priority(self) -> str:
        """The lowest real-time priority (see appliance.realtime), with RESET_ON_FORK: what
        the sampler runs (`vcgencmd`) starts as an ordinary process."""
        return lowest_fifo_no_inherit(self.priority > 0)

    # ---- any thread --------------------------------------------------------------------------
    def record(self, kind: str, **fields: Any) -> None:
        """Queue one event. Never blocks, never raises; a full inbox drops it (counted)."""
        if len(self._q) >= self.queue_max:
            self.dropped += 1
            return
        self._q.append((time.time_ns(), time.monotonic_ns(), kind, fields))

    def begin_show(self) -> None:
        """A song plays: a show begins (if none is open). Called under the engine's lock by
        its listeners, so only a flag and an inbox entry here."""
        if self._open is None and not self._want_show:
            self._want_show = True
            self.record(BEGIN)

    @property
    def in_show(self) -> bool:
        return self._open is not None or self._want_show

    @property
    def current(self) -> tuple[int, Path] | None:
        o = self._open
        return (o.show, o.path) if o is not None else None

    def status(self) -> dict[str, Any]:
        o = self._open
        return {"folder": str(self.folder), "show": o.show if o else None,
                "file": str(o.path) if o else None, "dropped": self.dropped,
                "bytes": self.written_bytes, "writes": self.writes,
                "error": self.error or None}

    # ---- the thread --------------------------------------------------------------------------
    def step(self) -> None:
        self._wake.wait(self.limits.flush_s)
        self._wake.clear()
        self._round(time.monotonic())

    def wakeup(self) -> None:
        self._wake.set()

    def finish(self) -> None:
        """Last round at stop: what is queued, then the end of the show."""
        self._round(time.monotonic(), final=True)

    def close(self) -> None:
        """Write what is queued, end the show, stop the thread (idempotent)."""
        self._closing = True
        self.halt(timeout=5)
        if not self.is_alive() and self._open is not None:  # never started, or died
            self._round(time.monotonic(), final=True)

    def _round(self, now: float, final: bool = False) -> None:
        items = self._take()
        self.taken_items += len(items)
        if self.playing is not None:
            try:
                if self.playing():
                    self._last_playing = now
            except Exception:  # noqa: BLE001 - a status read must not stop the log
                pass
        out: list[bytes] = []
        for k, (t_wall, t_mono, kind, fields) in enumerate(items):
            if kind == BEGIN:
                if self._open is None:
                    # the show begins with the song start that began it (queued a moment
                    # before this marker by the same command)
                    for tw, tm, kd, _f in reversed(items[:k]):
                        if kd == "song_start" and t_mono - tm < 100_000_000:
                            t_wall, t_mono = tw - 1, tm - 1
                            break
                    self._start_show(t_wall, t_mono)
                self._want_show = False
                continue
            rec = self._rec(t_wall, t_mono, kind, fields)
            if self._open is None:
                self._pre.append(rec)
                continue
            out.append(self._frame(rec))
        if self._open is not None and self.dropped != self._dropped_logged:
            out.append(self._frame(self._rec(time.time_ns(), time.monotonic_ns(), "log_dropped",
                                             {"count": self.dropped - self._dropped_logged})))
            self._dropped_logged = self.dropped
        if self._open is not None and self.sampler is not None and now >= self._next_sample \
                and not final:
            self._next_sample = now + self.limits.sample_s
            try:
                sample = self.sampler()
            except Exception as exc:  # noqa: BLE001 - a sample is never worth the log
                sample = {"sample_error": str(exc)[:200]}
            if sample:
                events = sample.pop("_events", ())
                for kind, fields in events:
                    out.append(self._frame(self._rec(time.time_ns(), time.monotonic_ns(),
                                                     kind, fields)))
                out.append(self._frame(self._rec(time.time_ns(), time.monotonic_ns(),
                                                 "sample", sample)))
        idle = (self._open is not None and self.playing is not None
                and now - self._last_playing > self.limits.idle_split_s)
        if self._open is not None and (final or idle):
            out.append(self._frame(self._rec(time.time_ns(), time.monotonic_ns(), END, {
                "why": "daemon stopping" if final else
                f"nothing played for {self.limits.idle_split_s / 60:g} min",
                "dropped": self.dropped})))
        if out and self._write(out) and self._open is not None and not self._pre:
            self.durable_items = self.taken_items
        if self._open is not None and (final or idle):
            self._close_file()

    def _take(self) -> list[tuple]:
        items = []
        q = self._q
        while q:
            items.append(q.popleft())
        return items

    def _rec(self, t_wall: int, t_mono: int, kind: str, fields: dict) -> dict[str, Any]:
        rec: dict[str, Any] = {"t_wall": round(t_wall / 1e9, 6), "t_mono_ns": t_mono,
                               "kind": kind}
        for k, v in fields.items():
            if k not in rec:
                rec[k] = v
        return rec

    def _frame(self, rec: dict[str, Any]) -> bytes:
        o = self._open
        if o is not None:
            o.seq += 1
            rec["seq"] = o.seq
        return encode(rec)

    def _start_show(self, t_wall: int, t_mono: int) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._problem(f"cannot create the show log folder {self.folder}: "
                          f"{exc.strerror or exc}")
            return
        known = show_files(self.folder)
        number = (known[-1].show + 1) if known else 1
        if not self._open_part(number, 1):
            return
        self.shows_started += 1
        self._last_playing = time.monotonic()
        try:
            head = dict(self.header())
        except Exception as exc:  # noqa: BLE001
            head = {"header_error": str(exc)[:200]}
        head.update({"show": number, "part": 1, "host": socket.gethostname(),
                     "pid": os.getpid()})
        first = [self._frame(self._rec(t_wall, t_mono, BEGIN, head))]
        first += [self._frame(r) for r in self._pre]
        self._pre.clear()
        if not self._write(first):
            self._close_file()

    def _open_part(self, show: int, part: int) -> bool:
        path = self.folder / f"show-{show:06d}-{part}.log"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            size = os.fstat(fd).st_size
        except OSError as exc:
            self._problem(f"cannot write the show log {path}: {exc.strerror or exc}")
            return False
        _fsync_dir(self.folder)
        self._open = _Open(fd, path, show, part, size, body=size > 0)
        # room for this part to grow to its limit: the folder never holds more than the total
        gone = prune(self.folder, self.limits.max_total_bytes - self.limits.max_file_bytes,
                     keep=[path])
        if gone:
            log.info("show log: deleted %d old file(s) to stay within %d MB", len(gone),
                     self.limits.max_total_bytes // (1024 * 1024))
        return True

    def _close_file(self) -> None:
        o = self._open
        self._open = None
        if o is not None:
            with contextlib.suppress(OSError):
                os.close(o.fd)

    def _write(self, frames: list[bytes]) -> bool:
        """Append and fdatasync; False (and the file as it was) when that failed. A part
        ends at the first record that would take it past `max_file_bytes`: a batch is split
        across parts record by record (a log thread held up under load gathers more than a
        part's worth; written whole, such a batch overran the limit), and a record larger
        than a part goes alone into a fresh one."""
        limit = self.limits.max_file_bytes
        i = 0
        while i < len(frames):
            o = self._open
            if o is None:
                return False
            j, size = i, 0
            while j < len(frames) and (o.size + size + len(frames[j]) <= limit
                                       or (j == i and not o.body)):
                size += len(frames[j])
                j += 1
            if j == i:  # not even one more record fits: the next part
                if not self._next_part():
                    return False
                continue
            if not self._append(b"".join(frames[i:j])):
                return False
            i = j
        return True

    def _next_part(self) -> bool:
        """Close this part and open the next, which begins with a line naming the show and
        part (so a part read alone says what it continues)."""
        o = self._open
        assert o is not None
        show, part, seq = o.show, o.part + 1, o.seq
        self._close_file()
        if not self._open_part(show, part):
            return False
        assert self._open is not None
        self._open.seq = seq
        ok = self._append(encode(self._rec(time.time_ns(), time.monotonic_ns(), "show_part",
                                           {"show": show, "part": part})))
        assert self._open is not None
        self._open.body = False  # the continuation line is not a record of the show
        return ok

    def _append(self, data: bytes) -> bool:
        o = self._open
        assert o is not None
        try:
            n = os.write(o.fd, data)
            if n != len(data):
                # a partial append (disk full): take it back, so no half record stays
                # between two good ones
                os.ftruncate(o.fd, o.size)
                raise OSError(28, f"only {n} of {len(data)} bytes written")
            os.fdatasync(o.fd)
        except OSError as exc:
            self._problem(f"show log {o.path}: {exc.strerror or exc}")
            with contextlib.suppress(OSError):
                os.ftruncate(o.fd, o.size)
            return False
        o.size += len(data)
        o.body = True
        self.written_bytes += len(data)
        self.writes += 1
        self.error = ""
        return True

    def _problem(self, text: str) -> None:
        self.error = text
        if text not in self._errors_logged and len(self._errors_logged) < 32:
            self._errors_logged.add(text)
            log.error("%s (the show goes on without it)", text)


__all__ = ["BEGIN", "END", "LogLimits", "ReadStats", "ShowFile", "ShowLog", "decode_all",
           "encode", "prune", "read_file", "read_show", "show_files", "shows"]

"""systemd integration: readiness, status, watchdog and the journal.

Everything here is a no-op when the daemon is not started by systemd (NOTIFY_SOCKET unset:
`backtrack run` in a terminal, or the tests without a socket), so the service code calls it
unconditionally.

- `Notifier` wraps sd_notify(3): READY=1 once the show can be played (or the daemon is
  waiting for the interface), STATUS= a one-line summary for `systemctl status`, and
  WATCHDOG=1 only while the caller says the audio path is healthy: a hung writer stops the
  pings and systemd kills and restarts the service (WatchdogSec= in the unit).
- `setup_logging` sends log records to the journal with structured fields (song, position,
  underruns, role, state) when stderr is the journal, so `journalctl -u backtrack
  BACKTRACK_SONG=4` finds everything that happened during song 4; elsewhere, plain stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("backtrack.systemd")

# Journal field names: upper case, digits and underscore. Prefixed so they never collide
# with journald's own fields.
FIELD_PREFIX = "BACKTRACK_"


class Notifier:
    """sd_notify with the watchdog bookkeeping. `env` (default os.environ) is read once, at
    construction, to decide what is on; the datagrams themselves go where sd_notify(3)
    finds NOTIFY_SOCKET, in the process environment."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.socket = env.get("NOTIFY_SOCKET") or None
        self.enabled = self.socket is not None
        self.watchdog_s = _watchdog_seconds(env)
        self._last_status = ""
        self._last_ping = 0.0
        self.pings = 0
        self._notify: Callable[[str], bool] | None = None
        if self.enabled:
            from systemd import daemon

            self._notify = daemon.notify

    def send(self, *lines: str) -> bool:
        """Send one datagram of KEY=VALUE lines; False when not under systemd or the socket
        is gone (systemd restarting: nothing to do about it here)."""
        if not self.enabled or self._notify is None:
            return False
        try:
            return bool(self._notify("\n".join(lines)))
        except OSError:
            return False

    def ready(self, status: str) -> None:
        self._last_status = _one_line(status)
        self.send("READY=1", f"STATUS={self._last_status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        """Send STATUS= only when it changed: a summary that ticks once a second while a
        song plays is plenty for `systemctl status`."""
        text = _one_line(text)
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self, status: str) -> None:
        self._last_status = _one_line(status)
        self.send("READY=1", f"STATUS={self._last_status}")

    def stopping(self, status: str = "stopping: fading out") -> None:
        self._last_status = _one_line(status)
        self.send("STOPPING=1", f"STATUS={self._last_status}")

    @property
    def ping_interval(self) -> float | None:
        """Half the watchdog timeout, as sd_watchdog_enabled(3) advises; None: no watchdog."""
        return self.watchdog_s / 2 if self.watchdog_s else None

    def watchdog(self, healthy: bool, now: float | None = None) -> bool:
        """Ping if the watchdog is on, the audio path is healthy and half the interval has
        passed. Returns True when a ping was sent. An unhealthy path is never pinged: that
        silence is what makes systemd restart a hung engine."""
        interval = self.ping_interval
        if interval is None or not healthy:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < interval:
            return False
        self._last_ping = now
        if self.send("WATCHDOG=1"):
            self.pings += 1
            return True
        return False


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """sd_watchdog_enabled(3) by hand: WATCHDOG_USEC, and WATCHDOG_PID if set must be us."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400]


def under_systemd(env: Mapping[str, str] | None = None, stderr_fd: int = 2) -> bool:
    """True when our stderr is systemd's journal stream. JOURNAL_STREAM holds the
    device:inode of that stream (systemd.exec(5)); comparing it with stderr is the check
    the man page asks for, because the variable is inherited: a test, or `backtrack run`
    started from a shell inside some other unit, has it set with stderr going elsewhere.
    (INVOCATION_ID alone is inherited the same way, so it does not decide.)"""
    env = os.environ if env is None else env
    stream = env.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(stderr_fd)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


class JournalFieldsHandler(logging.Handler):
    """A journal handler that adds the show's context to every record as fields. `context`
    returns the fields (str -> value); it must not take locks the logging thread may
    already hold (the engine's), so it reads lock-free snapshots."""

    def __init__(self, context: Callable[[], Mapping[str, object]] | None = None,
                 identifier: str = "backtrack", sender: Callable[..., None] | None = None):
        super().__init__()
        if sender is None:
            from systemd import journal

            sender = journal.send
        self._send = sender
        self.context = context
        self.identifier = identifier

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, object] = {}
            if self.context is not None:
                try:
                    for k, v in self.context().items():
                        fields[FIELD_PREFIX + k.upper()] = v
                except Exception:  # noqa: BLE001 - a log line must not fail for its context
                    pass
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            self._send(
                msg,
                PRIORITY=str(_priority(record.levelno)),
                SYSLOG_IDENTIFIER=self.identifier,
                LOGGER=record.name,
                THREAD_NAME=record.threadName or "",
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **{k: str(v) for k, v in fields.items()},
            )
        except Exception:  # noqa: BLE001
            self.handleError(record)


def _priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def setup_logging(context: Callable[[], Mapping[str, object]] | None = None,
                  env: Mapping[str, str] | None = None, level: int = logging.INFO) -> str:
    """Route the `backtrack` loggers: the journal with fields under systemd, else stderr.
    Returns "journal" or "stderr" (the daemon logs which, once). Replaces handlers set up
    earlier, so calling it twice does not double every line."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    if under_systemd(env):
        try:
            root.addHandler(JournalFieldsHandler(context))
            return "journal"
        except ImportError:
            pass
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return "stderr"


def set_context(context: Callable[[], Mapping[str, object]] | None) -> None:
    """Attach the show context to a journal handler installed before the daemon existed."""
    for h in logging.getLogger().handlers:
        if isinstance(h, JournalFieldsHandler):
            h.context = context

"""A private virtual sound card: a JACK server with the dummy backend, reached through the
ALSA `jack` PCM plugin.

Paced in real time by the system clock, it stands in for a USB interface where there is
none: `backtrack demo` plays on it on a machine without a sound card, and the test suite
records what the daemon played from it (tests/jackaudio.py adds the recorder). The facts
behind every flag here are in tests/jackaudio.py's docstring.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import itertools
import mmap
import os
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_PCM = "backtrack_test"
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
JACK_TMPDIR = Path(os.environ.get("JACK_TMPDIR", "/dev/shm"))

_counter = itertools.count(1)
# The virtual card stands in for a sound card, whose DMA takes each period on time whatever
# the player's threads do: its server (SCHED_FIFO 80) and so its clients (the ALSA plugin
# inside the player, the test's recorder: 75) run above the daemon's writer (70) and decoder
# (60). At jackd's default (10, clients 5) a decoder busy for tens of ms (a song's first
# blocks with a generated click and LTC) held the card off a core: 10 to 110 harness xruns in
# one 14 s test on an idle 2-core machine, none with the card above the player.
CARD_PRIORITY = 80
_live: set = set()  # servers and recorders not yet stopped; killed at interpreter exit


class JackError(RuntimeError):
    """The JACK server or the recorder did not start or stop as expected."""


@atexit.register
def _kill_leftovers() -> None:
    for obj in list(_live):
        with contextlib.suppress(Exception):
            obj.kill()


def _die_with_parent_preexec():
    """A preexec_fn: the child gets SIGTERM when the thread that started it dies.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is used only when
    starting from the main thread (a helper thread that starts a server and returns would
    otherwise kill it). Everything else is covered by stop()/atexit.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


# jack2's shm registry (/dev/shm/jack-shm-registry) has a table of MAX_SERVERS = 8 server
# slots per machine (all uids). jackd frees its slot when it exits cleanly; after SIGKILL the
# slot stays taken, and jackd only reclaims a dead slot registered under the *same* name. So
# every killed server with a unique name leaks a slot until "Too many servers already active".
# Layout (common/shm.h): header u32 magic, u16 protocol, i32 type, size, hdr_len, entry_len,
# then 8 x {pid_t pid; char name[257]} (264 bytes each), names "jack-<uid>:<server>:".
# Updates take the registry lock: SysV semaphore key 0x282929, semop(-1/+1, SEM_UNDO).
_REGISTRY = JACK_TMPDIR / "jack-shm-registry"
_REG_MAGIC = 0x4A41434B
_REG_SERVERS_OFF, _REG_SLOT, _REG_NSLOTS, _REG_NAME = 24, 264, 8, 257
_JACK_SEM_KEY = 0x282929


class _SemBuf(ctypes.Structure):
    _fields_ = [
        ("sem_num", ctypes.c_ushort),
        ("sem_op", ctypes.c_short),
        ("sem_flg", ctypes.c_short),
    ]


@contextlib.contextmanager
def _registry_lock():
    libc = ctypes.CDLL(None, use_errno=True)
    semid = libc.semget(_JACK_SEM_KEY, 0, 0)
    if semid < 0:  # no JACK has run on this machine: nothing to lock against
        yield
        return
    sem_undo = 0x1000
    if libc.semop(semid, ctypes.byref(_SemBuf(0, -1, sem_undo)), 1) != 0:
        raise OSError(ctypes.get_errno(), "cannot lock the JACK shm registry")
    try:
        yield
    finally:
        libc.semop(semid, ctypes.byref(_SemBuf(0, 1, sem_undo)), 1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def jack_registry_servers() -> list[tuple[int, str, bool]]:
    """(pid, server name, pid alive) of the taken slots of jack2's server table."""
    try:
        data = _REGISTRY.read_bytes()[: _REG_SERVERS_OFF + _REG_NSLOTS * _REG_SLOT]
    except OSError:
        return []
    out = []
    for i in range(_REG_NSLOTS):
        off = _REG_SERVERS_OFF + i * _REG_SLOT
        (pid,) = struct.unpack_from("<i", data, off)
        if pid:
            raw = data[off + 4 : off + 4 + _REG_NAME].split(b"\0")[0].decode(errors="replace")
            name = raw.split(":")[1] if raw.count(":") >= 2 else raw
            out.append((pid, name, _pid_alive(pid)))
    return out


def reclaim_dead_server_slots(prefix: str = "bt-") -> list[str]:
    """Free the jack2 registry slots of *dead* servers of this uid whose name starts with prefix.

    Only slots whose pid no longer exists are touched (what jackd itself does for a slot of the
    same name). Returns the names freed.
    """
    if not _REGISTRY.exists():
        return []
    want = f"jack-{os.getuid()}:{prefix}".encode()
    freed = []
    with _registry_lock(), open(_REGISTRY, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        magic, _proto, _type, _size, hdr_len, _entry_len = struct.unpack_from("<IHxxiiii", m, 0)
        if magic != _REG_MAGIC or hdr_len != _REG_SERVERS_OFF + _REG_NSLOTS * _REG_SLOT:
            return []  # unknown layout: leave it alone
        for i in range(_REG_NSLOTS):
            off = _REG_SERVERS_OFF + i * _REG_SLOT
            (pid,) = struct.unpack_from("<i", m, off)
            name = bytes(m[off + 4 : off + 4 + _REG_NAME]).split(b"\0")[0]
            if pid and name.startswith(want) and not _pid_alive(pid):
                m[off : off + _REG_SLOT] = bytes(_REG_SLOT)
                freed.append(name.decode(errors="replace"))
    return freed


def faketime_library() -> Path:
    """Path of libfaketimeMT.so.1 (Debian `libfaketime`), multiarch dir found at runtime.

    Run jackd with ``LD_PRELOAD=<this> FAKETIME="+0 x1.0005"`` and its clock - and with it the
    dummy backend's pace - runs 500 ppm fast (measured +498..+511 ppm vs a normal server).
    """
    candidates = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        candidates.append(f"/usr/lib/{multiarch}/faketime/libfaketimeMT.so.1")
    candidates += sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    candidates += [
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    for c in candidates:
        if os.path.exists(c):
            return Path(c)
    raise JackError("libfaketimeMT.so.1 not found (install Debian package libfaketime)")


# --------------------------------------------------------------------------------------------
# ALSA configuration


def write_alsa_config(
    path: str | os.PathLike,
    *,
    channels: int = 8,
    pcm: str = DEFAULT_PCM,
    recorder: str = "rec",
    ports: Sequence[str] | None = None,
) -> Path:
    """Write an asound.conf defining PCM ``pcm`` (type plug) over a type jack PCM.

    Channel i of the PCM goes to JACK port ``ports[i]``; by default ``<recorder>:in_<i+1>``,
    i.e. the :class:`Recorder`'s input ports. Every channel needs a port: the plugin makes as
    many channels as entries and fails to start (EIO) if one cannot be connected. Use the file
    with :func:`alsa_config_path_env` (``ALSA_CONFIG_PATH``). Returns the path.
    """
    if ports is None:
        ports = [f"{recorder}:in_{i + 1}" for i in range(channels)]
    if len(ports) != channels:
        raise ValueError(f"{len(ports)} ports for {channels} channels")
    inner = "bt_jack"
    lines = [
        f"# written by appliance/devtools/virtualcard.py: {channels} channels into JACK",
        f"pcm.{pcm} {{",
        "    type plug",
        f'    slave.pcm "{inner}"',
        "}",
        f"pcm.{inner} {{",
        "    type jack",
        "    playback_ports {",
    ]
    for i, port in enumerate(ports):
        lines.append(f'        {i} "{port}"')
    lines += ["    }", "}", ""]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


def alsa_config_path_env(conf: str | os.PathLike) -> dict[str, str]:
    """Environment that makes alsa-lib (e.g. pyalsaaudio) in a subprocess see ``conf``."""
    return {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{os.fspath(conf)}"}


# --------------------------------------------------------------------------------------------
# JACK server


class JackServer:
    """A private jackd with the dummy backend, paced by the system clock.

    ``faketime`` e.g. ``"+0 x1.0005"`` runs jackd under libfaketime, so this server consumes
    audio 500 ppm faster than real time (a drifting sound card). Use as a context manager or
    call :meth:`start` / :meth:`stop`; :meth:`stop` is idempotent and also cleans the per-name
    files in /dev/shm if jackd had to be killed.
    """

    def __init__(
        self,
        rate: int = 48000,
        period: int = 256,
        *,
        faketime: str | None = None,
        realtime: bool = True,
        name: str | None = None,
        workdir: str | os.PathLike | None = None,
        start_timeout: float = 10.0,
        playback_ports: int = 0,
    ) -> None:
        self.rate = rate
        self.playback_ports = playback_ports  # the dummy's system:playback_N sinks (demo)
        self.period = period
        self.faketime = faketime
        self.realtime = realtime
        self.name = name or f"bt-{os.getpid()}-{next(_counter)}"
        if "_" in self.name or "/" in self.name:
            raise ValueError("server name must not contain '_' or '/'")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.start_timeout = start_timeout
        self.alsa_conf: Path | None = None
        self.pcm: str | None = None
        self.proc: subprocess.Popen | None = None
        self._log_path = self.workdir / "jackd.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            "jackd",
            "-n", self.name,
            *(("--realtime", "--realtime-priority", str(CARD_PRIORITY)) if self.realtime
              else ("--no-realtime",)),
            "-d", "dummy",
            "-r", str(self.rate),
            "-p", str(self.period),
            "-C", "0",
            "-P", str(self.playback_ports),
        ]  # fmt: skip

    def start(self) -> JackServer:
        if self.proc is not None:
            raise JackError(f"server {self.name} already started")
        self._remove_shm_files()  # stale files of a dead server with the same name
        with contextlib.suppress(OSError):
            reclaim_dead_server_slots()
        env = dict(os.environ)
        for k in ("JACK_DEFAULT_SERVER", "LD_PRELOAD", "FAKETIME"):
            env.pop(k, None)
        if self.faketime is not None:
            env["LD_PRELOAD"] = str(faketime_library())
            env["FAKETIME"] = self.faketime
            env["FAKETIME_NO_CACHE"] = "1"  # harmless for relative offsets; re-reads FAKETIME
        log = open(self._log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent_preexec(),
            )
        finally:
            log.close()
        _live.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        env = self.environ()
        lsp = shutil.which("jack_lsp")
        while True:
            if self.proc.poll() is not None:
                raise JackError(
                    f"jackd {self.name} exited with {self.proc.returncode}:\n{self.log()}\n"
                    f"JACK server table (pid, name, alive): {jack_registry_servers()}"
                )
            if lsp:
                r = subprocess.run([lsp], env=env, capture_output=True, timeout=10)
                ok = r.returncode == 0
            else:  # fall back to a JACK client in a throwaway process
                r = subprocess.run(
                    [sys.executable, "-c",
                     "import jack; jack.Client('probe', no_start_server=True).close()"],
                    env=env, capture_output=True, timeout=10,
                )  # fmt: skip
                ok = r.returncode == 0
            if ok:
                return
            if time.monotonic() > deadline:
                raise JackError(
                    f"jackd {self.name} not up after {self.start_timeout}s:\n{self.log()}"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM jackd, wait; SIGKILL if it hangs; remove its per-name files in /dev/shm."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc is not None:
            self._remove_shm_files()
            with contextlib.suppress(OSError):
                reclaim_dead_server_slots(self.name + ":")  # its slot, if it did not exit cleanly
        _live.discard(self)
        if self._own_workdir and self.workdir.exists():
            # keep the log readable after stop: read it into memory first
            self._log_cache = self.log()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()

    def _remove_shm_files(self) -> None:
        patterns = [f"jack_{self.name}_*", f"jack_sem.*_{self.name}_*"]
        for pat in patterns:
            for p in JACK_TMPDIR.glob(pat):
                with contextlib.suppress(OSError):
                    p.unlink()

    def __enter__(self) -> JackServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.kill()

    # -- clients -----------------------------------------------------------------------------

    def write_alsa_config(
        self,
        channels: int = 8,
        *,
        pcm: str = DEFAULT_PCM,
        recorder: str = "rec",
        ports: Sequence[str] | None = None,
    ) -> Path:
        """Write this server's asound.conf (see :func:`write_alsa_config`); env() then has it."""
        self.alsa_conf = write_alsa_config(
            self.workdir / "asound.conf", channels=channels, pcm=pcm, recorder=recorder, ports=ports
        )
        self.pcm = pcm
        return self.alsa_conf

    def env(self) -> dict[str, str]:
        """Variables a client subprocess needs (merge into os.environ; see :meth:`environ`)."""
        env = {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}
        if self.alsa_conf is not None:
            env.update(alsa_config_path_env(self.alsa_conf))
        return env

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ + :meth:`env` (+ extra), without any libfaketime preload."""
        env = dict(os.environ)
        for k in ("LD_PRELOAD", "FAKETIME"):
            env.pop(k, None)
        env.update(self.env())
        env.update(extra)
        return env

    def driver_xruns(self) -> int:
        """Times the dummy backend woke up too late and re-anchored its clock (from its log)."""
        return self.log().count("JackTimedDriver::Process XRun")

    def log(self) -> str:
        if hasattr(self, "_log_cache"):
            return self._log_cache
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        ft = f", faketime={self.faketime!r}" if self.faketime else ""
        return f"JackServer({self.name!r}, rate={self.rate}, period={self.period}{ft})"

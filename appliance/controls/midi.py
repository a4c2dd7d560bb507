"""MIDI in (foot controllers -> actions) and MIDI out (per-song messages, clock, MTC).

Why it is built this way:

- Ports are found by part of their name and watched once a second, because USB MIDI gear
  is plugged in after the box boots and is unplugged mid-set; neither may need a restart.
  A re-plugged device gets a new ALSA client number and so a new full port name, which is
  how a re-plug between two polls is noticed.
- rtmidi may call the input callback from a real-time thread (JACK's process callback), so
  the callback only queues the bytes; parsing, mapping and `daemon.act` run in our own
  thread. The parser takes any byte soup (stray data bytes, running status, SysEx,
  real-time bytes in the middle) and never raises.
- Clock and MTC come from `SyncScheduler` (midiclock.py), fed with the engine's audio
  position and the song's tempo map, never from a sleep loop; the sender thread only
  decides when to look again. Jumps and vamps are seen in the position itself, so no
  engine event has to reach MIDI out in time for the receivers to be re-located.
- A follower of a hot-standby pair stays silent on MIDI out: only the unit being heard
  drives the gear.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from ..actions import Action
from ..config import Config, MidiConfig, MidiMapping
from ..livemix import cc_to_db
from ..tempomap import TempoMap
from ..threads import Worker
from .midiclock import JUMP_MIN_S, SyncScheduler, Timed

log = logging.getLogger("backtrack.midi")

CLIENT_IN = "backtrack-in"
CLIENT_OUT = "backtrack-out"
PORT_POLL_S = 1.0
RETRY_MAX_S = 10.0      # no sequencer / JACK server: retry ever more slowly up to this
IDLE_WAKE_S = 0.02      # sender: how often to look at the position while nothing plays
PLAY_WAKE_S = 0.01      # ... at least this often while a song plays (a stop seen this fast)
ARMED_WAKE_S = 0.002    # ... after a command or song start: a song's first tick on time
ARMED_S = 1.0           # how long after an engine event to look at ARMED_WAKE_S
RT_BELOW_WRITER = 15    # FIFO priority of the MIDI threads: this far below the writer's
SILENT_ROLES = ("follower", "standby", "starting")  # peer roles not (yet) heard: no MIDI out

# data bytes after a status byte, by high nibble (channel messages) or full byte (common)
_CHANNEL_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_COMMON_LEN = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF4: 0, 0xF5: 0}


class MidiParser:
    """Bytes in, complete channel messages out, whatever the input.

    Keeps running status across calls (some gear sends it even over USB), skips SysEx and
    the data of system common messages, ignores real-time bytes wherever they appear, and
    drops data bytes that belong to nothing."""

    def __init__(self) -> None:
        self.status = 0         # running status (0: none)
        self.data: list[int] = []
        self.skip = 0           # data bytes of a system common message still to drop
        self.sysex = False
        self.dropped = 0

    def feed(self, chunk: Iterable) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        for b in chunk:
            if not isinstance(b, int) or not 0 <= b <= 0xFF:
                self.dropped += 1
                continue
            if b >= 0xF8:                       # real-time: leaves everything as it was
                continue
            if b >= 0x80:
                self.data = []
                self.skip = 0
                if b == 0xF0:
                    self.sysex, self.status = True, 0
                elif b == 0xF7:
                    self.sysex = False
                elif b >= 0xF0:
                    self.sysex, self.status = False, 0
                    self.skip = _COMMON_LEN.get(b, 0)
                else:
                    self.sysex, self.status = False, b
                continue
            if self.sysex:
                continue
            if self.skip:
                self.skip -= 1
                continue
            if not self.status:
                self.dropped += 1
                continue
            self.data.append(b)
            if len(self.data) == _CHANNEL_LEN[self.status & 0xF0]:
                out.append((self.status, *self.data))
                self.data = []
        return out


class MappingTable:
    """`midi.map` as a lookup: (kind, wire number) -> mappings, checked for channel/value."""

    def __init__(self, mappings: Iterable[MidiMapping]):
        self.table: dict[tuple[str, int], list[MidiMapping]] = {}
        for m in mappings:
            wire = m.number - 1 if m.kind == "program" else m.number
            self.table.setdefault((m.kind, wire), []).append(m)

    def actions(self, msg: tuple[int, ...]) -> list[Action]:
        kind_bits, channel = msg[0] & 0xF0, (msg[0] & 0x0F) + 1
        value = None
        if kind_bits == 0x90 and len(msg) == 3 and msg[2] > 0:
            key = ("note", msg[1])
        elif kind_bits == 0xB0 and len(msg) == 3:
            key, value = ("cc", msg[1]), msg[2]
        elif kind_bits == 0xC0 and len(msg) == 2:
            key = ("program", msg[1])
        else:
            return []                           # note-off, velocity 0, pitch bend, ...
        out = []
        for m in self.table.get(key, ()):
            if m.channel is not None and m.channel != channel:
                continue
            if m.trim is not None and value is not None:
                out.append(Action("trim", f"{m.trim} {cc_to_db(value):g}"))
                continue
            if key[0] == "cc" and not (value == m.value if m.value is not None else value >= 64):
                continue
            out.append(m.action)
        return out


def find_port(names: list[str], pattern: str, own: tuple[str, ...] = (CLIENT_IN, CLIENT_OUT)
              ) -> tuple[int, str] | None:
    """First port whose name contains `pattern` (case-insensitive), never one of ours."""
    want = pattern.casefold()
    for i, name in enumerate(names):
        if name.startswith(own):
            continue
        if want in name.casefold():
            return i, name
    return None


def rtmidi_api(name: str) -> int:
    import rtmidi
    return rtmidi.API_UNIX_JACK if name == "jack" else rtmidi.API_LINUX_ALSA


class _Port:
    """One rtmidi client with at most one connection, re-found by name as gear comes and
    goes. Every rtmidi call is guarded: a vanished sequencer or JACK server is logged and
    retried on the next poll, never raised."""

    def __init__(self, kind: str, api: str, pattern: str, client: str,
                 setup: Callable | None = None):
        self.kind, self.api, self.pattern, self.client = kind, api, pattern, client
        self.setup = setup
        self.midi = None
        self.port_name: str | None = None
        self._complained = False
        self.connects = 0
        self.retry_at = 0.0
        self.backoff = PORT_POLL_S

    def poll(self) -> bool:
        """Connect, reconnect or drop; True when a new connection was made."""
        if self.midi is None and time.monotonic() < self.retry_at:
            return False
        try:
            if self.midi is None:
                self.midi = self._create()
            names = self.midi.get_ports()
        except Exception as exc:  # noqa: BLE001 - no sequencer/JACK yet: try again later
            if not self._complained:
                log.warning("MIDI %s: %s api not available (%s); retrying", self.kind,
                            self.api, exc)
                self._complained = True
            self._drop_client()
            # libjack prints to stderr on every failed attempt: back off, not spam the journal
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, RETRY_MAX_S)
            return False
        self.backoff = PORT_POLL_S
        found = find_port(names, self.pattern)
        if self.port_name is not None and (found is None or found[1] != self.port_name):
            # A fresh client, not close_port/open_port: python-rtmidi's close_port also
            # cancels the callback, and a new client is the same code path on every API.
            log.warning("MIDI %s: port '%s' is gone", self.kind, self.port_name)
            self._drop_client()
            return self.poll()  # once: port_name is None now
        if found is None or self.port_name is not None:
            return False
        try:
            self.midi.open_port(found[0], self.kind)
        except Exception as exc:  # noqa: BLE001 - it vanished between list and open
            log.warning("MIDI %s: cannot open '%s': %s", self.kind, found[1], exc)
            self._drop_client()
            return False
        self.port_name = found[1]
        self.connects += 1
        self._complained = False
        log.info("MIDI %s: connected to '%s'", self.kind, found[1])
        return True

    def _create(self):
        import rtmidi
        cls = rtmidi.MidiIn if self.kind == "in" else rtmidi.MidiOut
        midi = cls(rtmidi_api(self.api), name=self.client)
        midi.set_error_callback(self._on_error)
        if self.setup is not None:
            self.setup(midi)
        return midi

    def _on_error(self, etype, text, _data=None) -> None:
        log.warning("MIDI %s: rtmidi: %s", self.kind, text)

    def _quiesce(self) -> None:
        """Stop callbacks before closing. rtmidi calls back from its own thread (JACK's
        process thread with api: jack) and that call needs the GIL, while closing joins that
        thread with the GIL held: a callback in flight would deadlock both. So: cancel the
        callback, then sleep (releasing the GIL) so one already under way can finish."""
        if self.kind == "in" and self.midi is not None:
            try:
                self.midi.cancel_callback()
            except Exception:  # noqa: BLE001
                log.debug("cancel_callback failed", exc_info=True)
            time.sleep(0.05)

    def _close_port(self) -> None:
        self.port_name = None
        try:
            if self.midi is not None:
                self._quiesce()
                self.midi.close_port()
        except Exception:  # noqa: BLE001
            log.debug("close_port failed", exc_info=True)

    def _drop_client(self) -> None:
        self._close_port()
        midi, self.midi = self.midi, None
        try:
            if midi is not None:
                midi.delete()
        except Exception:  # noqa: BLE001
            log.debug("delete failed", exc_info=True)

    def close(self) -> None:
        self._drop_client()


class MidiInput(Worker):
    """Foot controller -> `daemon.act`. Runs the mapping in its own thread."""

    def __init__(self, mc: MidiConfig, act: Callable[[Action, str], object],
                 rt_priority: int = 0):
        super().__init__("backtrack-midi-in", rt_priority)
        self.act = act
        self.table = MappingTable(mc.mappings)
        self.parser = MidiParser()
        self.queue: deque = deque(maxlen=1024)
        self.wake = threading.Event()
        self.handled = 0
        self.port = _Port("in", mc.api, mc.in_port or "", CLIENT_IN, self._setup)

    def _setup(self, midi) -> None:
        midi.ignore_types(sysex=True, timing=True, active_sense=True)
        midi.set_callback(self._on_message)

    def _on_message(self, event, _data=None) -> None:
        # maybe in JACK's real-time thread: queue and go
        self.queue.append(event[0])
        self.wake.set()

    def loop(self) -> None:
        next_poll = 0.0
        while self.running:
            now = time.monotonic()
            if now >= next_poll:
                self.port.poll()
                next_poll = now + PORT_POLL_S
            self.wake.wait(max(0.0, next_poll - time.monotonic()))
            self.wake.clear()
            while self.queue:
                self.handle(self.queue.popleft())

    def finish(self) -> None:
        self.port.close()

    def wakeup(self) -> None:
        self.wake.set()

    def handle(self, chunk) -> None:
        """One rtmidi message (or any bytes) -> actions. Never raises."""
        try:
            for msg in self.parser.feed(chunk):
                for action in self.table.actions(msg):
                    self.handled += 1
                    self.act(action, "midi")
        except Exception:  # noqa: BLE001 - bad input or a failing action never kills MIDI in
            log.exception("MIDI in: message %r", chunk)

    def close(self) -> None:
        self.halt(timeout=3)


class MidiOutput(Worker):
    """Per-song messages at song start, MIDI clock and MTC locked to the audio position."""

    def __init__(self, mc: MidiConfig, daemon, trace: list | None = None):
        super().__init__("backtrack-midi-out", max(
            0, daemon.engine.cfg.engine.realtime_priority - RT_BELOW_WRITER))
        self.daemon_ = daemon
        self.engine = daemon.engine
        self.mc = mc
        self.wake = threading.Event()
        self.pending: deque = deque()     # message tuples queued by song_started
        self.armed_until = 0.0
        self.trace = trace                # benches: (kind, song, frame, ns after send)
        self.sent = 0
        self.failing = False
        dev = self.engine.cfg.device
        # the position estimate moves by up to about a period between looks (more with big
        # periods): a smaller move must not count as a jump
        jump_s = max(JUMP_MIN_S, 2 * dev.period / dev.rate)
        self.sched = SyncScheduler(dev.rate, self._tempo, clock=mc.clock, mtc=mc.mtc,
                                   fps=mc.mtc_fps, early_ns=-int(mc.offset_ms * 1e6),
                                   jump_s=jump_s) if (mc.clock or mc.mtc) else None
        self.port = _Port("out", mc.api, mc.out_port or "", CLIENT_OUT)

    def _tempo(self, song: int) -> TempoMap | float | None:
        """The song's tempo map: the clock follows its changes, meters and ramps."""
        songs = self.engine.cfg.songs
        if not 0 <= song < len(songs):
            return None
        st = songs[song].structure
        return st.tempo if st is not None and st.tempo is not None else songs[song].tempo

    def _silent(self) -> bool:
        return getattr(self.daemon_, "role", "leader") in SILENT_ROLES

    def on_engine(self, event: str, engine) -> None:
        """Engine listener (under the engine lock: only queue and wake). Any event may
        start, stop or move the audio soon: look closely for a while."""
        if event == "song_started":
            song = engine.started_song
            if 0 <= song < len(engine.cfg.songs) and not self._silent():
                for m in engine.cfg.songs[song].midi_out:
                    self.pending.append((tuple(m.to_bytes()), song))
        self.armed_until = time.monotonic() + ARMED_S
        self.wake.set()

    def loop(self) -> None:
        next_poll = 0.0
        while self.running:
            try:
                timeout = self._step(next_poll)
                now = time.monotonic()
                if now >= next_poll:
                    if self.port.poll() and self.sched is not None:
                        self.sched.reset()   # new receiver: tell it where we are
                    next_poll = now + PORT_POLL_S
            except Exception:  # noqa: BLE001 - MIDI out must never take the daemon down
                log.exception("MIDI out")
                timeout = IDLE_WAKE_S
            if timeout > 0:
                self.wake.wait(timeout)
                self.wake.clear()

    def finish(self) -> None:
        self.port.close()

    def wakeup(self) -> None:
        self.wake.set()

    def _step(self, next_poll: float) -> float:
        while self.pending:
            data, song = self.pending.popleft()
            self._send(data, "song", song, 0)
        now = time.monotonic()
        limit = min(next_poll - now, IDLE_WAKE_S)
        if self.sched is None:
            return max(0.0, min(next_poll - now, 0.5))
        song, frame, playing, now_ns = self.engine.position()
        if self._silent():
            playing = False
        msgs, due_ns = self.sched.step(song, frame, playing, now_ns)
        for m in msgs:
            self._send(m.data, m.kind, m.song, m.frame)
        if now < self.armed_until:
            limit = min(limit, ARMED_WAKE_S)
        elif playing:
            limit = min(limit, PLAY_WAKE_S)
        if due_ns is not None:
            limit = min(limit, (due_ns - time.monotonic_ns()) / 1e9)
        return max(0.0, limit)

    def _send(self, data: tuple[int, ...], kind: str, song: int, frame: float) -> None:
        midi = self.port.midi
        if midi is None or self.port.port_name is None:
            return
        try:
            midi.send_message(data)
        except Exception as exc:  # noqa: BLE001 - unplugged mid-send: the poll reconnects
            if not self.failing:    # once, not 100 times a second
                log.warning("MIDI out: send failed: %s", exc)
            self.failing = True
            return
        self.failing = False
        self.sent += 1
        if self.trace is not None:
            self.trace.append((kind, song, frame, time.monotonic_ns()))

    def close(self) -> None:
        self.halt(timeout=3)


class MidiControls:
    """What `start` returns: MIDI in and out as one component with `close()`."""

    def __init__(self, inp: MidiInput | None, out: MidiOutput | None, engine):
        self.input, self.output, self.engine = inp, out, engine

    def status(self) -> dict:
        """For `backtrack ctl status`: which ports are connected (None: waiting for one)."""
        return {
            "midi_in": self.input.port.port_name if self.input else None,
            "midi_out": self.output.port.port_name if self.output else None,
            "midi_in_actions": self.input.handled if self.input else 0,
            "midi_out_sent": self.output.sent if self.output else 0,
        }

    def close(self) -> None:
        if self.output is not None:
            try:
                self.engine.listeners.remove(self.output.on_engine)
            except ValueError:
                pass
            self.output.close()
        if self.input is not None:
            self.input.close()


def start(cfg: Config, daemon, trace: list | None = None) -> MidiControls | None:
    """Called by the daemon when `midi` is configured. Ports need not exist yet."""
    mc = cfg.midi
    if mc is None:
        return None
    inp = out = None
    if mc.in_port:
        prio = max(0, cfg.engine.realtime_priority - RT_BELOW_WRITER)
        inp = MidiInput(mc, daemon.act, prio)
        inp.start()
    if mc.out_port:
        out = MidiOutput(mc, daemon, trace)
        daemon.engine.listeners.append(out.on_engine)
        out.start()
    return MidiControls(inp, out, daemon.engine)


__all__ = ["MidiControls", "MidiInput", "MidiOutput", "MidiParser", "MappingTable", "Timed",
           "find_port", "start"]

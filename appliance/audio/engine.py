"""The playback engine: decode thread -> slots (rings) -> writer thread -> ALSA.

Three threads and one rule: only the writer touches the device, and nothing the writer
waits on is ever held by another thread.

- The decode thread keeps every slot's ring topped up (the playing song first) and
  retargets slots to the songs the transport may need next: the song after this one (for
  `next` and gapless `after: next`), this song from the top (for `stop`) and the one before.
- The control side (`command`, called from the socket, footswitch or MIDI threads) runs the
  pure Transport, then tells the writer which prepared slot to play: the switch happens at
  the writer's next period edge.
- The monitor thread turns the writer's events (song ended, underrun, device lost) into
  transport updates and log lines, outside the real-time path.

Position = frames handed to ALSA minus the device delay, mapped back to (song, frame)
through the writer's segment history.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..actions import Action
from ..config import Config
from ..realtime import set_thread_fifo
from ..threads import Worker
from ..transport import CUED, PAUSED, PLAYING, STOPPED, State, Transport
from .formats import FORMAT_INFO, Converter
from .sink import AlsaSink
from .source import SongReader
from .writer import Slot, Writer

log = logging.getLogger("backtrack.engine")

NSLOTS = 5
DECODE_BLOCK = 16384  # frames per decode step: fewer, larger NumPy calls (less Python per second)
READY_S = 0.25        # a slot counts as ready with this much decoded (or the whole song)
PREPARE_TIMEOUT_S = 5.0
MONITOR_BACKSTOP_S = 0.5  # the monitor wakes on the writer's news; this is only a backstop
DECODER_MAX_SLEEP_S = 0.25  # far less than a ring (>= 4 decode steps, 1.4 s at 48 kHz)


@dataclass
class Status:
    state: str
    song: int
    title: str
    frame: int
    seconds: float
    duration: float
    underruns: int
    starved: int
    device: str
    realtime: str
    problems: list[str]


class Decoder(Worker):
    """Fills slots. Runs NumPy and libsndfile calls (both release the GIL) so it never
    holds the writer back for long."""

    def __init__(self, cfg: Config, slots: list[Slot], writer: Writer):
        super().__init__("backtrack-decode", max(0, cfg.engine.realtime_priority - 10))
        self.cfg = cfg
        self.slots = slots
        self.writer = writer
        self.readers: dict[int, SongReader] = {}
        self.wake = threading.Event()
        # The mix is converted to the device format here, in big blocks, so the writer can
        # hand most periods to ALSA straight from the ring (the device never changes on a
        # reload, so neither does the converter).
        dev = cfg.device
        self._mix = np.zeros((DECODE_BLOCK, dev.channels), np.float32)
        self._conv = Converter(dev.format, dev.channels, DECODE_BLOCK, count_clips=False)

    def step(self) -> None:
        try:
            busy = self._step()
        except Exception as exc:  # noqa: BLE001 - the decoder must never die mid-show
            log.exception("decoder error: %s", exc)
            busy = False
        if not busy:
            # Sleep until the playing ring has room for a whole decode step (or a
            # command wakes us): every idle wake-up is Python work competing with the
            # writer, and the ring holds seconds.
            self.wake.wait(self._idle_sleep())
            self.wake.clear()

    def wakeup(self) -> None:
        self.wake.set()

    def finish(self) -> None:
        for r in self.readers.values():
            r.close()

    def _idle_sleep(self) -> float:
        active = self.writer.active_index
        if active < 0:
            return DECODER_MAX_SLEEP_S
        ring = self.slots[active].ring
        short = min(DECODE_BLOCK, ring.capacity // 4) - ring.writable()
        return min(DECODER_MAX_SLEEP_S, max(0.005, short / self.cfg.device.rate))

    def _step(self) -> bool:
        active = self.writer.active_index
        order = sorted(self.slots, key=lambda s: s.index != active)
        for slot in order:
            if slot.want != slot.have:
                self._retarget(slot)
                return True
        did = False
        for slot in order:
            reader = self.readers.get(slot.index)
            if reader is None or slot.eof:
                continue
            ring = slot.ring
            if ring.writable() < min(DECODE_BLOCK, ring.capacity // 4):
                continue
            region = ring.write_region()
            n = reader.read_into(self._mix[:min(len(region), DECODE_BLOCK)])
            if n:
                self._conv.convert(self._mix[:n], out=region[:n])
                ring.commit(n)
            if reader.position >= reader.frames:
                slot.eof = True
            did = True
        return did

    def _retarget(self, slot: Slot) -> None:
        want = slot.want
        old = self.readers.pop(slot.index, None)
        if old is not None:
            old.close()
        slot.have = None
        slot.ring.reset()
        slot.eof = False
        slot.follow = -1
        if want is None:
            slot.song = -1
            return
        song, frame, _gen = want
        cfg = self.cfg  # one config for the whole retarget: a reload may swap it meanwhile
        if song >= len(cfg.songs):
            # a target from before a reload: an empty song; the engine retargets the slot
            slot.song, slot.frames, slot.eof, slot.have = -1, 0, True, want
            return
        reader = SongReader(cfg.songs[song], cfg.device, cfg.cache_dir, DECODE_BLOCK)
        reader.seek(frame)
        slot.song = song
        slot.start = reader.position
        slot.frames = reader.frames
        slot.after = cfg.songs[song].after
        slot.problems = reader.problems
        slot.eof = reader.position >= reader.frames
        self.readers[slot.index] = reader
        for p in reader.problems:
            log.warning("song %d: %s (plays as silence)", song + 1, p)
        slot.have = want


class Engine:
    def __init__(self, cfg: Config, sink: AlsaSink | None = None):
        self.cfg = cfg
        dev = cfg.device
        ring_frames = max(int(cfg.engine.readahead * dev.rate), 4 * DECODE_BLOCK)
        frame_bytes = dev.channels * FORMAT_INFO[dev.format][0]
        self.slots = [Slot(i, ring_frames, frame_bytes) for i in range(NSLOTS)]
        fade = int(cfg.engine.fade_ms * dev.rate / 1000)
        self.writer = Writer(dev, self.slots, fade, cfg.engine.realtime_priority, sink,
                             cfg.engine.writer_cpu)
        self.decoder = Decoder(cfg, self.slots, self.writer)
        self.transport = Transport(len(cfg.songs), [s.after for s in cfg.songs])
        self.lock = threading.RLock()
        self._gen = 0
        self._consumed: set[int] = set()   # slots the writer has played from (not at frame 0)
        self._pending: dict[int, tuple[int, ...]] = {}  # command seq -> slots it names
        self._playing = -1  # the slot the writer plays or is about to (control side's view)
        self.monitor = threading.Thread(target=self._monitor, name="backtrack-monitor",
                                        daemon=True)
        self.running = False
        self.last_underruns = 0
        self.memory_locked = "not requested"
        self.listeners: list = []  # callables(event: str, engine) for LED/MIDI/peer
        self.started_song = -1  # the song of the last "song_started" event
        self.next_cfg: Config | None = None  # a reloaded config waiting for the song to end
        self._next_cue: int | None = None  # the song it cues (a setlist chosen), else by title
        # (frame, t_ns, ns per frame, clock epoch) of the DAC line, when a PlayHead feeds one
        self.dac_line: tuple[int, int, float, int] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.memory_locked = lock_memory()
        # A shorter switch interval lets the writer get the GIL back promptly after write().
        sys.setswitchinterval(0.0005)
        self.running = True
        self.decoder.start()
        with self.lock:
            self._prepare()
        self.writer.start()
        self.monitor.start()

    def stop(self) -> None:
        """Fade out, close the device, end the threads."""
        self.running = False
        self.writer.halt(timeout=3)
        self.decoder.halt(timeout=3)

    # ---- commands --------------------------------------------------------------------------
    def command(self, action: Action) -> tuple[bool, str]:
        """Apply a transport command; returns (ok, message). Never raises for bad input."""
        with self.lock:
            effect = self.transport.apply(action)
            if effect.kind == "none":
                return (not effect.message or effect.message == "already playing",
                        effect.message)
            ok, msg = self._do(effect.kind, effect.song)
            self._prepare()
            self._apply_reload()
            self._notify("command")
            return ok, msg or effect.message

    def _do(self, kind: str, song: int | None) -> tuple[bool, str]:
        w = self.writer
        if kind == "start":
            slot = self._ready_slot(song, 0)
            if slot is None:
                return False, f"song {song + 1} could not be prepared in time"
            self._post("start", slot.index, False)
            self._consumed.add(slot.index)
            self._playing = slot.index
            self._song_started(song)
        elif kind == "resume":
            if w.active is None:
                # paused at the top of the next song (after: pause): start it
                return self._do("start", song)
            self._post("resume")
        elif kind == "pause":
            self._post("pause")
        elif kind == "halt":
            self._post("halt")
            self._playing = -1
        elif kind == "cue":
            pass  # _prepare readies it
        return True, ""

    def _post(self, *cmd) -> None:
        seq = self.writer.post(*cmd)
        slots = tuple(c for c in cmd[1:2] if isinstance(c, int))
        self._pending[seq] = slots

    # ---- slot management (control side, under self.lock) -------------------------------------
    def _busy(self) -> set[int]:
        """Slots the writer may be reading or is about to: never retarget those."""
        acked = self.writer.acked          # read before active (see writer ordering)
        for seq in [s for s in self._pending if s <= acked]:
            del self._pending[seq]
        busy = {i for slots in self._pending.values() for i in slots}
        for active in (self.writer.active_index, self._playing):
            if active >= 0:
                busy.add(active)
                follow = self.slots[active].follow
                if follow >= 0:
                    busy.add(follow)
        return busy

    def _targets(self) -> list[tuple[int, int]]:
        cur = self.transport.current
        n = len(self.cfg.songs)
        if cur.state == STOPPED:
            return [(0, 0), (n - 1, 0)]
        wanted = [(cur.song, 0), (cur.song + 1, 0), (cur.song - 1, 0)]
        if cur.state == PLAYING:
            wanted = [(cur.song + 1, 0), (cur.song, 0), (cur.song - 1, 0)]
        return [(s, f) for s, f in wanted if 0 <= s < n]

    def _prepare(self, extra: tuple[int, int] | None = None) -> Slot | None:
        """Point free slots at the songs the next command may need; returns the slot for
        `extra` when asked."""
        busy = self._busy()
        if self.writer.active_index >= 0:
            self._consumed.add(self.writer.active_index)
        targets = self._targets()
        if extra is not None and extra not in targets:
            targets.insert(0, extra)
        have: dict[tuple[int, int], Slot] = {}
        for s in self.slots:
            if s.index in self._consumed or s.want is None:
                continue
            key = (s.want[0], s.want[1])
            if key in targets and key not in have:
                have[key] = s
        keep = {s.index for s in have.values()} | busy
        free = [s for s in self.slots if s.index not in keep]
        for t in targets:
            if t in have or not free:
                continue
            s = free.pop(0)
            self._gen += 1
            s.want = (t[0], t[1], self._gen)
            self._consumed.discard(s.index)
            have[t] = s
        self._link_follow(have)
        self.decoder.wake.set()
        return have.get(extra) if extra is not None else None

    def _link_follow(self, have: dict[tuple[int, int], Slot]) -> None:
        """Tell the playing slot which slot continues it gaplessly (after: next)."""
        active = self._playing
        if active < 0:
            return
        slot = self.slots[active]
        nxt = have.get((slot.song + 1, 0))
        if nxt is not None and nxt.index != active:
            slot.follow = nxt.index

    def _ready_slot(self, song: int, frame: int) -> Slot | None:
        slot = self._prepare((song, frame))
        if slot is None:
            return None
        need = min(int(READY_S * self.cfg.device.rate), slot.ring.capacity // 2)
        deadline = time.monotonic() + PREPARE_TIMEOUT_S
        while not slot.ready(need):
            if time.monotonic() > deadline:
                return None
            self.decoder.wake.set()
            time.sleep(0.001)
        return slot

    # ---- reload (SIGHUP) -------------------------------------------------------------------
    def reload(self, cfg: Config, cue: int | None = None) -> bool:
        """Take a new setlist between songs: at once when no song is under the writer, else
        when it ends or is stopped (a song never changes under the band's feet). Returns
        True when applied now, False when waiting. The device, ring sizes and fade length
        are fixed at start: the caller passes a config that keeps the running ones. `cue`:
        the song (0-based) to cue, else the cued song's title is followed into the new set."""
        with self.lock:
            self.next_cfg = cfg
            self._next_cue = cue
            self._apply_reload()
            return self.next_cfg is None

    def _apply_reload(self) -> None:
        """Under self.lock. Slots the writer may still read (a fade-out in progress) keep
        their old song until free; every other slot is emptied and refilled from the new
        config. The cued song follows its title when the set was reordered."""
        cfg = self.next_cfg
        if cfg is None:
            return
        cur = self.transport.current
        if cur.state == PLAYING or (cur.state == PAUSED and self.writer.active is not None):
            return
        self.next_cfg = None
        song = cur.song
        titles = [s.title for s in cfg.songs]
        if self._next_cue is not None:
            song = self._next_cue
        elif 0 <= song < len(self.cfg.songs) and self.cfg.songs[song].title in titles:
            song = titles.index(self.cfg.songs[song].title)
        song = min(max(song, 0), len(cfg.songs) - 1)
        self.cfg = cfg
        self.decoder.cfg = cfg
        t = self.transport  # updated in place: controls may hold a reference to it
        t.nsongs, t.afters = len(cfg.songs), [s.after for s in cfg.songs]
        t.current = State(cur.state, song)
        busy = self._busy()
        for s in self.slots:
            if s.index in busy:
                self._consumed.add(s.index)  # never matched as a new-config target
            else:
                s.want = None
        self._prepare()
        log.info("reloaded config in use: %d songs, song %d cued", len(cfg.songs), song + 1)
        self._notify("reload")

    # ---- monitor ---------------------------------------------------------------------------
    def _monitor(self) -> None:
        set_thread_fifo(max(0, self.cfg.engine.realtime_priority - 20))
        while self.running:
            # The writer wakes this thread when it has news; the timeout is only a backstop.
            self.writer.wait_news(MONITOR_BACKSTOP_S)
            try:
                self._drain_events()
            except Exception:  # noqa: BLE001
                log.exception("monitor error")

    def _drain_events(self) -> None:
        w = self.writer
        changed = False
        while w.events:
            ev = w.events.popleft()
            kind = ev[0]
            with self.lock:
                if kind == "ended":
                    song, nxt = ev[1], ev[2]
                    if nxt >= 0:
                        self._consumed.add(nxt)
                        self._playing = nxt
                        self._song_started(self.slots[nxt].song)
                    elif self._playing >= 0 and self.slots[self._playing].song == song:
                        self._playing = -1
                    cur = self.transport.current
                    if cur.state == PLAYING and cur.song == song:
                        effect = self.transport.song_ended(song)
                        if self.cfg.songs[song].after == "next" and nxt < 0 \
                                and self.transport.current.state == PLAYING:
                            # the follow slot was not ready: start the next song now
                            self._do("start", self.transport.current.song)
                        log.info("song %d ended; %s", song + 1, effect.kind)
                    self._prepare()
                    self._apply_reload()
                    changed = True
                elif kind == "device_lost":
                    log.error("%s; the song clock keeps running, reopening every %.1f s",
                              ev[1], 0.5)
                    changed = True
                elif kind == "device_back":
                    log.warning("device %s is back", self.cfg.device.name)
                    changed = True
        under = w.sink.underruns
        if under != self.last_underruns:
            log.warning("underrun (xrun) #%d", under)
            self.last_underruns = under
            changed = True
        if changed:
            self._notify("state")

    def _song_started(self, song: int) -> None:
        """A song begins from its first frame (play, next/prev/goto while playing, a gapless
        `after: next`): MIDI out sends the song's program changes now, a period or more before
        its first frame reaches the DAC. Resuming from pause is not a start."""
        self.started_song = song
        self._notify("song_started")

    def _notify(self, event: str) -> None:
        for fn in list(self.listeners):
            try:
                fn(event, self)
            except Exception:  # noqa: BLE001 - a broken LED must not stop the music
                log.exception("listener failed")

    # ---- status ----------------------------------------------------------------------------
    def position(self) -> tuple[int, int, bool, int]:
        """(song, song frame at the DAC now, playing, monotonic ns of that estimate).

        Which device frame is at the DAC: from the DAC line when one is fitted for the
        writer's current clock epoch (a unit of a hot-standby pair feeds it:
        appliance.audio.playhead), else from the frames queued at the writer's last
        period, moved on by the time since (at most a period)."""
        now = time.monotonic_ns()
        dev_frame, t_ns, queued = self.writer.dac_position()
        line = self.dac_line
        if line is not None and line[3] == self.writer.clock_epoch and self.writer.device_ok:
            f, t, ns_per_frame, _epoch = line
            # never past the last frame handed to ALSA (a writer that stalled)
            dev_frame = min(f + int((now - t) / ns_per_frame), dev_frame + queued)
            song, frame, playing = self.writer.song_at(dev_frame)
            return song, frame, playing, now
        rate = self.cfg.device.rate
        if self.writer.device_ok and t_ns:
            dev_frame += min((now - t_ns) * rate // 1_000_000_000, self.cfg.device.period)
        song, frame, playing = self.writer.song_at(dev_frame)
        return song, frame, playing, now

    def status(self) -> Status:
        with self.lock:
            cur = self.transport.current
        dac_song, frame, _playing, _t = self.position()
        song = cur.song
        if cur.state not in (PLAYING, PAUSED) or dac_song != song:
            frame = 0
        rate = self.cfg.device.rate
        problems = []
        for s in self.slots:
            if s.song == song and s.have is not None:
                problems = list(s.problems)
                break
        length = next((s.frames for s in self.slots if s.song == song and s.have), None)
        w = self.writer
        device = "ok" if w.device_ok else (w.device_error or "not open")
        return Status(
            state=cur.state, song=song, title=self.cfg.songs[song].title, frame=frame,
            seconds=frame / rate, duration=(length or 0) / rate,
            underruns=w.sink.underruns, starved=w.starved, device=device,
            realtime=f"{w.rt_status}; memory {self.memory_locked}", problems=problems)

    # ---- hot standby primitives (used by appliance.peer.node) --------------------------------
    def set_audible(self, audible: bool, fade: bool = True) -> None:
        """Unmute (fade of engine.fade_ms) on takeover; mute at once when stepping down."""
        self.writer.post("mute", not audible, fade)

    def set_pilot(self, on: bool) -> None:
        peer = self.cfg.peer
        if peer is None or peer.pilot_output is None:
            return
        self.writer.set_pilot(peer.pilot_output, peer.pilot_hz)
        self.writer.pilot_on = on

    def seek(self, song: int, frame: int) -> bool:
        """Play `song` from `frame` at the next period edge (a follower joining or
        re-locking). The transport shows the song playing."""
        with self.lock:
            slot = self._ready_slot(song, max(0, frame))
            if slot is None:
                return False
            self._post("start", slot.index, False)
            self._consumed.add(slot.index)
            self._playing = slot.index
            self.transport.current = State(PLAYING, song)
            self._prepare()
        self._notify("state")
        return True

    def mirror(self, state: str, song: int) -> None:
        """Take the leader's transport state as ours (a follower): halt, pause or resume
        the writer to match; playing is started by `seek`."""
        with self.lock:
            cur = self.transport.current
            if cur.state == state and cur.song == song:
                return
            if state in (CUED, STOPPED) and cur.state in (PLAYING, PAUSED):
                self._do("halt", cur.song)
            elif state == PAUSED and cur.state == PLAYING and cur.song == song:
                self._do("pause", song)
            elif state == PLAYING and cur.state == PAUSED and cur.song == song:
                self._do("resume", song)
            elif state == PAUSED and cur.song != song:
                self._do("halt", cur.song)
            self.transport.current = State(state, song)
            self._prepare()
        self._notify("state")

    def request_adjust(self, frames: int) -> bool:
        """Ask the writer to drop (>0) or insert (<0) frames; False while the previous
        request has not yet shown in the writer's segment history."""
        if self.writer.correction_pending:
            return False
        self.writer.adjust_request = int(frames)
        return True

    def healthy(self, max_stall_s: float = 2.0) -> bool:
        """The writer is advancing (it always is while running: it writes silence when idle)."""
        return (time.monotonic_ns() - self.writer.last_progress_ns) < max_stall_s * 1e9


def lock_memory() -> str:
    """mlockall so the audio path never waits for a page-in from the SD card. Only with
    MCL_FUTURE when the limit is unlimited: with a finite limit a later allocation would
    fail instead."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY:
            try:  # allowed with CAP_SYS_RESOURCE (root); the unit sets LimitMEMLOCK instead
                resource.setrlimit(resource.RLIMIT_MEMLOCK,
                                   (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                soft = resource.RLIM_INFINITY
            except (ValueError, OSError):
                pass
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mcl_current, mcl_future = 1, 2
        if soft != resource.RLIM_INFINITY:
            return f"not locked (LimitMEMLOCK is {soft} bytes; set infinity)"
        if libc.mlockall(mcl_current | mcl_future) != 0:
            return f"not locked (mlockall: errno {ctypes.get_errno()})"
        return "locked"
    except (OSError, AttributeError) as exc:
        return f"not locked ({exc})"

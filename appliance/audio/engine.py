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
from dataclasses import dataclass, replace

import numpy as np

from ..actions import STRUCTURE, Action
from ..config import Config
from ..livemix import LiveMix, MixError, Names
from ..realtime import set_thread_fifo
from ..songfile import Song
from ..structure import parse_when
from ..threads import Worker
from ..transport import CUED, PAUSED, PLAYING, STOPPED, State, Transport
from .crossfade import equal_power, fade_frames, linear
from .formats import FORMAT_INFO, Converter
from .mixer import db_to_gain
from .overlays import Overlays, cue_file, guide_start, overlays_for, spoken_cues_cached
from .sink import AlsaSink
from .source import SongReader
from .voiceguide import cached_spoken, load_cue
from .writer import Slot, Writer

log = logging.getLogger("backtrack.engine")

# The playing slot, the one a crossfade leaves, a jump or vamp target, and the targets the
# next command may need: next song, this song from the top, the song before, and the starts
# of this section, the next and the one before (jumps and vamps switch at once).
NSLOTS = 10
DECODE_BLOCK = 16384  # frames per decode step: fewer, larger NumPy calls (less Python per second)
FIRST_BLOCK = 2048    # a slot just retargeted is decoded in short steps first: ready sooner
PREFILL_S = 0.5       # a slot waiting to be played holds this much; the playing one a ring
URGENT_BLOCK = 1024   # a live mix switch's slot: its first frames as soon as possible
READY_S = 0.25        # a slot counts as ready with this much decoded (or the whole song)
PREPARE_TIMEOUT_S = 5.0
MONITOR_BACKSTOP_S = 0.5  # the monitor wakes on the writer's news; this is only a backstop
MIX_RAMP_MS = 5.0  # a live mix change is a linear ramp this long: no click, no dip
MIX_LEAD_MS = 8.0  # at least this far ahead of the writer's newest period: time to decode
MIX_SETTLE_S = 0.3  # waiting slots are decoded again with a new mix once it held this long
MIX_TRIES = 5  # a live mix switch late for its frame is posted again, this many times
DECODER_MAX_SLEEP_S = 0.25  # far less than a ring (>= 4 decode steps, 1.4 s at 48 kHz)


def _no_record(kind: str, **fields) -> None:
    """Where engine events go when no show log listens (appliance.showlog.ShowLog.record)."""


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
    section: str = ""
    bar_beat: str = ""
    next_section: str = ""
    tempo: float | None = None
    count_in: bool = False
    vamp: bool = False
    pending: dict | None = None
    mix: dict | None = None


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
        self._prefill = int(PREFILL_S * dev.rate)
        # what is generated from the song's frame (click, timecode, spoken cues), per slot
        self.overlays: dict[int, Overlays | None] = {}
        self._overlay_cache: dict[int, tuple[Song, Overlays | None, bool]] = {}
        # the live mix (appliance.livemix): the engine replaces it whole; each slot's reader
        # takes a new one before its next block, so every block is mixed with one value
        self.mix = LiveMix()
        self.urgent = -1  # a live mix switch's slot: decoded before anything else
        self._mixed: dict[int, tuple[int, np.ndarray | None]] = {}  # slot -> (version, chans)
        self.record = _no_record
        self.reported: set[tuple[str, str]] = set()  # (title, problem) already in the show log

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
        urgent = self.urgent
        order = sorted(self.slots, key=lambda s: (s.index != urgent, s.index != active))
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
            have = ring.readable()
            if slot.index != active and have >= self._prefill:
                continue  # waiting to be played: its start is enough until it plays
            chans = self._mix_of(slot, reader)
            if ring.writable() < min(DECODE_BLOCK, ring.capacity // 4):
                continue
            region = ring.write_region()
            frame0 = reader.position
            first = URGENT_BLOCK if slot.index == urgent else FIRST_BLOCK
            n = reader.read_into(self._mix[:min(len(region), DECODE_BLOCK,
                                                max(first, have))])
            if n:
                over = self.overlays.get(slot.index)
                if over is not None:
                    over.render(frame0, self._mix[:n])
                if chans is not None:
                    np.multiply(self._mix[:n], chans, out=self._mix[:n])
                self._conv.convert(self._mix[:n], out=region[:n])
                ring.commit(n)
            if reader.position >= reader.frames:
                slot.eof = True
            did = True
        return did

    def _mix_of(self, slot: Slot, reader: SongReader) -> np.ndarray | None:
        """The live mix for the slot's next block: its stems' gains (set on the reader when
        the mix changed) and its outputs' channel gains (None: none to apply)."""
        mix = self.mix
        done = self._mixed.get(slot.index)
        if done is not None and done[0] == mix.version:
            return done[1]
        reader.set_gains([mix.stem_gain(st.label, st.to) for st in reader.song.stems])
        chans = mix.channel_gains(self.cfg.outputs, self.cfg.device.channels)
        self._mixed[slot.index] = (mix.version, chans)
        return chans

    def _overlays_of(self, song: Song) -> Overlays | None:
        """One per song of the config in use (pure functions of the song frame: the slots of
        one song share it); built on first use, in this thread, from files the cache holds."""
        hit = self._overlay_cache.get(id(song))
        if hit is not None and hit[0] is song and not hit[2] and song.structure is not None \
                and song.structure.guide is not None and spoken_cues_cached(
                    song, self.cfg.device.rate, self.cfg.cache_dir):
            hit = None  # built while the cache warmer was still speaking its cues
        if hit is None or hit[0] is not song:
            try:
                made = overlays_for(song, self.cfg.device.rate, self.cfg.cache_dir, DECODE_BLOCK)
            except Exception:  # noqa: BLE001 - a bad click sample must not stop the song
                log.exception("song '%s': click, timecode or voice guide not generated",
                              song.title)
                made = None
            if len(self._overlay_cache) > 64:
                self._overlay_cache.clear()
            cued = song.structure is None or song.structure.guide is None or \
                spoken_cues_cached(song, self.cfg.device.rate, self.cfg.cache_dir)
            hit = self._overlay_cache[id(song)] = (song, made, cued)
        return hit[1]

    def _retarget(self, slot: Slot) -> None:
        want = slot.want
        old = self.readers.pop(slot.index, None)
        if old is not None:
            old.close()
        self.overlays.pop(slot.index, None)
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
        self._mixed.pop(slot.index, None)
        slot.mix_from = self.mix.version
        self.overlays[slot.index] = self._overlays_of(cfg.songs[song])
        slot.song = song
        slot.start = reader.position
        slot.frames = reader.frames
        slot.after = cfg.songs[song].after
        slot.problems = reader.problems
        slot.eof = reader.position >= reader.frames
        self.readers[slot.index] = reader
        for p in reader.problems:
            log.warning("song %d: %s (plays as silence)", song + 1, p)
            key = (cfg.songs[song].title, p)
            if key not in self.reported:
                self.reported.add(key)
                self.record("stem_failed", song=song + 1, title=key[0], problem=p)
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
        # the song's structure at work: the switch the writer holds (a jump, the next turn of
        # a vamp) as status shows it, and the vamp's loop (song, start, end frame)
        self.pending: dict | None = None
        self.vamp: tuple[int, int, int] | None = None
        self._switch_tags = 0
        self._last_tag: tuple | None = None
        self._missed_plan = -1
        # the same, as a pair's followers copy it (peer STATE): (kind: ""|jump|vamp|cancelled,
        # plan id, switch at song frame, play on from song frame)
        self.plan: tuple[str, int, int, int] = ("", 0, 0, 0)
        self._section_seen = (-1, -2)  # (song, section) the slots were last prepared for
        # the live mix: the value in use, when it last changed, the switch that brings it to
        # the playing slot (tag, tries) and whether it waits for a jump or vamp to be made
        self.mix = LiveMix()
        self._mix_changed = -MIX_SETTLE_S
        self._mix_switch_tag: tuple | None = None
        self._mix_tries = 0
        self._mix_due = False
        self._names: tuple[Config | None, Names | None] = (None, None)
        self._mix_ramp = linear(max(1, int(MIX_RAMP_MS * cfg.device.rate / 1000)))
        self.record = _no_record  # the show log's inbox (never blocks): `set_recorder`

    def set_recorder(self, record) -> None:
        """Send the engine's events (songs, underruns, device, stems that failed) to the show
        log. `record(kind, **fields)` must never block: the monitor and decode threads call
        it (the writer never does: the monitor relays what the writer reports)."""
        self.record = record
        self.decoder.record = record

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
            if action.name in STRUCTURE:
                return self._structure_command(action)
            counted = action.name in ("play", "play_stop") \
                and self.transport.current.state == CUED
            before = self.transport.current
            effect = self.transport.apply(action)
            if effect.kind == "none":
                return (not effect.message or effect.message == "already playing",
                        effect.message)
            if effect.kind in ("start", "halt"):
                self._forget_structure()
                if before.state in (PLAYING, PAUSED):
                    self._song_ended(before.song, str(action))
            ok, msg = self._do(effect.kind, effect.song, counted)
            self._prepare()
            self._apply_reload()
            self._notify("command")
            return ok, msg or effect.message

    def _do(self, kind: str, song: int | None, counted: bool = False) -> tuple[bool, str]:
        """`counted`: a `play` from cued, which starts the song's count-in (if it has one)."""
        w = self.writer
        if kind == "start":
            slot = self._ready_slot(song, self._top(song) if counted else 0)
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

    def _post(self, *cmd, slots: tuple[int, ...] | None = None) -> None:
        seq = self.writer.post(*cmd)
        if slots is None:
            slots = tuple(c for c in cmd[1:2] if isinstance(c, int))
        self._pending[seq] = slots

    def _top(self, song: int) -> int:
        """Where `play` starts a song: its count-in, else its first frame."""
        st = self.cfg.songs[song].structure if 0 <= song < len(self.cfg.songs) else None
        return st.count_in_start() if st is not None else 0

    # ---- song structure: jumps and vamps (control side, under self.lock) ---------------------
    def _structure_command(self, action: Action) -> tuple[bool, str]:
        """jump / vamp / cancel. Refused with a reason, never disturbing what plays, when the
        song has no sections (or tempo map, for bars), nothing plays, or the name is wrong."""
        if action.name == "cancel":
            return self._cancel()
        cur = self.transport.current
        if cur.state != PLAYING:
            return False, f"{action.name}: no song is playing"
        song = cur.song
        st = self.cfg.songs[song].structure
        dac_song, dac, _playing, _t = self.position()
        if dac_song != song:
            return False, f"{action.name}: the song is only starting; press again"
        where = self._writer_frame(song)
        if action.name == "vamp":
            if self.vamp is not None:
                return self._release_vamp()
            return self._start_vamp(song, st, dac, where, action.arg)
        return self._jump(song, st, dac, where, str(action.arg or ""))

    def _writer_frame(self, song: int) -> int:
        """The first song frame a switch posted now can still change: the writer's newest
        period plus one more for the command to reach it."""
        _d, wsong, wframe, playing = self.writer.last_segment()
        period = self.cfg.device.period
        return wframe + 2 * period if wsong == song and playing else wframe

    def _jump(self, song: int, st, dac: int, where: int, text: str) -> tuple[bool, str]:
        title = self.cfg.songs[song].title
        if st is None or not st.sections:
            return False, f"song '{title}' has no sections to jump to (sections: in its song file)"
        words = text.split()
        when = None
        if len(words) > 1 and parse_when(words[-1]) is not None:
            when, words = parse_when(words[-1]), words[:-1]
        name = " ".join(words)
        if not name:
            return False, "jump needs a section: a name, next_section or prev_section"
        here = st.section_at(dac)
        if name == "next_section":
            idx = here + 1
            if idx >= len(st.sections):
                return False, f"no section after '{st.sections[here].name}' in '{title}'"
        elif name == "prev_section":
            idx = max(0, here - 1)
        else:
            idx = st.find(name)
            if idx is None:
                names = ", ".join(sec.name for sec in st.sections)
                return False, f"no section '{name}' in '{title}'; sections: {names}"
        when = when or st.jump_when
        at, why = self._quantized(st, dac, where, when, song)
        if at is None:
            return False, f"jump to '{st.sections[idx].name}' {when}: {why}"
        target = st.sections[idx]
        self.vamp = None
        # `now`: at the writer's next period edge (a song frame already behind it); a pair's
        # followers are told `at`, the frame it will be about then, and their lock takes up
        # the difference (they are not heard)
        ok = self._post_switch(song, target.frame, -(1 << 62) if when == "now" else at, st,
                               "jump")
        if not ok:
            return False, f"section '{target.name}' could not be prepared in time"
        self.plan = ("jump", (self.plan[1] + 1) & 0xFFFF, at, target.frame)
        if when != "now":
            self._say(st, target.name, max(guide_start(st, at, self.cfg.device.rate), where))
        self.pending = {"kind": "jump", "to": target.name, "when": when, "at": at,
                        "text": f"jump to {target.name} {self._bar_text(st, at, when)}"}
        self._notify("state")
        return True, self.pending["text"]

    def _quantized(self, st, dac: int, where: int, when: str, song: int
                   ) -> tuple[int | None, str]:
        """The song frame of the switch: the first `when` boundary after what is heard now;
        if the writer has already passed it (pressed a few ms before a bar line), the one
        after. `now` is the writer's next period."""
        frames = self._song_frames(song)
        if when == "now":
            return where, ""  # the writer is asked for its next period (see _jump)
        try:
            at = st.boundary(dac, when, frames)
            if at is not None and at < where:
                at = st.boundary(where - 1, when, frames)
        except ValueError as exc:
            return None, str(exc)
        if at is None:
            return None, "no such point before the song ends"
        return at, ""

    def _song_frames(self, song: int) -> int:
        """The song's length (1 << 62 while no slot has opened it yet: no end to check)."""
        length = self._length(song)
        return 1 << 62 if length is None else length

    def _length(self, song: int) -> int | None:
        """The song's length in frames, from a slot that opened its stems (None if none)."""
        return next((s.frames for s in self.slots if s.song == song and s.have), None)

    def _bar_text(self, st, at: int, when: str) -> str:
        if when == "now":
            return "now"
        pos = st.position_text(at)
        return f"at {pos}" if pos else f"at {at / self.cfg.device.rate:.2f} s"

    def _start_vamp(self, song: int, st, dac: int, where: int, bars) -> tuple[bool, str]:
        title = self.cfg.songs[song].title
        if bars:
            if st is None or st.tempo is None:
                return False, f"vamp {bars}: song '{title}' has no tempo (tempo: in its song file)"
            start = st.tempo.bar_start(dac)
            end = st.tempo.bars_after(dac, int(bars))
            what = f"{bars} bar{'s' if bars != 1 else ''}"
        else:
            if st is None or not st.sections:
                return False, (f"song '{title}' has no sections to vamp (sections: in its song "
                               "file; or vamp N for N bars)")
            i = st.section_at(dac)
            if i < 0:
                return False, f"vamp: before the first section of '{title}'"
            start, end = st.sections[i].frame, st.section_end(i, self._song_frames(song))
            what = f"'{st.sections[i].name}'"
        if end <= where:
            return False, "vamp: too close to the loop's end to turn it now; press again"
        if not self._post_switch(song, start, end, st, "vamp"):
            return False, "vamp: the loop's start could not be prepared in time"
        self.vamp = (song, start, end)
        self.plan = ("vamp", (self.plan[1] + 1) & 0xFFFF, end, start)
        self.pending = {"kind": "vamp", "to": what, "when": "loop", "at": end,
                        "text": f"vamp {what} until released"}
        self._notify("state")
        return True, self.pending["text"]

    def _release_vamp(self) -> tuple[bool, str]:
        self._take_back()
        self._notify("state")
        return True, "vamp released: the song plays on at the loop's end"

    def _cancel(self) -> tuple[bool, str]:
        if self.pending is None and self.vamp is None:
            return True, "nothing pending"
        what = self.pending["text"] if self.pending else "vamp"
        self._take_back()
        self._notify("state")
        return True, f"cancelled: {what}"

    def _take_back(self) -> None:
        """The pending jump or vamp is taken back: here, in the writer, and for followers."""
        self._forget_structure(cancelled=True)
        self._post("cancel_switch", None, slots=())

    def _forget_structure(self, cancelled: bool = False) -> None:
        if self.plan[0] in ("jump", "vamp"):
            self.plan = ("cancelled" if cancelled else "", self.plan[1], 0, 0)
        self.vamp = None
        self.pending = None

    def mirror_plan(self, song: int, kind: str, plan_id: int, at: int, to: int) -> None:
        """A follower: the leader holds this switch (peer STATE); post the same one, to be
        made at the same song frame. Never waits for the slot (the peer thread calls this
        many times a second): a target not ready at its frame is reported by the writer and
        the lock re-seeks. A plan the leader made (kind "") is not cancelled here: this
        unit's writer makes it at its own frame, maybe a moment after the leader."""
        with self.lock:
            cur = self.transport.current
            if cur.state != PLAYING or cur.song != song:
                return
            mine = self.plan
            if kind in ("jump", "vamp"):
                if mine == (kind, plan_id, at, to):
                    return
                st = self.cfg.songs[song].structure
                self.vamp = (song, to, at) if kind == "vamp" else None
                self._post_switch(song, to, at, st, kind, wait=False)
                self.plan = (kind, plan_id, at, to)
                self.pending = {"kind": kind, "when": "leader", "at": at,
                                "to": "", "text": f"{kind} (the leader's)"}
            elif kind == "cancelled" and mine[0] in ("jump", "vamp") and mine[1] == plan_id:
                self._take_back()
            else:
                return
        self._notify("state")

    def _say(self, st, name: str, at: int) -> None:
        """The voice guide names a jump's target a bar before it lands (or at once, when
        pressed later than that): a cue the writer mixes in from song frame `at`, read here
        from the cache or the user's file (never spoken here: `check` and the cache warmer
        make the cues)."""
        g = st.guide if st is not None else None
        if g is None or g.mode == "off" or not g.to:
            return
        rate = self.cfg.device.rate
        file = cue_file(g, name)
        samples, _why = load_cue(file, rate) if file is not None else \
            cached_spoken(name, rate, self.cfg.cache_dir)
        if samples is None:
            return
        samples = (samples * db_to_gain(g.level_db)).astype(np.float32)
        self._post("cue", samples, tuple(g.to), at, slots=())

    def _post_switch(self, song: int, target: int, at: int, st, kind: str,
                     wait: bool = True) -> bool:
        """Ask the writer to switch from the playing slot to `song` at `target` once the
        playing slot reaches song frame `at`, over the song's equal-power crossfade.
        `wait`: until the target slot has its start decoded (else the writer checks)."""
        slot = self._ready_slot(song, target) if wait else self._prepare((song, target))
        if slot is None or self._playing < 0:
            return False
        g_out, g_in = equal_power(fade_frames(st.crossfade_ms if st is not None else None,
                                              self.cfg.device.rate))
        self._switch_tags += 1
        tag = (kind, self._switch_tags)
        self._consumed.add(slot.index)
        self._post("switch", self._playing, at, slot.index, g_out, g_in, tag,
                   slots=(self._playing, slot.index))
        self._last_tag = tag
        return True

    def _switched(self, tag: tuple, new: int) -> None:
        """Monitor, under self.lock: the writer switched; a vamp goes round again, a jump or
        vamp that a live mix switch replaced is posted again, and a slot decoded with an
        older mix is brought up to date."""
        self._playing = new
        self._consumed.add(new)
        if tag[0] == "mix":
            if tag == self._mix_switch_tag:
                self._mix_switch_tag = None
                self.decoder.urgent = -1
            self._repost_structure()
        elif tag[0] == "vamp" and self.vamp is not None:
            song, start, end = self.vamp
            if not (self.slots[new].song == song and self._post_switch(
                    song, start, end, self.cfg.songs[song].structure, "vamp")):
                log.warning("vamp could not go round again; the song plays on")
                self.vamp = None
        if tag[0] == "jump" or (tag[0] == "vamp" and self.vamp is None):
            self.pending = None
            if self.plan[0] == "jump":
                self.plan = ("", self.plan[1], 0, 0)
        if tag[0] != "mix":
            self._mix_playing()

    # ---- the live mix: mute, solo, trim (control side) ---------------------------------------
    def mix_command(self, verb: str, target: str | None = None, db: float | None = None,
                    scope: str = "night") -> tuple[bool, str]:
        """mute / unmute / solo / unsolo / trim a stem or output, or reset the mix. A bad
        name or value is refused with what exists; the mix is then unchanged."""
        with self.lock:
            try:
                new = self.mix.changed(verb, target, self.mix_names(), db, scope)
            except MixError as exc:
                return False, str(exc)
            self._set_mix(new)
        self._notify("mix")
        if verb == "reset":
            return True, "live mix reset: every stem as its song file says"
        what = f"trimmed to {new.as_status()['trim_db'].get(target.casefold(), 0):+g} dB" \
            if verb == "trim" else {"mute": "muted", "unmute": "unmuted", "solo": "soloed",
                                    "unsolo": "no longer soloed"}[verb]
        return True, f"{target} {what}" + (" for this song" if scope == "song" else "")

    def mirror_mix(self, mix: LiveMix) -> None:
        """A follower takes its leader's mix (peer MIX), so a takeover never brings back a
        muted stem; also the state file's mix at start."""
        with self.lock:
            if mix.to_json() == self.mix.to_json():
                return
            self._set_mix(replace(mix, version=self.mix.version + 1))
        self._notify("mix")

    def mix_names(self) -> Names:
        cfg, names = self._names
        if cfg is not self.cfg or names is None:
            names = Names.of(self.cfg.songs, self.cfg.outputs)
            self._names = (self.cfg, names)
        return names

    def _set_mix(self, mix: LiveMix) -> None:
        self.mix = mix
        self.decoder.mix = mix
        self._mix_changed = time.monotonic()
        self._mix_tries = 0
        self._mix_playing()
        self._prepare()

    def _stale(self, slot: Slot) -> bool:
        """Its ring holds frames mixed with an older live mix (a slot still to be decoded
        will take the mix in use)."""
        return slot.mix_from != self.mix.version and slot.have is not None \
            and slot.have == slot.want

    def _mix_playing(self) -> None:
        """Bring the new mix to what plays within a period or two: a slot of the same song
        from a frame just ahead of the writer, decoded with the new mix, and a switch to it
        at that frame over a short linear ramp (the same audio on both sides but for the
        change, so no dip). The ring already decoded seconds ahead cannot be changed."""
        i = self._playing
        if i < 0 or not self._stale(self.slots[i]) or self.slots[i].song < 0:
            return
        song = self.slots[i].song
        period = self.cfg.device.period
        g_out, g_in = self._mix_ramp
        # the first frame a switch posted now can still change (the period after next: the
        # next one is rendered too soon to decode for; measured, every such try was late);
        # a try too late for its frame is made again two periods further on
        lead = max(0, int(MIX_LEAD_MS * self.cfg.device.rate / 1000) - 2 * period)
        at = self._writer_frame(song) + lead + 2 * self._mix_tries * period
        soon = self._structure_at()
        if soon is not None and soon < at + len(g_in) + 2 * period:
            self._mix_due = True  # the jump or vamp comes first; the mix follows on its slot
            return
        self._mix_due = False
        slot = self._prepare((song, at))
        if slot is None:
            log.warning("live mix: no slot free to decode the playing song again; the change "
                        "is heard when the decoded audio runs out")
            return
        self.decoder.urgent = slot.index
        if not self._decoded(slot, len(g_in) + period, 0.5, 0.0005):
            log.warning("live mix: the playing song could not be decoded again in time; "
                        "the change is heard when the decoded audio runs out")
            return
        self._switch_tags += 1
        tag = ("mix", self._switch_tags)
        self._consumed.add(slot.index)
        self._post("switch", i, at, slot.index, g_out, g_in, tag, slots=(i, slot.index))
        self._mix_switch_tag = tag

    def _mix_missed(self, tag: tuple) -> None:
        """Monitor, under self.lock: a live mix switch came too late for its frame (a busy
        host): try again further ahead, a few times."""
        if tag != self._mix_switch_tag:
            return
        self._mix_switch_tag = None
        self._mix_tries += 1
        if self._mix_tries >= MIX_TRIES:
            log.warning("live mix: %d tries came too late; the change is heard when the "
                        "decoded audio runs out", MIX_TRIES)
            return
        self._mix_playing()

    def _structure_at(self) -> int | None:
        """The song frame of the jump or vamp the writer holds, if any."""
        if self.plan[0] in ("jump", "vamp") and (self.pending is not None or self.vamp):
            return self.plan[2]
        return None

    def _repost_structure(self) -> None:
        """A live mix switch took the writer's one pending switch: post the jump or vamp
        again, from the new slot (its target decoded with the new mix)."""
        cur = self.transport.current
        if cur.state != PLAYING or self._structure_at() is None:
            if self._mix_due:
                self._mix_playing()
            return
        st = self.cfg.songs[cur.song].structure
        kind, _id, at, to = self.plan
        if not self._post_switch(cur.song, to, at, st, kind):
            log.warning("%s lost to a live mix change: its target was not ready", kind)
            self._forget_structure()

    def _settle_mix(self) -> None:
        """Monitor: once a mix has held for MIX_SETTLE_S, the waiting slots decoded with an
        older one are decoded again (not at every change: 20 changes a second would decode
        every waiting slot 20 times a second)."""
        if time.monotonic() - self._mix_changed < MIX_SETTLE_S:
            return
        if any(self._stale(s) for s in self.slots):
            with self.lock:
                self._prepare()

    # ---- slot management (control side, under self.lock) -------------------------------------
    def _busy(self) -> set[int]:
        """Slots the writer may be reading or is about to: never retarget those."""
        acked = self.writer.acked          # read before active (see writer ordering)
        for seq in [s for s in self._pending if s <= acked]:
            del self._pending[seq]
        busy = {i for slots in self._pending.values() for i in slots}
        for i in (self.writer.switch_to_index, self.writer.xfade_index):
            if i >= 0:
                busy.add(i)
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
            return [(0, self._top(0)), (n - 1, self._top(n - 1))]
        wanted = [(cur.song, self._top(cur.song)), (cur.song + 1, 0), (cur.song - 1, 0)]
        if cur.state == PLAYING:
            wanted = [(cur.song + 1, 0), (cur.song, self._top(cur.song)), (cur.song - 1, 0)]
            wanted += self._section_targets(cur.song)
        return [(s, f) for s, f in wanted if 0 <= s < n]

    def _section_targets(self, song: int) -> list[tuple[int, int]]:
        """The starts of this section (a vamp, a jump back to it), the next and the one
        before: prepared, so a jump or vamp there switches without waiting for the disk."""
        st = self.cfg.songs[song].structure
        if st is None or not st.sections:
            return []
        dac_song, frame, _playing, _t = self.position()
        i = st.section_at(frame) if dac_song == song else -1
        self._section_seen = (song, i)
        return [(song, st.sections[k].frame) for k in (i, i + 1, i - 1)
                if 0 <= k < len(st.sections)]

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
        settled = time.monotonic() - self._mix_changed >= MIX_SETTLE_S
        for s in self.slots:
            if s.index in self._consumed or s.want is None:
                continue
            key = (s.want[0], s.want[1])
            if key in targets and key not in have and not (
                    (settled or key == extra) and self._stale(s)):
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

    def cued_ready(self) -> bool:
        """The cued song is decoded from where `play` starts it (its count-in, or frame 0)."""
        song = self.transport.current.song
        top = self._top(song)
        need = int(READY_S * self.cfg.device.rate)
        return any(s.song == song and s.want is not None and s.want[1] == top
                   and s.ready(min(need, s.ring.capacity // 2)) for s in self.slots)

    def _ready_slot(self, song: int, frame: int) -> Slot | None:
        slot = self._prepare((song, frame))
        if slot is None:
            return None
        need = min(int(READY_S * self.cfg.device.rate), slot.ring.capacity // 2)
        return slot if self._decoded(slot, need, PREPARE_TIMEOUT_S, 0.001) else None

    def _decoded(self, slot: Slot, frames: int, timeout: float, poll: float) -> bool:
        """Wait (the decoder woken) until `slot` holds `frames` decoded frames; False after
        `timeout` seconds. The caller is the control path, never the writer."""
        deadline = time.monotonic() + timeout
        while not slot.ready(frames):
            if time.monotonic() > deadline:
                return False
            self.decoder.wake.set()
            time.sleep(poll)
        return True

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
                self._follow_sections()
                self._settle_mix()
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
                        self.record("song_end", song=song + 1, title=self._title(song),
                                    reason="end")
                        effect = self.transport.song_ended(song)
                        if self.cfg.songs[song].after == "next" and nxt < 0 \
                                and self.transport.current.state == PLAYING:
                            # the follow slot was not ready: start the next song now
                            self._do("start", self.transport.current.song)
                        log.info("song %d ended; %s", song + 1, effect.kind)
                    self._prepare()
                    self._apply_reload()
                    changed = True
                elif kind == "switched":
                    self._switched(ev[1], ev[2])
                    self._prepare()
                    changed = True
                elif kind == "switch_missed" and ev[1][0] == "mix":
                    self._mix_missed(ev[1])
                elif kind in ("switch_missed", "switch_cancelled", "switch_replaced"):
                    if kind == "switch_missed":
                        if self.plan[0] in ("jump", "vamp") and self.running \
                                and self.plan[1] != self._missed_plan:  # once per plan
                            self._missed_plan = self.plan[1]
                            log.warning("%s at its frame not done: %s", ev[1][0], ev[2])
                        if ev[1] == self._last_tag:
                            self._forget_structure()
                    changed = True
                elif kind == "device_lost":
                    log.error("%s; the song clock keeps running, reopening every %.1f s",
                              ev[1], 0.5)
                    self.record("device_lost", device=self.cfg.device.name, error=ev[1])
                    changed = True
                elif kind == "device_back":
                    log.warning("device %s is back", self.cfg.device.name)
                    self.record("device_back", device=self.cfg.device.name)
                    changed = True
        under = w.sink.underruns
        if under != self.last_underruns:
            log.warning("underrun (xrun) #%d", under)
            cur = self.transport.current
            self.record("underrun", count=under, new=under - self.last_underruns,
                        song=cur.song + 1, state=cur.state)
            self.last_underruns = under
            changed = True
        if changed:
            self._notify("state")

    def _follow_sections(self) -> None:
        """Keep the section slots (this one, the next, the one before) on the section that
        plays now: the monitor's backstop wakes it twice a second."""
        cur = self.transport.current
        if cur.state != PLAYING:
            return
        st = self.cfg.songs[cur.song].structure
        if st is None or not st.sections:
            return
        dac_song, frame, _p, _t = self.position()
        if dac_song == cur.song and (cur.song, st.section_at(frame)) != self._section_seen:
            with self.lock:
                self._prepare()

    def _song_started(self, song: int) -> None:
        """A song begins from its first frame (play, next/prev/goto while playing, a gapless
        `after: next`): MIDI out sends the song's program changes now, a period or more before
        its first frame reaches the DAC. Resuming from pause is not a start."""
        self.started_song = song
        self.record("song_start", song=song + 1, title=self._title(song))
        if self.mix.song_scoped:
            self._set_mix(self.mix.song_ended())  # "for this song" changes end here
        else:
            self._mix_playing()  # a gapless next song prepared before the last change
        self._notify("song_started")

    def _song_ended(self, song: int, why: str) -> None:
        """A command ended the song under way (stop, next, goto ...): for the show log, with
        where it was."""
        dac_song, frame, _p, _t = self.position()
        at = round(frame / self.cfg.device.rate, 3) if dac_song == song else None
        self.record("song_end", song=song + 1, title=self._title(song), reason=why, at_s=at)

    def _title(self, song: int) -> str:
        songs = self.cfg.songs
        return songs[song].title if 0 <= song < len(songs) else ""

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
        length = self._length(song)
        w = self.writer
        device = "ok" if w.device_ok else (w.device_error or "not open")
        st = self.cfg.songs[song].structure
        where: dict = {}
        if st is not None and cur.state in (PLAYING, PAUSED):
            i = st.section_at(frame)
            where = {"section": st.sections[i].name if i >= 0 else "",
                     "next_section": st.sections[i + 1].name if i + 1 < len(st.sections)
                     else "", "bar_beat": st.position_text(frame),
                     "tempo": round(st.tempo.bpm_at(frame), 2) if st.tempo else None,
                     "count_in": frame < 0}
        pending = dict(self.pending) if self.pending else None
        if pending:
            pending.pop("at", None)
        return Status(
            state=cur.state, song=song, title=self.cfg.songs[song].title, frame=frame,
            seconds=frame / rate, duration=(length or 0) / rate,
            underruns=w.sink.underruns, starved=w.starved, device=device,
            realtime=f"{w.rt_status}; memory {self.memory_locked}", problems=problems,
            vamp=self.vamp is not None, pending=pending, mix=self.mix.as_status(), **where)

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
            before = self.transport.current
            self._post("start", slot.index, False)
            self._consumed.add(slot.index)
            self._playing = slot.index
            self.transport.current = State(PLAYING, song)
            self._prepare()
        if before.state != PLAYING or before.song != song:
            if before.state in (PLAYING, PAUSED):
                self.record("song_end", song=before.song + 1, title=self._title(before.song),
                            reason="the leader's")
            self.record("song_start", song=song + 1, title=self._title(song), at_frame=frame,
                        how="the leader's")
        else:
            self.record("seek", song=song + 1, frame=frame)
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
                self._song_ended(cur.song, "the leader's")
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

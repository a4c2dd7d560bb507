"""A unit of a hot-standby pair (or N units): the network, the lock and the takeover.

One thread, woken by datagrams or every heartbeat:

- as leader: sends STATE (term, song, state, the song frame at the write head and the
  monotonic time that frame reaches the DAC) every `heartbeat_ms` and at once on a change;
  answers PINGs; applies COMMANDs forwarded by followers (once per physical press);
  announces its own failure (device lost, underrun storm, shutting down).
- as follower: estimates the clock offset to the leader (PING/PONG), plays the leader's
  song at the leader's frame (seek), then keeps the lock by dropping or inserting single
  frames (appliance.peer.lock.FollowerLock), muted (`unmute` mode) or playing without
  the pilot tone (`switcher` mode); takes over when `Roles` says so.

Pure logic lives in wire/clock/roles/dedupe/detector/protection; this file is the glue to
the socket and to the engine, which it sees only through appliance.audio.playhead.PlayHead
(where the DAC is, what plays, seek, correct, mute).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import select
import threading
import time
from collections.abc import Callable

from ..actions import Action, parse_action
from ..audio.playhead import PlayHead
from ..config import Config
from ..livemix import LiveMix, MixError
from ..threads import Worker
from ..transport import PAUSED, PLAYING, STOPPED
from . import udp, wire
from .clock import OffsetEstimator
from .dedupe import PressDeduper
from .detector import FailureDetector
from .lock import SEEK, FollowerLock
from .protection import Facts, Reporter, assess
from .roles import Roles

# the engine's switch plans (Engine.plan) as STATE.plan carries them
PLAN_CODES = {"": wire.PLAN_NONE, "jump": wire.PLAN_JUMP, "vamp": wire.PLAN_VAMP,
              "cancelled": wire.PLAN_CANCELLED}
PLAN_KINDS = {code: kind for kind, code in PLAN_CODES.items()}

log = logging.getLogger("backtrack.peer")

PING_EVERY_NS = 50_000_000
FOLLOWER_EVERY_NS = 100_000_000
MIX_EVERY_NS = 500_000_000  # the live mix again (it is also sent at once on a change)
STORM_UNDERRUNS = 3     # underruns within STORM_WINDOW make the leader announce failure
STORM_WINDOW_NS = 2_000_000_000
START_TIMEOUT_NS = 60_000_000    # auto timeout until the detector has learned the link
FLOOR_NS = 10_000_000           # auto timeout never below this (scheduling on two units)
CEILING_NS = 250_000_000        # nor above this: a dead leader is replaced within a beat
STALL_NS = 2_000_000            # the peer thread woke this much later than asked: a stall
LATELY_NS = 2_000_000_000       # an id clash or bad HMACs this recent count as present
LOCK_GRACE_NS = 5_000_000_000   # a follower joining a song is "not locked" only after this
ADOPT_EVERY_NS = 100_000_000    # a follower tries the leader's setlist at most this often


def setlist_hash(cfg: Config) -> int:
    """Two units must play the same show: titles, what follows each, stem files (names) and
    gains, in order. The setlist's name is not in it: a follower finds the leader's setlist
    among its own by this hash (`PeerNode._adopt_setlist`)."""
    parts = []
    for s in cfg.songs:
        parts.append(f"{s.title}|{s.after}")
        parts.extend(f"{st.file.name}:{st.gain_db}:{st.channels}" for st in s.stems)
        if s.structure is not None:
            parts.append(structure_text(s.structure))
    return wire.setlist_hash("\n".join(parts))


def structure_text(st) -> str:
    """What of a song's structure decides the audio and where jumps land (a follower with
    other sections or another tempo map would make a leader's jump at another frame); file
    paths left out, as for stems (two boxes may keep the show in different folders)."""
    t = st.tempo
    tempo = "" if t is None else f"{t.start_frame}:" + ",".join(
        f"{c.bar}/{c.bpm}/{c.meter}/{c.ramp_to}/{c.bars}" for c in t.changes)
    secs = ",".join(f"{x.name}@{x.frame}" for x in st.sections)
    click = "" if st.click is None else \
        f"{st.click.to}/{st.click.mode}/{st.click.level_db}/{st.click.subdivision}"
    ltc = "" if st.ltc is None else f"{st.ltc.to}/{st.ltc.fps}/{st.ltc.start}/{st.ltc.level_db}"
    return f"{tempo}|{secs}|{st.count_in}|{st.crossfade_ms}|{st.jump_when}|{click}|{ltc}"


def _no_record(kind: str, **fields) -> None:
    """Where events go when no show log listens (tests that build a node alone)."""


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class PeerNode(Worker):
    def __init__(self, cfg: Config, head: PlayHead, on_role: Callable[[str], None],
                 act_locally: Callable[[Action, str], tuple[bool, str]],
                 choose_setlist: Callable[[str, str], tuple[bool, str]] | None = None):
        super().__init__("backtrack-peer", max(0, cfg.engine.realtime_priority - 5))
        pc = cfg.peer
        assert pc is not None
        self.cfg = cfg
        self.pc = pc
        self.head = head
        self.on_role = on_role
        self.act_locally = act_locally
        self.choose_setlist = choose_setlist
        self._adopt_tried = -ADOPT_EVERY_NS
        self._hashes: tuple[Config | None, dict[int, str]] = (None, {})
        self.key = wire.load_key(pc.key_file)
        # The unit id on the wire is not the priority (two units left at priority 1 would
        # share it and never protect each other): configured, or random per start and
        # picked again if a twin shows up (`_watch_ids`).
        self.id = pc.id if pc.id is not None else self._random_id()
        self.boot = wire.new_boot_id()
        # one sequence for the peer thread and the writer's ALIVE: next() on a C counter
        # is atomic under the GIL, and the replay window takes the little reordering
        self._seqs = itertools.count(1)
        self._alive_sent = 0
        self._mix_sent: tuple[object, int] = (None, 0)  # the leader's live mix: (value, when)
        self.guard = wire.ReplayGuard()
        self.counters = wire.Counters()
        self.heartbeat_ns = int(pc.heartbeat_ms * 1e6)
        fixed = int(pc.timeout_ms * 1e6) if pc.timeout_ms is not None else None
        self.detector = FailureDetector(
            floor_ns=fixed or max(FLOOR_NS, 5 * self.heartbeat_ns),
            ceiling_ns=fixed or CEILING_NS, start_ns=fixed or START_TIMEOUT_NS)
        self.roles = Roles(self.id, pc.priority, pc.role, self.detector.timeout_ns,
                           follower_live_ns=3 * FOLLOWER_EVERY_NS)
        self._role_said = self.roles.role  # the role on_role last told the daemon
        self.protection = Reporter()
        self._clash_ns = self._hmac_ns = -LATELY_NS
        self._clash_seen = self._hmac_seen = 0
        self._clash_detail = ""
        self._hmac_lately = 0
        self._unlocked_since: int | None = None
        self._followers_seen = False
        self.rate = cfg.device.rate
        self.dac_ppm: float | None = None  # our card's measured rate against nominal
        self.dac_point: tuple[int, int, int] | None = None  # (song, frame, when at the DAC)
        self.offsets: dict[int, OffsetEstimator] = {}
        self.lock = FollowerLock()
        self.deduper = PressDeduper()
        self.leader_state: wire.LeaderState | None = None
        self.leader_state_from = 0  # the unit that sent leader_state
        self.leader_seen_ns = 0
        self.last_state_sent = 0
        self.last_ping = 0
        self.last_follower = 0
        self.press_counter = 0
        self.failing_reason = ""
        self._under_marks: list[int] = []
        self._last_under = 0
        self._change = threading.Event()
        self.network_muted = False  # fault injection: a partitioned network
        self.hold_join = False  # fault injection: a follower that has not joined the song yet
        self.wire_in = None
        self.wire_out = None
        self.wire_last_edge = 0
        self.refused_setlist = False
        self.sock = udp.open_socket(*parse_hostport(pc.listen))
        self.stamped = 0  # datagrams with the kernel's arrival time (the rest: time read)
        self.stalls = 0        # times this unit's peer thread woke STALL_NS or more late
        self.stall_max_ns = 0
        self.peers = [parse_hostport(p) for p in pc.peers]
        # the black box (appliance.showlog): a non-blocking inbox, called from this thread
        self.record: Callable[..., None] = _no_record
        self.heard: dict[int, tuple[int, str]] = {}  # unit -> (last heard ns, its role)
        self.wall_offset_ns: dict[int, int] = {}     # unit -> its wall clock minus ours
        self.follower_error_ns: dict[int, int] = {}  # a leader's followers' lock errors
        self._was_locked: bool | None = None
        self._err_peak = 0.0                          # |lock error| peak since the last sample
        head.on_change(self._on_engine)
        self._setup_wire()

    # ---- set-up ----------------------------------------------------------------------------
    def _setup_wire(self) -> None:
        """The optional heartbeat wire: the leader toggles an output from the audio path,
        followers watch it; a wire still toggling means the leader is alive whatever the
        network says."""
        pc = self.pc
        if pc.heartbeat_out_pin is None and pc.heartbeat_in_pin is None:
            return
        try:
            from gpiozero import DigitalInputDevice, DigitalOutputDevice
            if pc.heartbeat_out_pin is not None:
                self.wire_out = DigitalOutputDevice(pc.heartbeat_out_pin)
            if pc.heartbeat_in_pin is not None:
                self.wire_in = DigitalInputDevice(pc.heartbeat_in_pin, pull_up=True)
                self.wire_in.when_activated = self._wire_edge
                self.wire_in.when_deactivated = self._wire_edge
        except Exception as exc:  # noqa: BLE001 - no GPIO: network heartbeat only
            log.error("heartbeat wire not available: %s", exc)

    def _wire_edge(self) -> None:
        self.wire_last_edge = time.monotonic_ns()

    def simulate_wire(self, on: bool) -> None:
        """Fault injection (tests): drive our own heartbeat input like a live wire would,
        through gpiozero's mock pin (GPIOZERO_PIN_FACTORY=mock): two units on one test
        machine have no wire between them."""
        self._wire_sim = on
        if not on or self.wire_in is None:
            return

        def toggle() -> None:
            pin = self.wire_in.pin
            level = False
            while self._wire_sim and self.running:
                level = not level
                pin.drive_high() if level else pin.drive_low()
                time.sleep(0.005)

        threading.Thread(target=toggle, name="wire-sim", daemon=True).start()

    def wire_alive(self, now: int) -> bool:
        return self.wire_in is not None and now - self.wire_last_edge < self.roles.timeout_ns

    @property
    def setlist(self) -> int:
        """The hash of the show the engine plays now: after a reload (SIGHUP) that changed
        the setlist, the new one, from the moment the engine took it."""
        cfg = self.head.cfg
        if cfg is not self._hashed_cfg:
            self._hashed_cfg, self._setlist = cfg, setlist_hash(cfg)
        return self._setlist

    _hashed_cfg: Config | None = None
    _setlist = 0

    def _adopt_setlist(self, wanted: int, now: int) -> bool:
        """A follower plays the setlist its leader chose (`ctl setlist` on the leader, a
        footswitch, the leader's state file) when it has one with the same songs: a pair
        is switched from either unit, never one unit at a time. True once it plays it."""
        if self.choose_setlist is None or now - self._adopt_tried < ADOPT_EVERY_NS:
            return False
        self._adopt_tried = now
        cfg = self.head.cfg
        if self._hashes[0] is not cfg:
            self._hashes = (cfg, {setlist_hash(cfg.with_setlist(n)): n for n in cfg.setlists})
        name = self._hashes[1].get(wanted)
        if name is None or name == cfg.setlist:
            return False
        ok, msg = self.choose_setlist(name, "the leader's choice")
        if not ok:
            log.info("the leader plays setlist '%s': %s", name, msg)
        return ok and self.setlist == wanted

    @staticmethod
    def _random_id() -> int:
        return 1 + secrets.randbelow(0xFFFF)

    # ---- sending ---------------------------------------------------------------------------
    def _send(self, payload: wire.Payload, to: list[tuple[str, int]] | None = None) -> None:
        if self.network_muted:
            return
        data = wire.encode(payload, sender=self.id, boot=self.boot, seq=next(self._seqs),
                           wall_ns=time.time_ns(), key=self.key)
        for addr in to or self.peers:
            with contextlib.suppress(OSError):
                self.sock.sendto(data, addr)

    def _state_payload(self) -> wire.LeaderState:
        d, seg_song, frame, _playing = self.head.segment()
        cur = self.head.transport
        t = self.head.dac_time_of(d) if self.head.dac_ready else time.monotonic_ns()
        flags = wire.FLAG_FAILING if self.failing_reason else 0
        song = cur.song
        if cur.state not in (PLAYING, PAUSED):
            frame = 0
        elif seg_song >= 0:
            # The song and the frame from the same segment: at a gapless song change the
            # transport learns of the new song a moment after the writer plays it, and
            # "song 3 at frame 100" would send every follower back to the top of song 3.
            song = seg_song
        kind, plan_id, plan_at, plan_to = self.head.switch_plan()
        plan = PLAN_CODES[kind]
        return wire.LeaderState(term=self.roles.term, leader=self.id, song=song,
                          state=wire.STATE_CODES[cur.state], frame=frame, t_ns=t, rate=self.rate,
                          setlist=self.setlist, flags=flags, plan=plan, plan_id=plan_id,
                          plan_at=plan_at, plan_to=plan_to)

    def send_state(self) -> None:
        self._send(self._state_payload())
        self.last_state_sent = time.monotonic_ns()

    def beat(self) -> None:
        """The writer thread, after each period reached the device: a leader says it is
        alive, at most once per heartbeat interval. Its cost lands in the writer's
        per-period figure (status.writer, bench/playback.py): one HMAC and one sendto."""
        now = time.monotonic_ns()
        if now - self._alive_sent < self.heartbeat_ns or self.roles.role != "leader":
            return
        self._alive_sent = now
        self._send(wire.Alive(term=self.roles.term))

    def announce_failing(self, reason: str) -> None:
        """Tell the followers to take over now (device lost, storm, shutting down)."""
        if self.roles.role != "leader":
            return
        self.failing_reason = reason
        log.error("announcing failure to the followers: %s", reason)
        self.record("failing_announced", reason=reason, term=self.roles.term)
        for _ in range(3):  # UDP: say it more than once
            self._send(wire.Failing(term=self.roles.term, reason=reason[:40]))
            self.send_state()

    # ---- controls on a follower go through the leader --------------------------------------
    def act(self, action: Action, source: str) -> tuple[bool, str] | None:
        """Forward a press to the leader when we follow one; None: act locally."""
        leader = self.leader_addr()
        if self.roles.role == "leader" or leader is None:
            return None
        self.press_counter += 1
        press = (self.boot & 0xFFFFFFFF) << 32 | self.press_counter
        for _ in range(2):
            self._send(wire.Command(press_id=press, action=str(action)), [leader])
        return True, f"sent to the leader (unit {self.roles.leader_id})"

    def leader_addr(self) -> tuple[str, int] | None:
        return getattr(self, "_leader_addr", None)

    # ---- engine events ---------------------------------------------------------------------
    def _on_engine(self, event: str, _engine: object) -> None:
        if self.roles.role == "leader":
            self._change.set()

    # ---- the thread ------------------------------------------------------------------------
    def loop(self) -> None:
        self._apply(self.roles.tick(time.monotonic_ns()))
        super().loop()   # step() until halted; an error is logged, the link goes on

    def step(self) -> None:
        now = time.monotonic_ns()
        wait = self.heartbeat_ns / 1e9
        if self.roles.role == "leader":
            wait = max(0.0, (self.last_state_sent + self.heartbeat_ns - now) / 1e9)
        asked = min(wait, 0.005)
        t_wait = time.monotonic_ns()
        r, _, _ = select.select([self.sock], [], [], asked)
        if r:
            self._receive_all()
        now = time.monotonic_ns()
        if not r:
            self._excuse_stall(now - t_wait - int(asked * 1e9), now)
        self._feed_dac_clock()
        self._watch_health(now)
        self._watch_ids(now)
        self.roles.healthy = self._healthy()
        self.roles.device_ok = self.head.device_ok
        self.roles.timeout_ns = self.detector.timeout_ns
        self._assess(now)
        wire_alive = self.wire_alive(now) if self.wire_in is not None else None
        self._apply(self.roles.tick(now, heartbeat_wire_alive=wire_alive))
        if self.roles.role == "leader":
            if self._change.is_set() or now - self.last_state_sent >= self.heartbeat_ns:
                self._change.clear()
                self.send_state()
            mix = self.head.mix
            if mix is not self._mix_sent[0] or now - self._mix_sent[1] >= MIX_EVERY_NS:
                self._mix_sent = (mix, now)
                self._send(wire.Mix(version=mix.version & 0xFFFFFFFF, text=mix.to_json()))
            if self.wire_out is not None and self.head.healthy(0.05):
                self.wire_out.toggle()
        else:
            if now - self.last_ping >= PING_EVERY_NS and self.leader_addr():
                self.last_ping = now
                # t1 stamped just before it is encoded and sent, as the leader stamps t3:
                # time spent between the stamp and the send counts as network delay in one
                # direction only and biases the offset by half of it (measured: 16 us with
                # `now`, taken before the DAC fit and the roles tick)
                self._send(wire.Ping(t1=time.monotonic_ns()), [self.leader_addr()])
            if now - self.last_follower >= FOLLOWER_EVERY_NS:
                self.last_follower = now
                err = self.lock.error_frames
                self._send(wire.Follower(
                    term=self.roles.term,
                    lock_error_ns=int((err or 0) * 1e9 / self.rate),
                    locked=self.roles.healthy, priority=self.pc.priority,
                    why_not=self._why_not_bits(now)))

    def _excuse_stall(self, late_ns: int, now: int) -> None:
        """Nothing arrived while this thread waited, and it woke `late_ns` after it asked:
        if that is a stall (this unit, or the whole host, did not run), the silence in it
        is not held against the leader (Roles.excuse). Seen on the 2-core test host: the
        whole machine stopped 40-50 ms now and then (a relay at real-time priority was that
        late too), and the follower, waking first, took the silence for a dead leader."""
        if late_ns < STALL_NS:
            return
        self.stalls += 1
        self.stall_max_ns = max(self.stall_max_ns, late_ns)
        if self.roles.role == "follower":
            self.roles.excuse(late_ns, now)
            self.detector.excuse(late_ns)
            if late_ns >= self.roles.timeout_ns // 2:
                self.record("stall", ms=round(late_ns / 1e6, 1))

    def _receive_all(self) -> None:
        for _ in range(64):
            try:
                data, addr, t_recv, stamped = udp.receive(self.sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self.network_muted:
                continue
            self.stamped += stamped
            env = wire.receive(data, key=self.key, guard=self.guard, counters=self.counters,
                               now_wall_ns=time.time_ns(), me=(self.id, self.boot))
            if env is not None:
                self._handle(env, addr, t_recv)

    def _handle(self, env: wire.Envelope, addr, t_recv: int) -> None:
        p = env.payload
        self.wall_offset_ns[env.sender] = env.wall_ns - time.time_ns()
        role = "leader" if isinstance(p, (wire.LeaderState, wire.Failing)) else \
            "follower" if isinstance(p, wire.Follower) else \
            self.heard.get(env.sender, (0, "unit"))[1]
        self.heard[env.sender] = (t_recv, role)
        if isinstance(p, wire.LeaderState):
            # A leader with another show is still a live leader: treating it as silent
            # would make this unit take over and both would be heard. Follow nobody, stay
            # silent, and say so (unhealthy: not a successor either).
            leader_before = self.roles.leader_id
            self.roles.on_state(env.sender, p.term, t_recv, failing=p.failing)
            if env.sender == self.roles.leader_id:
                if leader_before != env.sender:
                    self.detector.reset()  # the gap to a new leader says nothing of the link
                self.detector.heard(t_recv)
            if p.setlist != self.setlist and not (
                    env.sender == self.roles.leader_id and self.roles.role != "leader"
                    and self._adopt_setlist(p.setlist, t_recv)):
                if not self.refused_setlist:
                    log.error("unit %d plays a different setlist: not following it", env.sender)
                    self.record("setlist_mismatch", unit=env.sender)
                self.refused_setlist = True
                return
            self.refused_setlist = False
            if self.roles.role != "leader" and env.sender == self.roles.leader_id:
                self._leader_addr = addr
                self.leader_state = p
                self.leader_state_from = env.sender
                self.leader_seen_ns = t_recv
                self._follow(p, env.sender, t_recv)
        elif isinstance(p, wire.Ping):
            if self.roles.role == "leader":
                self._send(wire.Pong(t1=p.t1, t2=t_recv, t3=time.monotonic_ns()), [addr])
        elif isinstance(p, wire.Pong):
            est = self.offsets.setdefault(env.sender, OffsetEstimator())
            est.add(p.t1, p.t2, p.t3, t_recv)
        elif isinstance(p, wire.Command):
            if self.roles.role == "leader":
                action = parse_action(p.action)
                if action is not None and self.deduper.accept(
                        str(action), t_recv, f"unit {env.sender}/{env.boot}", p.press_id):
                    self.act_locally(action, f"unit {env.sender}")
        elif isinstance(p, wire.Mix):
            if env.sender == self.roles.leader_id and self.roles.role != "leader" \
                    and p.text != self.head.mix.to_json():
                try:
                    self.head.mirror_mix(LiveMix.from_json(p.text))
                except MixError as exc:
                    log.error("the leader's live mix is not understood: %s", exc)
        elif isinstance(p, wire.Alive):
            if env.sender == self.roles.leader_id and self.roles.role != "leader":
                self.roles.on_alive(env.sender, p.term, t_recv)
                self.detector.heard(t_recv)
        elif isinstance(p, wire.Failing):
            self.roles.on_failing(env.sender, p.term, t_recv)
        elif isinstance(p, wire.Follower):
            self._followers_seen = True
            self.follower_error_ns[env.sender] = p.lock_error_ns
            self.roles.on_follower(env.sender, p.priority, p.locked, t_recv, term=p.term,
                                   why_not=p.why_not)

    # ---- follower: play what the leader plays, where it plays it ---------------------------
    def _follow(self, st: wire.LeaderState, leader: int, now: int) -> None:
        head = self.head
        state = wire.STATE_NAMES.get(st.state, STOPPED)
        if not 0 <= st.song < head.songs:
            return
        if state != PLAYING:
            head.mirror(state, st.song)
            self.lock.stop()
            return
        if self.hold_join:
            return  # fault injection: not joining yet
        est = self.offsets.get(leader)
        decision = self.lock.decide(st, est, head, audible=self.roles.role == "leader",
                                    now_ns=now)
        err = self.lock.error_frames
        if err is not None and abs(err) > self._err_peak:
            self._err_peak = abs(err)
        if self.lock.locked != self._was_locked:
            if self._was_locked is None and not self.lock.locked:
                self._was_locked = False  # joining: not a lock lost
            else:
                self._was_locked = self.lock.locked
                self.record("lock", locked=self.lock.locked, song=st.song + 1,
                            error_ms=round(err / self.rate * 1000, 4) if err is not None
                            else None)
        if decision is SEEK:
            self._seek(st, est, now)
        elif decision.kind == "correct":
            head.correct(decision.frames)
        if head.plays(st.song):
            # the leader's jump or vamp, posted here too: made at the same song frame
            head.mirror_plan(st.song, PLAN_KINDS[st.plan], st.plan_id, st.plan_at, st.plan_to)

    def _seek(self, st: wire.LeaderState, est: OffsetEstimator | None, now: int) -> None:
        """Play the leader's song where the leader will be a moment from now."""
        self.head.seek(st.song, self.lock.seek_target(st, est, now, self.leader_seen_ns))
        self.lock.reset()

    def _carry_on(self, now: int) -> None:
        """Taking over from a leader that was playing, while this unit had not joined its
        song yet (the leader failed or fell silent within a moment of `play`, before the
        first seek here): start that song where the leader would be now. Leading from
        "cued" instead would stop the show, and the old leader, if it was only late, would
        follow that stop."""
        st = self.leader_state
        if st is None or wire.STATE_NAMES.get(st.state) != PLAYING or \
                not 0 <= st.song < self.head.songs:
            return
        if self.head.plays(st.song):
            return  # with the song already: the lock has it where it should be
        log.warning("taking over a song not joined yet: song %d from where the leader was",
                    st.song + 1)
        self._seek(st, self.offsets.get(self.leader_state_from), now)

    def _healthy(self) -> bool:
        """A good successor: its device plays, it has the same show, and it is locked (or
        there is nothing to lock to)."""
        if not self.head.device_ok or self.refused_setlist:
            return False
        st = self.leader_state
        return st is None or st.state != wire.STATE_CODES[PLAYING] or self.lock.locked

    # ---- DAC clock and health --------------------------------------------------------------
    def _feed_dac_clock(self) -> None:
        if self.head.refresh() and self.head.dac_ready:
            self.dac_ppm = round(self.head.dac_ppm, 1)
            self.dac_point = self.head.dac_point()

    def _watch_health(self, now: int) -> None:
        if self.roles.role != "leader" or self.failing_reason:
            return
        if not self.head.device_ok:
            self.announce_failing("device lost")
            return
        under = self.head.underruns
        if under != self._last_under:
            self._last_under = under
            self._under_marks.append(now)
        self._under_marks = [t for t in self._under_marks if now - t < STORM_WINDOW_NS]
        if len(self._under_marks) >= STORM_UNDERRUNS:
            self.announce_failing(f"{len(self._under_marks)} underruns in "
                                  f"{STORM_WINDOW_NS / 1e9:.0f} s")

    # ---- is the show protected? -------------------------------------------------------------
    def _watch_ids(self, now: int) -> None:
        """A twin with our unit id, or a unit with another key: both leave the pair unable to
        protect the show, so each is noticed here (from the wire's drop counters) and named
        in status. A random id is simply picked again; a configured one stays and is
        reported until someone fixes the config."""
        clashes = self.counters["id-clash"]
        if clashes != self._clash_seen:
            self._clash_seen, self._clash_ns = clashes, now
            old = self.id
            if self.pc.id is None and self.roles.role != "leader":
                self.id = self._random_id()
                self.roles.rename(self.id)
                log.warning("another unit used unit id %d: this unit is now id %d", old,
                            self.id)
                self._clash_detail = ""
            else:
                self._clash_detail = (f"another unit uses unit id {old} (give each unit its own "
                                      "peer.id, or leave peer.id out on all)")
        hmac = self.counters["hmac"]
        if hmac != self._hmac_seen:
            self._hmac_seen, self._hmac_ns = hmac, now
            self._hmac_lately = hmac

    def _lock_fact(self, now: int) -> bool | None:
        """None: nothing to lock to; else locked, with a grace while joining a song."""
        st = self.leader_state
        if self.roles.role != "follower" or st is None or st.state != wire.STATE_CODES[PLAYING]:
            self._unlocked_since = None
            return None
        if self.lock.locked:
            self._unlocked_since = None
            return True
        if self._unlocked_since is None:
            self._unlocked_since = now
        return now - self._unlocked_since < LOCK_GRACE_NS

    def _why_not_bits(self, now: int) -> int:
        bits = 0
        if not self.head.device_ok:
            bits |= wire.NO_DEVICE
        if self.refused_setlist:
            bits |= wire.SETLIST_MISMATCH
        if self._lock_fact(now) is False:
            bits |= wire.NOT_LOCKED
        if now - self._clash_ns < LATELY_NS and self._clash_detail:
            bits |= wire.ID_CLASH
        if now - self._hmac_ns < LATELY_NS:
            bits |= wire.KEY_MISMATCH
        return bits

    def _assess(self, now: int) -> None:
        r = self.roles
        facts = Facts(
            role=r.role, heard_peer=self.counters.accepted > 0,
            leader_alive=r.leader_id is not None and self.leader_seen_ns > 0
            and now - self.leader_seen_ns < CEILING_NS and r.leader_id != self.id,
            device_ok=self.head.device_ok, locked=self._lock_fact(now),
            setlist_mismatch=self.refused_setlist,
            id_clash=self._clash_detail if now - self._clash_ns < LATELY_NS else "",
            key_mismatch=self._hmac_lately if now - self._hmac_ns < LATELY_NS else 0,
            followers=tuple(r.live_followers(now)) if r.role == "leader" else (),
            followers_seen=self._followers_seen)
        if self.protection.update(assess(facts), now):
            why = self.protection.why_not
            self.record("protection", protected=not why, why_not=list(why or ()),
                        role=r.role)
            if why:
                log.warning("show NOT protected: %s", "; ".join(why))
            else:
                log.info("show protected: %s", "a follower is locked and ready to take over"
                         if r.role == "leader" else "locked to the leader, ready to take over")

    @property
    def protected(self) -> bool | None:
        return self.protection.protected

    # ---- role changes ----------------------------------------------------------------------
    def _apply(self, actions) -> None:
        for a in actions or ():
            kind = a[0]
            if kind == "become_leader":
                why = ""
                if self.leader_seen_ns:
                    d = self.detector.status()
                    why = (f": leader silent {(time.monotonic_ns() - self.leader_seen_ns) / 1e6:.1f}"
                           f" ms, timeout {self.roles.timeout_ns / 1e6:.1f} ms (gaps: mean "
                           f"{d['gap_mean_ms']} ms, sd {d['gap_std_ms']} ms, longest "
                           f"{d['gap_max_ms']} ms in the last 5 minutes)")
                log.warning("taking over as leader (term %d)%s", self.roles.term, why)
                song, frame = self._where()
                if self.leader_seen_ns or self.failing_reason:
                    self.record("takeover", term=self.roles.term, why=why.lstrip(": ") or
                                "the leader announced its failure", song=song, frame=frame)
                else:  # nobody led when this unit started: leading is not taking over
                    self.record("lead", term=self.roles.term,
                                why="no running leader heard at start")
                self.failing_reason = ""
                self._carry_on(time.monotonic_ns())
                self._become_audible()
                self.send_state()
            elif kind in ("step_down", "mute"):
                if kind == "step_down":
                    log.warning("following unit %s (term %d)", self.roles.leader_id,
                                self.roles.term)
                    self.record("step_down", term=self.roles.term, leader=self.roles.leader_id)
                self._become_silent()
            elif kind == "unmute":
                self._become_audible()
        if actions or self.roles.role != self._role_said:
            # a role change without an action to carry out (a restarted configured leader
            # that hears a running leader goes from starting to follower, silent as it was)
            # is still news for status and the show log
            self._role_said = self.roles.role
            self.on_role(self.roles.role)

    def _become_audible(self) -> None:
        if self.pc.mode == "switcher":
            self.head.set_pilot(True)
        else:
            self.head.set_audible(True, fade=True)

    def _become_silent(self) -> None:
        if self.pc.mode == "switcher":
            self.head.set_pilot(False)
        else:
            self.head.set_audible(False, fade=False)

    def _where(self) -> tuple[int | None, int | None]:
        """(song from 1, song frame) at this unit's write head, for the show log."""
        try:
            _d, song, frame, playing = self.head.segment()
        except Exception:  # noqa: BLE001 - only for the log
            return None, None
        return (song + 1, frame) if song >= 0 and playing else (None, None)

    # ---- for the self-test and the show log ---------------------------------------------------
    def peers_seen(self, within_s: float) -> list[tuple[int, str, float]]:
        """(unit, its role, ms since heard) of every other unit heard within `within_s`."""
        now = time.monotonic_ns()
        return [(u, role, (now - t) / 1e6) for u, (t, role) in sorted(self.heard.items())
                if u != self.id and now - t < within_s * 1e9]

    def wall_offsets_ms(self) -> dict[int, float]:
        """Each unit heard lately: its wall clock minus ours (plus the network's delay)."""
        now = time.monotonic_ns()
        return {u: round(o / 1e6, 2) for u, o in self.wall_offset_ns.items()
                if u in self.heard and now - self.heard[u][0] < 5e9}

    def sample(self) -> dict:
        """A show-log sample: lock error (now and its peak since the last sample), drift,
        offsets; a leader adds its followers' lock errors. Cheap: attributes only."""
        err = self.lock.error_frames
        out: dict = {"role": self.roles.role, "term": self.roles.term,
                     "protected": self.protection.protected}
        if self.roles.role != "leader":
            out["locked"] = self.lock.locked
            out["lock_error_ms"] = round(err / self.rate * 1000, 4) if err is not None else None
            out["lock_error_peak_ms"] = round(self._err_peak / self.rate * 1000, 4)
            out["drift_ppm"] = round(self.lock.controller.drift_frames_per_s / self.rate * 1e6,
                                     1)
            est = self.offsets.get(self.roles.leader_id)
            out["offset_us"] = round(est.offset_ns / 1000, 1) if est is not None and est.ready \
                else None
        else:
            now = time.monotonic_ns()
            errs = {str(u): round(e / 1e6, 4) for u, e in self.follower_error_ns.items()
                    if u in self.heard and now - self.heard[u][0] < 1e9}
            if errs:
                out["follower_error_ms"] = errs
        out["dac_ppm"] = self.dac_ppm
        self._err_peak = 0.0
        return out

    # ---- status ----------------------------------------------------------------------------
    def health(self) -> dict:
        now = time.monotonic_ns()
        err = self.lock.error_frames
        est = self.offsets.get(self.roles.leader_id)
        return {
            "role": self.roles.role,
            "term": self.roles.term,
            "unit": self.id,
            "leader": self.roles.leader_id,
            "mode": self.pc.mode,
            "leader_seen_ms": round((now - self.leader_seen_ns) / 1e6, 1)
            if self.leader_seen_ns else None,
            "locked": self.lock.locked if self.roles.role != "leader" else None,
            "lock_error_ms": round(err / self.rate * 1000, 4) if err is not None else None,
            "drift_ppm": round(self.lock.controller.drift_frames_per_s / self.rate * 1e6, 1),
            "frames_dropped": self.lock.controller.dropped,
            "frames_inserted": self.lock.controller.inserted,
            "dac_ppm": self.dac_ppm,
            "dac_steps": self.head.dac.steps,
            "kernel_stamps": self.stamped > 0,
            "dac_point": self.dac_point,
            "offset_us": round(est.offset_ns / 1000, 1) if est is not None and est.ready
            else None,
            "failing": self.failing_reason or None,
            "wire": None if self.wire_in is None else self.wire_alive(now),
            "setlist_mismatch": self.refused_setlist,
            "protected": self.protection.protected,
            "why_not": list(self.protection.why_not or ()),
            "timeout_ms": round(self.roles.timeout_ns / 1e6, 1),
            "detector": self.detector.status(),
            "stalls": {"count": self.stalls, "max_ms": round(self.stall_max_ns / 1e6, 1)},
            "id_configured": self.pc.id is not None,
            "priority": self.pc.priority,
            "packets": self.counters.as_dict(),
        }

    def close(self) -> None:
        self.head.set_beacon(None)
        if self.roles.role == "leader":
            self.announce_failing("shutting down")
        self.halt(timeout=1)
        with contextlib.suppress(OSError):
            self.sock.close()
        for dev in (self.wire_in, self.wire_out):
            if dev is not None:
                with contextlib.suppress(Exception):
                    dev.close()


def start(cfg: Config, daemon) -> PeerNode:
    """Build and start the node for `daemon` (appliance.service.Daemon)."""
    node = PeerNode(cfg, PlayHead(daemon.engine),
                    on_role=daemon.on_role,
                    act_locally=daemon.perform,
                    choose_setlist=daemon.choose_setlist)
    # every unit starts silent; the leader becomes audible once it has listened (Roles)
    if cfg.peer.mode != "switcher":
        daemon.engine.set_audible(False, fade=False)
    daemon.role = node.roles.role
    node.head.set_beacon(node.beat)
    node.record = daemon.showlog_record
    node.start()
    return node

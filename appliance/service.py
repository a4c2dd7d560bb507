"""`backtrack run`: builds the object graph from the config and keeps it running.

config -> Engine (decode, writer, monitor threads) + control socket (+ footswitches, MIDI,
peer when configured). SIGTERM/SIGINT fade out and close the device; the process exits 0.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

from . import config as config_mod
from . import systemd
from .actions import LOCAL, MIX, Action, mix_change, request_action, resolve_goto
from .audio.engine import Engine
from .config import Config, ConfigError
from .controls.socket import ControlServer
from .errors import UserError
from .livemix import LiveMix, MixError, describe
from .realtime import lowest_fifo_no_inherit
from .selftest import SelfTest
from .showlog import LogLimits, ShowLog
from .statefile import ShowState
from .sysinfo import Throttling, decode_throttled, read_temperature, thermal_zone
from .threads import Component
from .transport import CUED, PAUSED, PLAYING, State

log = logging.getLogger("backtrack")

FAULTS_ENABLED = os.environ.get("BACKTRACK_FAULTS") == "1"


def status_dict(engine: Engine, role: str = "leader", peer: dict | str = "none") -> dict:
    s = engine.status()
    d = asdict(s)
    d.update({
        "song_index": s.song,           # 0-based
        "song": s.song + 1,             # as people count
        "songs": len(engine.cfg.songs),
        "setlist": engine.cfg.setlist,
        "position_s": round(s.seconds, 4),
        "position_frames": s.frame,
        "duration_s": round(s.duration, 3),
        "xruns": s.underruns,
        "role": role,
        "peer": peer,
        "writer": engine.writer.work_stats(),
    })
    for k in ("frame", "seconds", "duration", "underruns"):
        d.pop(k, None)
    return d


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.server: ControlServer | None = None
        self.stopping = threading.Event()
        # footswitches/LED, MIDI, peer: the contract is appliance.threads.Component
        self.components: list[Component] = []
        self.role = "leader"
        self.peer = None  # appliance.peer.node.PeerNode on a unit of a hot-standby pair
        self._deduper = None
        self.warmer = None  # the child converting the setlist's stems ahead (warmcache)
        self._warm_due = False
        # the black box: records queue from any thread, the log's own thread writes them
        sl = cfg.show_log
        self.showlog = ShowLog(
            cfg.log_dir, LogLimits(max_file_bytes=int(sl.max_file_mb * 2**20),
                                   max_total_bytes=int(sl.max_total_mb * 2**20),
                                   sample_s=sl.sample_s,
                                   idle_split_s=sl.new_show_after_min * 60),
            priority=1 if cfg.engine.realtime_priority > 0 else 0,
            header=self._log_header, sampler=self._log_sample, playing=self._in_song)
        self.engine.set_recorder(self.showlog.record)
        self.engine.listeners.append(self._on_engine)
        self.selftest = SelfTest(self)
        self._zone = thermal_zone()
        self._throttle = Throttling()
        self._throttle_bits: int | None = None

    # ---- the show log ----------------------------------------------------------------------
    def showlog_record(self, kind: str, **fields) -> None:
        """Any thread: one event for the black box (never blocks; appliance.showlog)."""
        self.showlog.record(kind, **fields)

    def _on_engine(self, event: str, engine: Engine) -> None:
        """Under the engine lock: flags only. A song playing opens the show."""
        if engine.transport.current.state == PLAYING:
            self.showlog.begin_show()
        if event == "song_started":
            self.selftest.song_started()

    def _in_song(self) -> bool:
        return self.engine.transport.current.state in (PLAYING, PAUSED)

    def _log_header(self) -> dict:
        """What the first record of a show file says about the show (the log's thread)."""
        from . import package_version
        cfg = self.cfg
        head = {"version": package_version(), "config": str(cfg.path), "setlist": cfg.setlist,
                "songs": [s.title for s in cfg.songs], "device": cfg.device.name,
                "rate": cfg.device.rate, "period": cfg.device.period,
                "periods": cfg.device.periods, "role": self.role}
        if self.peer is not None:
            head["unit"] = self.peer.id
            head["priority"] = cfg.peer.priority if cfg.peer else None
        return head

    def _log_sample(self) -> dict | None:
        """Once a second during a show (the log's thread): the pair's lock error and drift,
        CPU temperature and throttling where the box shows them, xruns and position."""
        out: dict = {}
        e = self.engine
        song, frame, playing, _t = e.position()
        out["song"] = song + 1 if song >= 0 else None
        out["pos_s"] = round(frame / self.cfg.device.rate, 3) if playing else None
        out["xruns"] = e.writer.sink.underruns
        if self.peer is not None:
            out.update(self.peer.sample())
        temp = read_temperature(self._zone)
        if temp is not None:
            out["temp_c"] = temp
        bits = self._throttle.read() if self._throttle.available else None
        if bits is not None:
            out["throttled"] = hex(bits)
            if self._throttle_bits is None or (bits ^ self._throttle_bits) & 0xF:
                out["_events"] = [("throttling", {"bits": hex(bits), **decode_throttled(bits)})]
            self._throttle_bits = bits
        return out

    def on_role(self, role: str) -> None:
        """The peer's role changed (or was confirmed): status and the show log."""
        if role != self.role:
            term = self.peer.roles.term if self.peer is not None else None
            self.showlog_record("role", role=role, was=self.role, term=term)
        self.role = role

    def act(self, action: Action, source: str = "socket") -> tuple[bool, str]:
        """The one entry point for every control (socket, footswitch, MIDI): a hot-standby
        follower routes it through the leader here, and the leader acts once on a press
        that reaches it twice (a MIDI thru box feeding both units)."""
        log.info("%s: %s", source, action)
        if action.name in LOCAL:  # this box's own business: never through the leader
            return self.perform(action, source)
        if action.name == "goto" and isinstance(action.arg, str):
            # a title becomes its number here: the setlists of a pair are the same, and only
            # numbers need to travel to the leader
            with self.engine.lock:
                titles = [s.title for s in self.engine.cfg.songs]
            resolved, err = resolve_goto(action, titles)
            if resolved is None:
                self.showlog_record("command", source=source, action=str(action), ok=False,
                                    result=err)
                return False, err
            action = resolved
        if self.peer is not None:
            forwarded = self.peer.act(action, source)
            if forwarded is not None:
                self.showlog_record("command", source=source, action=str(action),
                                    ok=forwarded[0], result=forwarded[1])
                return forwarded
            if not self.peer.deduper.accept(str(action), time.monotonic_ns(), source):
                msg = "same press already received from another unit"
                self.showlog_record("command", source=source, action=str(action), ok=True,
                                    result=msg)
                return True, msg
        return self.perform(action, source)

    def perform(self, action: Action, source: str = "socket") -> tuple[bool, str]:
        """Carry out an action on this unit (after a follower's forwarding and the leader's
        de-duplication): a setlist choice or the self-test here, the live mix and the
        transport's actions in the engine. Every control's action ends here, so the show log
        records it here, with where it came from: footswitch, midi, socket, peer (unit N),
        web, osc."""
        if source.startswith("unit "):
            source = f"peer ({source})"
        if action.name == "selftest":
            n = self.selftest.request(source)
            ok, msg = True, f"self-test #{n} started (`backtrack check --live` shows the result)"
        elif action.name == "setlist":
            ok, msg = self.choose_setlist(str(action.arg))
        elif action.name in MIX:
            c = mix_change(action)
            ok, msg = self.engine.mix_command(c.verb, c.target, c.db, c.scope)
        else:
            ok, msg = self.engine.command(action)
        self.showlog_record("command", source=source, action=str(action), ok=ok,
                            result=msg or None)
        return ok, msg

    def choose_setlist(self, name: str, source: str = "") -> tuple[bool, str]:
        """Switch to another setlist, cueing its first song. Only while stopped or cued: a
        song never changes under the band's feet, and nobody loses their place by a stray
        press mid-song. Kept across a restart by the state file."""
        e = self.engine
        with e.lock:  # the transport's state cannot change between the check and the switch
            cfg = self.cfg
            if name not in cfg.setlists:
                return False, f"there is no setlist '{name}'; setlists: " \
                              f"{', '.join(cfg.setlists)}"
            state = e.transport.current.state
            if state in (PLAYING, PAUSED):
                return False, f"setlist '{name}' not taken: a song is {state}; stop first"
            if name == e.cfg.setlist and e.next_cfg is None:
                return True, f"setlist '{name}' is already in use"
            self.cfg = cfg.with_setlist(name)
            e.reload(self.cfg, cue=0)
        log.info("setlist '%s' chosen%s: %d songs, song 1 cued", name,
                 f" ({source})" if source else "", len(self.cfg.songs))
        self.showlog_record("setlist", name=name, songs=len(self.cfg.songs),
                            source=source or None)
        self.warm_cache()
        return True, f"setlist '{name}': {len(self.cfg.songs)} songs, song 1 cued"

    def warm_cache(self) -> None:
        """Ask for the setlist's stems that need it to be converted before a song needs
        them (appliance.warmcache). Any thread may ask; the main loop starts the child
        (`tend_warmer`): from a real-time thread (the peer's, adopting the leader's setlist)
        it would inherit that priority and run its start-up above the sound card's threads."""
        self._warm_due = True

    def tend_warmer(self) -> None:
        """The main loop's tick: say what the last conversion could not do; start the next
        one when asked (a newer setlist replaces one still converting)."""
        w = self.warmer
        if w is not None and w.poll() is not None:
            self.warmer = None
            err = w.stderr.read().decode(errors="replace").strip() if w.stderr else ""
            for line in err.splitlines():
                log.warning("cache: %s", line)
            if w.returncode == 0:
                log.info("cache: the setlist's stems are converted (or needed nothing)")
        if self._warm_due:
            from . import warmcache
            self._warm_due = False
            if self.warmer is not None:
                self.warmer.terminate()
            self.warmer = warmcache.start(self.cfg)

    def setlists(self) -> list[dict]:
        """What `ctl setlists` prints: each setlist, its songs and length, the one in use."""
        return [{"name": n, "songs": [s.title for s in songs], "in_use": n == self.cfg.setlist}
                for n, songs in self.cfg.setlists.items()]

    @property
    def peer_health(self) -> dict | str:
        return self.peer.health() if self.peer is not None else "none"

    def handle(self, req: dict, source: str = "socket") -> dict:
        """One control-socket request -> its reply. Also the web remote's and OSC's way in
        (`source` names them in the journal and to the hot-standby de-duplication), so
        every remote control is parsed, forwarded and carried out exactly as the socket's."""
        if req.get("cmd") == "status":
            return {"ok": True, "state": self.status()}
        if req.get("cmd") == "mix" and not req.get("reset") and req.get("arg") != "reset":
            return {"ok": True, "mix": self.engine.mix.as_status(),
                    "message": f"live mix: {describe(self.engine.mix.as_status())}",
                    "state": self.status()}
        if req.get("cmd") == "setlists":
            return {"ok": True, "setlists": self.setlists(), "state": self.status()}
        if req.get("cmd") == "_fault" and FAULTS_ENABLED:
            return self._fault(req)
        if req.get("cmd") == "selftest":
            # `backtrack check --live`: start it (or join the one running) and answer at once;
            # the result appears in status.selftest (the socket never waits for it)
            why = "live" if req.get("why") == "live" else "socket"
            n = self.selftest.request(why)
            self.showlog_record("command", source="socket", action="selftest", ok=True,
                                result=f"self-test #{n}")
            return {"ok": True, "id": n, "message": f"self-test #{n} running",
                    "state": self.status()}
        action, err = request_action(req)
        if action is None:
            return {"ok": False, "error": err}
        ok, msg = self.act(action, source)
        reply: dict = {"ok": ok, "state": self.status()}
        if msg:
            reply["message" if ok else "error"] = msg
        return reply

    def _fault(self, req: dict) -> dict:
        """Fault injection for tests and benchmarks (only with BACKTRACK_FAULTS=1): stall the
        writer once (an underrun), or freeze it (a hung audio path); on a peer, cut its
        network, simulate the heartbeat wire, or hold a follower from joining the song."""
        w = self.engine.writer
        if "stall_ms" in req:
            w.stall_s = float(req["stall_ms"]) / 1000
        if "freeze" in req:
            w.freeze = bool(req["freeze"])
        if "network" in req and self.peer is not None:
            self.peer.network_muted = not bool(req["network"])  # a cut cable
        if "wire" in req and self.peer is not None:
            self.peer.simulate_wire(bool(req["wire"]))
        if "join" in req and self.peer is not None:
            self.peer.hold_join = not bool(req["join"])  # a follower still joining
        return {"ok": True, "state": self.status()}

    def status(self) -> dict:
        d = status_dict(self.engine, self.role, self.peer_health)
        controls = {}
        for comp in self.components:
            if comp is not self.peer and hasattr(comp, "status"):
                try:
                    controls.update(comp.status())
                except Exception as exc:  # noqa: BLE001 - status must always answer
                    controls[type(comp).__name__] = f"status failed: {exc}"
        if controls:
            d["controls"] = controls
        d["selftest"] = self.selftest.status()
        d["showlog"] = self.showlog.status()
        return d

    def _start_components(self) -> None:
        """Controls and peers are optional: each starts only when its config section exists,
        and one failing to start (no GPIO chip on a laptop) is reported, not fatal."""
        if self.cfg.footswitches or self.cfg.led:
            from .controls.gpio import start as start_gpio
            self._start_component("footswitches/LED", start_gpio)
        if self.cfg.midi:
            from .controls.midi import start as start_midi
            self._start_component("MIDI", start_midi)
        if self.cfg.remote:
            from .controls.remote import start as start_remote
            self._start_component("web remote", start_remote)
        if self.cfg.osc:
            from .controls.osc import start as start_osc
            self._start_component("OSC", start_osc)
        if self.cfg.peer:
            from .peer.node import start as start_peer
            try:
                self.peer = start_peer(self.cfg, self)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.error("hot standby not started: %s", exc)
            else:
                self.components.append(self.peer)

    def _start_component(self, what: str, factory) -> None:
        try:
            comp = factory(self.cfg, self)
        except Exception as exc:  # noqa: BLE001 - the show goes on without it
            log.error("%s not started: %s", what, exc)
            return
        if comp is not None:
            self.components.append(comp)

    def _import_components(self) -> None:
        """Import the configured parts' modules before the writer starts. Why: an import
        is Python and C under the GIL (aiohttp's is ~0.3 s here, with full garbage
        collections over everything it creates); done while the writer already feeds the
        card, it cost underruns at 128 x 3 before READY (bench/remote.py)."""
        import importlib
        wanted = {"footswitches": "gpio", "led": "gpio", "midi": "midi", "remote": "remote",
                  "osc": "osc"}
        modules = [f"appliance.controls.{m}" for k, m in wanted.items() if getattr(self.cfg, k)]
        if self.cfg.peer:
            modules.append("appliance.peer.node")
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported where the part is started
                pass

    def start(self) -> None:
        self._import_components()
        from . import package_version
        self.showlog.record("daemon_start", version=package_version(), config=str(self.cfg.path),
                            setlist=self.cfg.setlist, pid=os.getpid())
        self.showlog.start()
        freeze_heap()  # what start-up made so far: the components' start-up runs beside the writer
        self.engine.start()
        # Components before the socket: when `ctl status` first answers, the daemon is whole.
        try:
            self._start_components()
        except UserError:
            self.stop()
            raise
        try:
            self.server = ControlServer(
                self.cfg.control.socket, self.handle,
                rt_priority=max(0, self.cfg.engine.realtime_priority - 20))
        except OSError as exc:
            self.stop()
            raise UserError(f"cannot create the control socket {self.cfg.control.socket}: "
                            f"{exc.strerror or exc} (set control.socket in the config)") from None
        self.server.start()
        st = self.engine.status()
        log.info("ready: %d songs, device %s (%s), %s", len(self.cfg.songs),
                 self.cfg.device.name, st.device, st.realtime)

    def stop(self) -> None:
        self.selftest.close()
        if self.warmer is not None and self.warmer.poll() is None:
            self.warmer.terminate()
        for comp in reversed(self.components):
            try:
                comp.close()
            except Exception:  # noqa: BLE001
                log.exception("closing %r", comp)
        if self.server is not None:
            self.server.close()
        self.engine.stop()
        st = self.engine.transport.current
        self.showlog.record("daemon_stop", state=st.state, song=st.song + 1,
                            xruns=self.engine.writer.sink.underruns)
        if self.showlog.is_alive():
            self.showlog.close()


def keep_gil_holders_running(cfg: Config) -> str:
    """Give the main thread (and every thread it starts from now on that does not ask for
    its own priority: the socket's clients, gpiozero's, logging's) the lowest real-time
    priority. Why: the writer and the peer thread need the GIL; a normal-priority thread
    that holds it and is preempted by any busy process on the box holds them up with it
    (a priority inversion): a leader silent for 50 ms, taken for dead, was measured that
    way. At SCHED_FIFO 1 no ordinary process preempts it; it still yields to every
    real-time thread of the player."""
    # not naming it (that would rename the process); RESET_ON_FORK: what it starts (the stem
    # converter, appliance.warmcache) does not run its start-up at a real-time priority,
    # where it held a lossy-link relay of the same priority off the CPU long enough for a
    # false takeover
    return lowest_fifo_no_inherit(cfg.engine.realtime_priority > 0, name=False)


def freeze_heap() -> int:
    """Take every object alive now out of the cyclic garbage collector's view (`gc.freeze`);
    returns how many.

    Why: a full collection walks every tracked object while holding the GIL, and never lets
    go of it in between; the writer waits that long. At start the daemon holds about 50,000
    objects (the show, NumPy, aiohttp, ...), and a burst of allocations elsewhere (100
    phone pages opening at once) set off a full collection of 27-32 ms on this 2-core
    host, one underrun at 128 x 3 every time (bench/remote.py, measured with gc callbacks).
    Frozen, they are never walked again, and the collections that the web remote's own
    objects still cause stayed under 1 ms. Nothing frozen is ever freed: call it when the
    long-lived objects are made (ready, and after a reload), not in a loop."""
    import gc
    gc.freeze()
    return gc.get_freeze_count()


def setup_logging() -> str:
    """The journal with structured fields under systemd, else stderr (appliance.systemd)."""
    return systemd.setup_logging()


# ---- the service around the daemon: systemd, signals, reload, state -----------------------
READY_WAIT_S = 5.0       # longest wait for the first device open attempt before READY=1
MAX_STALL_S = 2.0        # a writer that has not advanced for this long is hung


def log_context(daemon: Daemon) -> dict:
    """Fields for every journal record. Lock-free on purpose: a log call may come from a
    thread that holds the engine lock, and the handler runs under the logging lock."""
    e = daemon.engine
    cur = e.transport.current
    dac_song, frame, _playing, _t = e.position()
    pos = frame / e.cfg.device.rate if dac_song == cur.song else 0.0
    return {"song": cur.song + 1, "title": e.cfg.songs[cur.song].title, "state": cur.state,
            "position": f"{pos:.3f}", "underruns": e.writer.sink.underruns,
            "role": daemon.role}


def summary(daemon: Daemon) -> str:
    """The one line `systemctl status` shows."""
    st = daemon.status()
    pos = int(st["position_s"])
    line = (f'{st["state"]} {st["song"]}/{st["songs"]} "{st["title"]}" '
            f'{pos // 60}:{pos % 60:02d} | xruns {st["xruns"]} | {st["role"]}')
    if st["device"] != "ok":
        line = f"waiting for the audio interface {daemon.cfg.device.name} ({st['device']}) | {line}"
    if daemon.engine.next_cfg is not None:
        line += " | new config waits for the song to end"
    return line


def audio_healthy(daemon: Daemon, max_stall_s: float = MAX_STALL_S) -> bool:
    """Healthy = the writer advances (it writes silence when idle, and paces itself while the
    interface is missing, so idle and waiting both count) and the threads feeding it live."""
    e = daemon.engine
    return (e.healthy(max_stall_s) and e.writer.is_alive() and e.decoder.is_alive()
            and e.monitor.is_alive())


def wait_until_ready(daemon: Daemon, timeout: float = READY_WAIT_S) -> None:
    """Until the first attempt to open the device is over (open, or known missing) and the
    cued song is decoded, so a `play` right after READY=1 starts at once."""
    e, w = daemon.engine, daemon.engine.writer
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (w.device_ok or w.device_error) and e.cued_ready():
            return
        time.sleep(0.005)


def reload_config(daemon: Daemon, path: str) -> tuple[bool, str]:
    """SIGHUP: load the file again. A config with errors is rejected and the running one
    kept. Sections that are fixed while running (device, engine buffers, control socket,
    footswitches, LED, MIDI, peer) keep their running values and the log says they need
    `systemctl restart backtrack`; the setlist changes between songs (Engine.reload). The
    web remote and OSC are fixed too (their sockets are bound at start)."""
    try:
        new = with_service_dirs(config_mod.load(path))
    except ConfigError as exc:
        log.error("reload rejected: the new config has %d problem(s); playing on with the "
                  "running one", len(exc.problems))
        for p in exc.problems:
            log.error("  %s", p)
        return False, f"reload rejected ({len(exc.problems)} problem(s), see journal); " \
                      "running config kept"
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, play on
        log.error("reload rejected: %s; playing on with the running config", exc)
        return False, "reload rejected (see journal); running config kept"
    old = daemon.cfg
    new = keep_setlist(new, old.setlist, "the running show")
    for w in new.warnings:
        log.warning("%s", w)
    fixed = ("device", "control", "footswitches", "led", "midi", "peer", "log_dir", "show_log",
             "remote", "osc")
    changed = [k for k in fixed if getattr(new, k) != getattr(old, k)]
    engine_cfg = replace(old.engine, cache_dir=new.engine.cache_dir)
    if replace(new.engine, cache_dir=None) != replace(old.engine, cache_dir=None):
        changed.append("engine")
    channels = old.device.channels
    wide = [s.title for s in new.songs for st in s.stems if max(st.channels, default=0) >= channels]
    if wide:
        log.error("reload rejected: song '%s' routes to a channel the running device (%d "
                  "channels) does not have; run `systemctl restart backtrack` to change the "
                  "device", wide[0], channels)
        return False, "reload rejected (routing needs a restart); running config kept"
    if changed:
        log.warning("reload: changes to %s take effect after `systemctl restart backtrack`; "
                    "running with the old ones", ", ".join(changed))
    merged = replace(new, device=old.device, control=old.control, engine=engine_cfg,
                     footswitches=old.footswitches, led=old.led, midi=old.midi, peer=old.peer,
                     log_dir=old.log_dir, show_log=old.show_log,
                     remote=old.remote, osc=old.osc)
    daemon.cfg = merged
    daemon.showlog_record("reload", songs=len(merged.songs), setlist=merged.setlist)
    if daemon.engine.reload(merged):
        log.info("config reloaded: %d songs", len(merged.songs))
        return True, f"config reloaded ({len(merged.songs)} songs)"
    log.info("new config accepted (%d songs); it applies when the song under way ends or is "
             "stopped", len(merged.songs))
    return True, "new config accepted; applies when the song ends"


def keep_setlist(cfg: Config, name: str, where: str) -> Config:
    """The setlist chosen at run time outlives a restart and a reload; the show file's
    `setlist:` only says which one to start with the first time."""
    if not name or name == cfg.setlist:
        return cfg
    if name not in cfg.setlists:
        log.warning("setlist '%s' (from %s) is not in the show file any more; using '%s'",
                    name, where, cfg.setlist)
        return cfg
    log.info("setlist '%s' (from %s)", name, where)
    return cfg.with_setlist(name)


def with_service_dirs(cfg: Config) -> Config:
    """Under systemd with CacheDirectory=, a config without engine.cache_dir caches resampled
    stems there: the default (beside the config, in /etc) is read-only to the service."""
    cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if cfg.engine.cache_dir is None and cache:
        return replace(cfg, engine=replace(cfg.engine, cache_dir=Path(cache)))
    return cfg


def show_snapshot(daemon: Daemon) -> dict:
    st = daemon.status()
    return {"song": st["song_index"], "title": st["title"], "state": st["state"],
            "position_s": st["position_s"], "songs": st["songs"], "setlist": st["setlist"],
            "config": str(daemon.cfg.path), "mix": daemon.engine.mix.to_json()}


def restore_mix(daemon: Daemon, state: ShowState) -> None:
    """The live mix of the last run holds across a restart (a mute made for tonight is still
    wanted after a crash), and the journal says so: nobody should be surprised by it."""
    saved = state.read()[0].get("mix") if state.path is not None else None
    if not saved:
        return
    try:
        mix = LiveMix.from_json(str(saved))
    except MixError as exc:
        log.warning("state: the saved live mix is not used: %s", exc)
        return
    if not mix.empty:
        daemon.engine.mirror_mix(mix)
        log.warning("live mix kept from the last run: %s (`backtrack ctl mix reset` clears it)",
                    describe(mix.as_status()))


def run(config_path: str) -> int:
    """The daemon's life: config -> engine -> READY=1 -> watchdog/status/state ticks until
    SIGTERM -> fade out, close the device, save the state, exit 0."""
    faulthandler.enable()  # a watchdog SIGABRT leaves every thread's stack in the journal
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # on demand: kill -USR2 <pid>
    sink = setup_logging()
    notifier = systemd.Notifier()
    t0 = time.monotonic()
    cfg = with_service_dirs(config_mod.load(config_path))
    for w in cfg.warnings:
        log.warning("%s", w)
    state = ShowState(cfg.state_file)
    cfg = keep_setlist(cfg, state.setlist(), "the state file")
    daemon = Daemon(cfg)
    systemd.set_context(lambda: log_context(daemon))
    if cfg.resume and cfg.state_file is not None:
        idx, note = state.cue_index([s.title for s in cfg.songs])
        if idx is not None:
            daemon.engine.transport.current = State(CUED, idx)
            log.info("%s; cued song %d from its first frame", note, idx + 1)
        else:
            log.info("state: %s", note)
    hup = threading.Event()

    def on_signal(signum, _frame) -> None:
        if signum == signal.SIGHUP:
            hup.set()
            return
        daemon.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    log.info("main thread: %s", keep_gil_holders_running(cfg))
    daemon.start()
    restore_mix(daemon, state)
    try:
        wait_until_ready(daemon)
        log.info("garbage collector: %d objects of the running daemon frozen", freeze_heap())
        notifier.ready(summary(daemon))
        daemon.warm_cache()
        held = any(getattr(c, "any_held", lambda: False)() for c in daemon.components)
        if daemon.cfg.selftest.at_start or held:
            daemon.selftest.request("start" if not held else "footswitch held at start")
        log.info("READY after %.3f s (logging to %s, watchdog %s)", time.monotonic() - t0,
                 sink, f"{notifier.watchdog_s:g} s" if notifier.watchdog_s else "off")
        stall_s = MAX_STALL_S
        if notifier.watchdog_s:
            stall_s = min(MAX_STALL_S, notifier.watchdog_s / 2)
        tick = min(0.5, notifier.ping_interval or 0.5)
        stalled = False
        while True:
            now = time.monotonic()
            healthy = audio_healthy(daemon, stall_s)
            notifier.watchdog(healthy, now)
            if not healthy and not stalled:
                log.critical("the audio path has stalled; watchdog pings stopped so systemd "
                             "restarts the service")
                daemon.showlog_record("audio_stalled")
                notifier.status("audio path stalled: waiting for the watchdog to restart")
            elif healthy:
                if stalled:
                    log.warning("the audio path is moving again")
                notifier.status(summary(daemon))
            stalled = not healthy
            if hup.is_set():
                hup.clear()
                log.info("SIGHUP: reloading %s", config_path)
                notifier.reloading()
                ok, msg = reload_config(daemon, config_path)
                if ok:
                    daemon.warm_cache()
                    freeze_heap()  # the new show's objects, out of the collector's walks
                notifier.reloaded(f"{msg} | {summary(daemon)}")
                state = ShowState(daemon.cfg.state_file) if daemon.cfg.state_file != \
                    state.path else state
            state.update(show_snapshot(daemon), now)
            daemon.tend_warmer()
            if daemon.stopping.wait(tick):
                break
        log.info("stopping: fading out")
        notifier.stopping()
    finally:
        snapshot = show_snapshot(daemon)
        daemon.stop()
        state.update(snapshot, time.monotonic(), final=True)
        if state.error:
            log.error("%s", state.error)
    log.info("stopped")
    return 0

"""`backtrack run`: builds the object graph from the config and keeps it running.

config -> Engine (decode, writer, monitor threads) + control socket (+ footswitches, MIDI,
peer when configured). SIGTERM/SIGINT fade out and close the device; the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import asdict

from . import config as config_mod
from .audio.engine import Engine
from .config import Action, Config, parse_action
from .controls.socket import ControlServer
from .errors import UserError

log = logging.getLogger("backtrack")

FAULTS_ENABLED = os.environ.get("BACKTRACK_FAULTS") == "1"
COMMANDS = ("play", "stop", "pause", "play_stop", "next", "prev", "goto", "status")


def status_dict(engine: Engine, role: str = "leader", peer: str = "none") -> dict:
    s = engine.status()
    d = asdict(s)
    d.update({
        "song_index": s.song,           # 0-based
        "song": s.song + 1,             # as people count
        "songs": len(engine.cfg.songs),
        "position_s": round(s.seconds, 4),
        "position_frames": s.frame,
        "duration_s": round(s.duration, 3),
        "xruns": s.underruns,
        "role": role,
        "peer": peer,
    })
    for k in ("frame", "seconds", "duration", "underruns"):
        d.pop(k, None)
    return d


def request_action(req: dict) -> tuple[Action | None, str]:
    """A socket request -> an Action, or an error message naming what is valid."""
    cmd = str(req.get("cmd", "")).strip()
    if cmd.startswith("goto") and cmd != "goto":
        action = parse_action(cmd)
        if action is None:
            return None, f"'{cmd}' is not valid; use goto N with N a song number"
        return action, ""
    if cmd == "goto":
        song = req.get("song", req.get("arg"))
        if isinstance(song, bool) or not isinstance(song, int):
            return None, 'goto needs a song number: {"cmd": "goto", "song": 3}'
        return Action("goto", song), ""
    action = parse_action(cmd)
    if action is None:
        return None, f"unknown command '{cmd[:40]}'; valid: {', '.join(COMMANDS)}"
    return action, ""


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.server: ControlServer | None = None
        self.stopping = threading.Event()
        self.components: list = []  # footswitches/LED, MIDI, peer: each has close()
        self.role = "leader"
        self.peer_health = "none"

    def act(self, action: Action, source: str = "socket") -> tuple[bool, str]:
        """The one entry point for every control (socket, footswitch, MIDI): a hot-standby
        follower routes it through the leader here."""
        log.info("%s: %s", source, action)
        return self.engine.command(action)

    def handle(self, req: dict) -> dict:
        if req.get("cmd") == "status":
            return {"ok": True, "state": self.status()}
        if req.get("cmd") == "_fault" and FAULTS_ENABLED:
            return self._fault(req)
        action, err = request_action(req)
        if action is None:
            return {"ok": False, "error": err}
        ok, msg = self.act(action, "socket")
        reply: dict = {"ok": ok, "state": self.status()}
        if msg:
            reply["message" if ok else "error"] = msg
        return reply

    def _fault(self, req: dict) -> dict:
        """Fault injection for tests and benchmarks (only with BACKTRACK_FAULTS=1): stall the
        writer once (an underrun), or freeze it (a hung audio path)."""
        w = self.engine.writer
        if "stall_ms" in req:
            w.stall_s = float(req["stall_ms"]) / 1000
        if "freeze" in req:
            w.freeze = bool(req["freeze"])
        return {"ok": True, "state": self.status()}

    def status(self) -> dict:
        return status_dict(self.engine, self.role, self.peer_health)

    def _start_components(self) -> None:
        """Controls and peers are optional: each starts only when its config section exists,
        and one failing to start (no GPIO chip on a laptop) is reported, not fatal."""
        if self.cfg.footswitches or self.cfg.led:
            from .controls.gpio import start as start_gpio
            self._start_component("footswitches/LED", start_gpio)
        if self.cfg.midi:
            from .controls.midi import start as start_midi
            self._start_component("MIDI", start_midi)

    def _start_component(self, what: str, factory) -> None:
        try:
            comp = factory(self.cfg, self)
        except Exception as exc:  # noqa: BLE001 - the show goes on without it
            log.error("%s not started: %s", what, exc)
            return
        if comp is not None:
            self.components.append(comp)

    def start(self) -> None:
        self.engine.start()
        try:
            self.server = ControlServer(self.cfg.control.socket, self.handle)
        except OSError as exc:
            self.engine.stop()
            raise UserError(f"cannot create the control socket {self.cfg.control.socket}: "
                            f"{exc.strerror or exc} (set control.socket in the config)") from None
        self.server.start()
        self._start_components()
        st = self.engine.status()
        log.info("ready: %d songs, device %s (%s), %s", len(self.cfg.songs),
                 self.cfg.device.name, st.device, st.realtime)

    def stop(self) -> None:
        for comp in reversed(self.components):
            try:
                comp.close()
            except Exception:  # noqa: BLE001
                log.exception("closing %r", comp)
        if self.server is not None:
            self.server.close()
        self.engine.stop()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(config_path: str) -> int:
    setup_logging()
    cfg = config_mod.load(config_path)
    for w in cfg.warnings:
        log.warning("%s", w)
    daemon = Daemon(cfg)

    def on_signal(signum, _frame) -> None:
        log.info("signal %s: fading out and stopping", signal.Signals(signum).name)
        daemon.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.start()
    try:
        while not daemon.stopping.wait(0.5):
            pass
    finally:
        daemon.stop()
    log.info("stopped")
    return 0

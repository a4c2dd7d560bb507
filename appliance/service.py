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

    def handle(self, req: dict) -> dict:
        if req.get("cmd") == "status":
            return {"ok": True, "state": status_dict(self.engine)}
        if req.get("cmd") == "_fault" and FAULTS_ENABLED:
            return self._fault(req)
        action, err = request_action(req)
        if action is None:
            return {"ok": False, "error": err}
        ok, msg = self.engine.command(action)
        reply: dict = {"ok": ok, "state": status_dict(self.engine)}
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
        return {"ok": True, "state": status_dict(self.engine)}

    def start(self) -> None:
        self.engine.start()
        try:
            self.server = ControlServer(self.cfg.control.socket, self.handle)
        except OSError as exc:
            self.engine.stop()
            raise UserError(f"cannot create the control socket {self.cfg.control.socket}: "
                            f"{exc.strerror or exc} (set control.socket in the config)") from None
        self.server.start()
        st = self.engine.status()
        log.info("ready: %d songs, device %s (%s), %s", len(self.cfg.songs),
                 self.cfg.device.name, st.device, st.realtime)

    def stop(self) -> None:
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

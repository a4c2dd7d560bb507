"""OSC in (QLab, Companion, lighting desks) and the status broadcast to subscribers.

Why it is built this way:

- python-osc reads and writes the wire format; its blocking UDP server takes one datagram
  after another in one thread of our own (not its threading server, which starts a thread
  per datagram: a flood would start thousands), at the lowest real-time priority like the
  web remote's (`realtime.set_thread_network`: below every audio thread; not normal
  priority, where a busy process could preempt it while it holds the GIL the writer needs).
- Every command becomes the control socket's request and goes through `Daemon.handle`,
  like the socket's, the web remote's and (through `Daemon.act`) a footswitch's: one way
  to act, one parser, one set of answers. `/mute` and `/trim` name the live mix's socket
  commands and are answered by whatever the daemon answers for them.
- Bundles are not held until their time tag (python-osc's strict timing would sleep in the
  server thread: a bundle stamped next year would stop OSC): their messages act at once.
- Unknown addresses, wrong argument types, undecodable datagrams and senders outside
  `osc.allow` are refused and counted (`status.controls.osc`); playback never sees them.
- Subscribers (`/backtrack/subscribe [port]`) get `/backtrack/status` at
  `osc.status_rate_hz`; a subscription lasts `osc.subscription_s` unless renewed, so a
  console that went away stops being sent to.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError
from pythonosc.osc_server import BlockingOSCUDPServer

from ..config import Config, OscConfig
from ..realtime import set_thread_network
from ..threads import Worker
from .remote import split_hostport

log = logging.getLogger("backtrack.osc")

PREFIX = "/backtrack/"
TRIGGERS = ("play", "stop", "pause", "play_stop", "next", "prev", "vamp", "cancel")
"""Addresses without an argument. A single number is taken as a button's value (TouchOSC
and many consoles send 1 on press, 0 on release): non-zero acts, zero is ignored."""

MIX = ("mute", "unmute", "solo", "unsolo")
"""The live mix's stem commands: one text argument, the stem."""

REFUSALS = ("unknown_address", "bad_args", "malformed", "not_allowed", "too_many_subscribers")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def request_for(address: str, args: list) -> tuple[dict | None, str]:
    """An OSC message -> the control socket request it stands for, ({}, "") for a button's
    release (nothing to do), or (None, reason) with reason "unknown_address" or
    "bad_args: ...". Pure, so the mapping is tested without a socket."""
    if not address.startswith(PREFIX):
        return None, "unknown_address"
    verb = address[len(PREFIX):]
    if verb in TRIGGERS:
        if not args:
            return {"cmd": verb}, ""
        if len(args) == 1 and _number(args[0]):
            return ({"cmd": verb} if args[0] else {}), ""
        return None, f"bad_args: {address} takes no argument (or a button's value)"
    if verb == "goto":
        if len(args) == 1 and isinstance(args[0], str) and args[0].strip():
            return {"cmd": "goto", "song": args[0].strip()}, ""
        if len(args) == 1 and _number(args[0]) and float(args[0]).is_integer() \
                and 1 <= args[0] <= 100_000:
            return {"cmd": "goto", "song": int(args[0])}, ""
        return None, "bad_args: /backtrack/goto takes a song number (from 1) or a title"
    if verb == "jump":
        if 1 <= len(args) <= 2 and all(isinstance(a, str) and a.strip() for a in args):
            req = {"cmd": "jump", "to": args[0].strip()}
            if len(args) == 2:
                req["when"] = args[1].strip()
            return req, ""
        return None, "bad_args: /backtrack/jump takes a section name (and optionally when)"
    if verb == "setlist":
        if len(args) == 1 and isinstance(args[0], str) and args[0].strip():
            return {"cmd": "setlist", "name": args[0].strip()}, ""
        return None, "bad_args: /backtrack/setlist takes a setlist name"
    if verb in MIX:
        if len(args) == 1 and isinstance(args[0], str) and args[0].strip():
            return {"cmd": verb, "target": args[0].strip()}, ""
        return None, f"bad_args: {address} takes a stem name"
    if verb == "trim":
        if len(args) == 2 and isinstance(args[0], str) and args[0].strip() \
                and _number(args[1]) and -100 <= args[1] <= 24:
            return {"cmd": "trim", "target": args[0].strip(), "db": float(args[1])}, ""
        return None, "bad_args: /backtrack/trim takes a stem name and dB (-100 to 24)"
    return None, "unknown_address"


def status_message(st: dict) -> bytes:
    """`/backtrack/status` for subscribers: song (1-based, int), state, position (s,
    float), section, title, bar.beat, duration (s), next section, setlist."""
    b = OscMessageBuilder(address=PREFIX + "status")
    b.add_arg(int(st.get("song", 0)))
    b.add_arg(str(st.get("state", "")))
    b.add_arg(float(st.get("position_s", 0.0)), OscMessageBuilder.ARG_TYPE_FLOAT)
    b.add_arg(str(st.get("section") or ""))
    b.add_arg(str(st.get("title", "")))
    b.add_arg(str(st.get("bar_beat") or ""))
    b.add_arg(float(st.get("duration_s", 0.0)), OscMessageBuilder.ARG_TYPE_FLOAT)
    b.add_arg(str(st.get("next_section") or ""))
    b.add_arg(str(st.get("setlist", "")))
    return b.build().dgram


class _Dispatch(Dispatcher):
    """python-osc's server hands every datagram here; we parse, count and act."""

    def __init__(self, owner: OscControl):
        super().__init__()
        self.owner = owner

    def call_handlers_for_packet(self, data: bytes, client_address) -> list:
        try:
            self.owner.on_packet(data, client_address)
        except Exception:  # noqa: BLE001 - no datagram may stop OSC
            log.exception("OSC: datagram from %s", client_address)
        return []


class _Server(BlockingOSCUDPServer):
    """python-osc's blocking server, letting every datagram through to `_Dispatch` (its own
    check would drop what is not OSC silently; ours counts it)."""

    def verify_request(self, request, client_address) -> bool:
        return True


class OscControl:
    """The component: the OSC server thread, the broadcaster thread, the subscribers."""

    def __init__(self, oc: OscConfig, daemon, realtime: bool = True):
        self.oc = oc
        self.realtime = realtime  # the daemon runs real-time (engine.realtime_priority > 0)
        self.daemon = daemon
        host, port = split_hostport(oc.listen)
        try:
            self.server = _Server((host, port), _Dispatch(self))
        except OSError as exc:
            raise OSError(f"cannot listen on {oc.listen} (osc.listen): "
                          f"{exc.strerror or exc}") from None
        self.port = self.server.server_address[1]
        self.allow = [ipaddress.ip_network(n) for n in oc.allow]
        self.subscribers: dict[tuple[str, int], float] = {}  # address -> expiry (monotonic)
        self._sub_lock = threading.Lock()
        self.received = 0
        self.acted = 0
        self.ignored = 0
        self.command_errors = 0
        self.status_sent = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.last_refusal = ""
        self._stop = threading.Event()
        self.thread = _OscThread("backtrack-osc", self, self._serve, self.server.shutdown)
        self.sender = _OscThread("backtrack-osc-out", self, self._broadcast, self._stop.set)

    def start(self) -> None:
        self.thread.start()
        self.sender.start()
        log.info("OSC on %s (status to subscribers at %g Hz)", self.oc.listen,
                 self.oc.status_rate_hz)

    # ---- in ------------------------------------------------------------------------------
    def _serve(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def _allowed(self, host: str) -> bool:
        if not self.allow:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allow)

    def _refuse(self, reason: str, detail: str, client) -> None:
        self.refused[reason] += 1
        self.last_refusal = detail[:200]
        log.debug("OSC from %s refused: %s", client, detail)

    def on_packet(self, data: bytes, client) -> None:
        self.received += 1
        if not self._allowed(client[0]):
            self._refuse("not_allowed", f"{client[0]} is not in osc.allow", client)
            return
        try:
            messages = [m.message for m in OscPacket(data).messages]
        except (ParseError, ValueError, IndexError, TypeError, UnicodeDecodeError) as exc:
            self._refuse("malformed", f"not an OSC packet: {exc}", client)
            return
        for msg in messages:
            self.on_message(msg.address, list(msg.params), client)

    def on_message(self, address: str, args: list, client) -> None:
        if address in (PREFIX + "subscribe", PREFIX + "unsubscribe", PREFIX + "status"):
            self._subscription(address, args, client)
            return
        req, why = request_for(address, args)
        if req is None:
            reason, _, detail = why.partition(": ")
            self._refuse(reason, detail or f"unknown address {address[:80]}", client)
            return
        if not req:
            self.ignored += 1
            return
        reply = self.daemon.handle(req, "osc")
        self.acted += 1
        if not reply.get("ok"):
            self.command_errors += 1
            log.info("OSC %s: %s", address, reply.get("error"))

    def _subscription(self, address: str, args: list, client) -> None:
        port = client[1]
        if len(args) == 1 and _number(args[0]) and float(args[0]).is_integer() \
                and 1 <= args[0] <= 65535:
            port = int(args[0])
        elif args:
            self._refuse("bad_args", f"{address} takes no argument or a port (1-65535)",
                         client)
            return
        who = (client[0], port)
        if address.endswith("/status"):  # a one-off query: the status to the sender
            self._send_status([who])
            return
        with self._sub_lock:
            if address.endswith("/unsubscribe"):
                self.subscribers.pop(who, None)
                return
            self._expire(time.monotonic())
            if who not in self.subscribers and len(self.subscribers) >= self.oc.max_subscribers:
                self._refuse("too_many_subscribers", f"{self.oc.max_subscribers} subscribers "
                             "already (osc.max_subscribers)", client)
                return
            self.subscribers[who] = time.monotonic() + self.oc.subscription_s
        log.info("OSC: %s:%d subscribed to status", *who)
        self._send_status([who])

    # ---- out -----------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for who, until in list(self.subscribers.items()):
            if until < now:
                del self.subscribers[who]

    def _send_status(self, targets: list[tuple[str, int]]) -> None:
        if not targets:
            return
        dgram = status_message(self.daemon.status())
        for who in targets:
            try:
                self.server.socket.sendto(dgram, who)
                self.status_sent += 1
            except OSError:
                pass  # a subscriber whose network went away: it expires

    def _broadcast(self) -> None:
        rate = self.oc.status_rate_hz
        period = 1.0 / rate if rate > 0 else 1.0
        next_t = time.monotonic()
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t = max(next_t + period, time.monotonic())
            if rate <= 0:
                continue
            with self._sub_lock:
                self._expire(time.monotonic())
                targets = list(self.subscribers)
            try:
                self._send_status(targets)
            except Exception:  # noqa: BLE001 - the broadcast must outlive a bad status
                log.exception("OSC status broadcast")

    # ---- the component -------------------------------------------------------------------
    def status(self) -> dict:
        return {"osc": {
            "listen": self.oc.listen, "port": self.port, "thread": self.thread.rt_status,
            "received": self.received, "acted": self.acted, "ignored": self.ignored,
            "command_errors": self.command_errors, "refused": dict(self.refused),
            "last_refusal": self.last_refusal, "subscribers": len(self.subscribers),
            "status_sent": self.status_sent,
        }}

    def close(self) -> None:
        self.sender.halt(timeout=3)
        if self.thread.is_alive():
            self.thread.halt(timeout=3)
        with contextlib.suppress(OSError):
            self.server.server_close()


class _OscThread(Worker):
    """A thread of the OSC component, a `threads.Worker` like every thread of the daemon:
    the network threads' priority, a loop given by the component, a way to end it."""

    def __init__(self, name: str, owner: OscControl, body, stop):
        super().__init__(name)
        self.owner, self.body, self.stop = owner, body, stop

    def take_priority(self) -> str:
        return set_thread_network(self.owner.realtime)

    def loop(self) -> None:
        self.body()

    def wakeup(self) -> None:
        self.stop()


def start(cfg: Config, daemon) -> OscControl | None:
    """Called by the daemon when `osc` is configured."""
    if cfg.osc is None:
        return None
    control = OscControl(cfg.osc, daemon, cfg.engine.realtime_priority > 0)
    control.start()
    return control


__all__ = ["OscControl", "request_for", "status_message", "start"]

"""The phone/tablet remote: a web page and its HTTP/WebSocket API, served by the daemon.

Why it is built this way:

- aiohttp in one thread of its own with its own asyncio loop, at the lowest real-time
  priority (`realtime.set_thread_network`: below every audio thread, and above the box's
  ordinary processes only so that none of them can preempt it while it holds the GIL the
  writer needs; measured). It reaches the show only
  through `Daemon.handle` (the control socket's handler: status, and every command, which
  goes on to `Daemon.act` and `Daemon.perform` like a footswitch's) and `Daemon.status`,
  both of which hold the engine lock for a moment only. Commands run in one worker
  thread, in order, so a slow one (a setlist chosen, a song prepared) never stalls the
  pages' updates.
- One status for everyone: a broadcaster computes the status a few times a second (and
  at once when the engine says something changed), serialises it once, and each page's
  sender sends the newest one; a slow phone skips versions instead of queueing them.
- Reading is open (`GET /api/status`, the page, its WebSocket updates); control needs the
  PIN from `remote.pin_file`, as the `X-Backtrack-Pin` header or through the page's login
  (a session cookie, HttpOnly, SameSite=Strict). Wrong PINs are counted and limited per
  client address; requests and WebSocket messages have size limits; anything refused is
  answered (never a traceback) and counted in `status.controls.remote`.
- The static files (HTML, CSS, JS) ship in the package: the stage network has no
  internet, so no CDN and no build step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import WSMsgType, web

from ..config import Config, RemoteConfig
from ..realtime import set_thread_network
from ..threads import Worker

log = logging.getLogger("backtrack.remote")

STATIC = Path(__file__).with_name("static")
MAX_BODY = 16 * 1024           # bytes of a request body (a command is under 200)
MAX_WS_MESSAGE = 4 * 1024      # bytes of one WebSocket message from a page
MAX_WS_MALFORMED = 20          # malformed messages before a page's connection is closed
PIN_FAILS = 5                  # wrong PINs from one address ...
PIN_WINDOW_S = 60.0            # ... within this long: that address waits out the window
PIN_WRONG_DELAY_S = 0.3        # every wrong PIN is answered this much later
MIN_PIN = 4                    # characters
SESSION_S = 12 * 3600          # a login lasts a show day
MAX_SESSIONS = 64
STATUS_REUSE_S = 0.05         # GET /api/status answers from a status this young (below)
SEND_TIMEOUT_S = 5.0           # a page that takes longer to take an update is dropped
COOKIE = "backtrack_session"
REFUSALS = ("wrong_pin", "rate_limited", "no_pin", "read_only", "too_large", "malformed",
            "ws_malformed", "ws_too_large", "ws_not_authorized", "too_many_clients",
            "forbidden", "bad_origin")


class PinError(Exception):
    """The PIN file cannot be used; the page then runs read-only and says why."""


def read_pin(path: Path | None) -> str | None:
    """The PIN from its file (surrounding whitespace ignored); None when not configured.
    Raises PinError with a plain message for a missing, unreadable or too short one."""
    if path is None:
        return None
    try:
        pin = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise PinError(f"remote.pin_file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PinError(f"remote.pin_file {path} cannot be read: {exc}") from None
    if len(pin) < MIN_PIN or any(c.isspace() for c in pin):
        raise PinError(f"remote.pin_file {path}: the PIN must be at least {MIN_PIN} "
                       "characters without spaces")
    return pin


def split_hostport(text: str) -> tuple[str, int]:
    """"0.0.0.0:8080" / "[::]:8080" -> (host, port) (the config has checked the form)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def show_info(daemon) -> dict:
    """What the page needs besides the status, which changes only with the song or the
    setlist: the setlists, the songs of the one in use, the current song's sections (name
    and start in seconds, for the position bar and the jump buttons) and stems (the mix)."""
    e = daemon.engine
    with e.lock:
        cfg = e.cfg
        idx = e.transport.current.song
    song = cfg.songs[idx]
    rate = cfg.device.rate
    sections = []
    if song.structure is not None:
        sections = [{"name": s.name, "start_s": round(s.frame / rate, 3)}
                    for s in song.structure.sections]
    stems: list[str] = []
    for st in song.stems:
        if st.label not in stems:
            stems.append(st.label)
    return {"type": "show", "setlist": cfg.setlist, "songs": [s.title for s in cfg.songs],
            "setlists": daemon.setlists(), "song_index": idx, "sections": sections,
            "stems": stems}


class Counters:
    """What `status.controls.remote` shows: requests, commands, pages, every refusal by
    reason. Touched only in the server's thread; read from any (plain ints)."""

    def __init__(self) -> None:
        self.requests = 0
        self.commands = 0
        self.command_errors = 0
        self.logins = 0
        self.pages = 0
        self.pages_max = 0
        self.updates_sent = 0
        self.refused = dict.fromkeys(REFUSALS, 0)


class PinGuard:
    """The PIN check with its rate limit: an address with PIN_FAILS wrong PINs in the last
    PIN_WINDOW_S is refused without a check until the oldest of them is older than that."""

    def __init__(self, pin: str | None, counters: Counters):
        self.pin = pin
        self.counters = counters
        self.fails: dict[str, deque[float]] = {}

    def limited(self, addr: str, now: float) -> bool:
        q = self.fails.get(addr)
        if not q:
            return False
        while q and now - q[0] > PIN_WINDOW_S:
            q.popleft()
        if not q:
            del self.fails[addr]
            return False
        return len(q) >= PIN_FAILS

    def check(self, addr: str, given: str) -> str:
        """"ok", "wrong_pin", "rate_limited" or "read_only" (no PIN configured)."""
        now = time.monotonic()
        if self.pin is None:
            return "read_only"
        if self.limited(addr, now):
            return "rate_limited"
        if hmac.compare_digest(given.encode("utf-8", "replace"), self.pin.encode()):
            self.fails.pop(addr, None)
            return "ok"
        if len(self.fails) > 4096:  # a spray from many addresses: keep the table bounded
            self.fails.clear()
        self.fails.setdefault(addr, deque(maxlen=PIN_FAILS)).append(now)
        return "wrong_pin"


class RemoteServer:
    """The component (`threads.Component`): the web server thread and its state."""

    def __init__(self, rc: RemoteConfig, daemon, pin: str | None, pin_note: str,
                 realtime: bool = True):
        self.rc = rc
        self.realtime = realtime  # the daemon runs real-time (engine.realtime_priority > 0)
        self.daemon = daemon
        self.counters = Counters()
        self.guard = PinGuard(pin, self.counters)
        self.pin_note = pin_note
        self.sessions: dict[str, float] = {}
        self.clients: set[_Page] = set()
        self.latest: str = ""
        self._status_reply: tuple[float, bytes] = (0.0, b"")  # (monotonic, GET /api/status)
        self.latest_show: str = ""
        self._show_key: tuple = ()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._commands = ThreadPoolExecutor(1, thread_name_prefix="backtrack-webcmd")
        host, port = split_hostport(rc.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(128)
        except OSError as exc:
            self.sock.close()
            raise OSError(f"cannot listen on {rc.listen} (remote.listen): "
                          f"{exc.strerror or exc}") from None
        self.port = self.sock.getsockname()[1]
        self.thread = _WebThread(self)

    # ---- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()
        self._ready.wait(10)

    def run_loop(self) -> None:
        """The thread's life (`_WebThread.loop`): serve until `request_stop`."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception:  # noqa: BLE001 - the show goes on without its remote
            log.exception("web remote stopped")
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        app.router.add_get("/", self.page)
        app.router.add_get("/api/status", self.api_status)
        app.router.add_get("/api/show", self.api_show)
        app.router.add_post("/api/login", self.api_login)
        app.router.add_post("/api/logout", self.api_logout)
        app.router.add_post("/api/cmd", self.api_cmd)
        app.router.add_get("/api/ws", self.api_ws)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        site = web.SockSite(runner, self.sock, shutdown_timeout=1.0)
        await site.start()
        broadcaster = asyncio.ensure_future(self._broadcast())
        log.info("web remote on http://%s/ (%s)", self.rc.listen, self.pin_note)
        self._ready.set()
        await self._stop.wait()
        broadcaster.cancel()
        for page in list(self.clients):
            with contextlib.suppress(Exception):
                await page.ws.close(code=1001, message=b"daemon stopping")
        await runner.cleanup()

    def request_stop(self) -> None:
        """From any thread: end `run_loop` (pages closed, socket released)."""
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    def on_engine(self, _event: str, _engine) -> None:
        """Engine listener (called under the engine lock, maybe in a real-time thread):
        only wake the broadcaster, so pages see a change at once."""
        loop, changed = self.loop, self._changed
        if loop is None or changed is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_change)

    def _on_change(self) -> None:
        self._status_reply = (0.0, b"")
        if self._changed is not None:
            self._changed.set()

    # ---- updates ---------------------------------------------------------------------------
    async def _broadcast(self) -> None:
        period = 1.0 / self.rc.update_hz
        assert self._changed is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), period)
            self._changed.clear()
            if not self.clients:
                continue
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a status that failed once: try next tick
                log.exception("web remote: status")
                await asyncio.sleep(period)
                continue
            for page in list(self.clients):
                page.wake.set()

    def refresh(self) -> None:
        """Compute the status (and the show, when the song or setlist changed) once for
        every page."""
        st = self.daemon.status()
        self.latest = json.dumps({"type": "status", "state": st}, separators=(",", ":"))
        key = (st.get("setlist"), st.get("song_index"), st.get("songs"),
               id(self.daemon.engine.cfg))
        if key != self._show_key or not self.latest_show:
            self._show_key = key
            self.latest_show = json.dumps(show_info(self.daemon), separators=(",", ":"))

    # ---- plumbing --------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        self.counters.requests += 1
        try:
            resp = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            self.counters.refused["too_large"] += 1
            return _error(413, f"request body over {MAX_BODY} bytes")
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.status != 404:
                return _error(exc.status, exc.reason)
            raise
        except Exception:  # noqa: BLE001 - one request's trouble never stops the server
            log.exception("web remote: %s %s", request.method, request.path)
            return _error(500, "internal error (see the journal)")
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    def _addr(self, request: web.Request) -> str:
        return request.remote or "?"

    def _session_ok(self, request: web.Request) -> bool:
        token = request.cookies.get(COOKIE, "")
        exp = self.sessions.get(token) if token else None
        if exp is None:
            return False
        if exp < time.monotonic():
            self.sessions.pop(token, None)
            return False
        return True

    def _same_origin(self, request: web.Request) -> bool:
        """A browser's POST from another site's page carries that site's Origin: refused
        (the session cookie is SameSite=Strict as well)."""
        origin = request.headers.get("Origin")
        if not origin or origin == "null":
            return origin is None
        return origin.split("://", 1)[-1] == request.host

    async def _body(self, request: web.Request) -> dict | None:
        """The JSON object of a POST, or None (counted as malformed)."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY,
                                                actual_size=request.content_length)
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self.counters.refused["malformed"] += 1
            return None
        return body

    async def _wrong_pin(self, reason: str) -> web.Response:
        self.counters.refused[reason] += 1
        if reason == "wrong_pin":
            await asyncio.sleep(PIN_WRONG_DELAY_S)
            return _error(403, "wrong PIN")
        if reason == "rate_limited":
            return _error(429, f"too many wrong PINs; wait up to {PIN_WINDOW_S:g} s")
        return _error(403, "this remote is read-only (no remote.pin_file)")

    async def run_command(self, req: dict) -> dict:
        """A command through `Daemon.handle`, in the command thread (in order)."""
        loop = asyncio.get_running_loop()
        self.counters.commands += 1
        reply = await loop.run_in_executor(self._commands, self.daemon.handle, req, "web")
        self._on_change()
        if not reply.get("ok"):
            self.counters.command_errors += 1
        return reply

    def command_request(self, body: dict) -> tuple[dict | None, str]:
        """A page's command -> the socket request it stands for, or why it is refused:
        fault injection and other underscore commands are never reachable from the
        network, and the PIN never travels on into the daemon's log."""
        cmd = body.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            return None, 'a command is a JSON object like {"cmd": "next"}'
        if cmd.strip().startswith("_"):
            return None, f"'{cmd[:40]}' is not available from the remote"
        req = {k: v for k, v in body.items() if k not in ("id", "pin")}
        return req, ""

    # ---- endpoints -------------------------------------------------------------------------
    async def page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def api_status(self, _request: web.Request) -> web.Response:
        """The socket's status reply. Requests within STATUS_REUSE_S of each other share one
        (a change in the engine or a command clears it), so a flood of requests costs the
        daemon at most 20 status computations a second, not one per request."""
        now = time.monotonic()
        t, body = self._status_reply
        if not body or now - t > STATUS_REUSE_S:
            body = json.dumps(self.daemon.handle({"cmd": "status"}, "web")).encode()
            self._status_reply = (now, body)
        return web.Response(body=body, content_type="application/json")

    async def api_show(self, _request: web.Request) -> web.Response:
        return web.json_response(show_info(self.daemon))

    async def api_login(self, request: web.Request) -> web.Response:
        if not self._same_origin(request):
            self.counters.refused["bad_origin"] += 1
            return _error(403, "request from another site's page")
        body = await self._body(request)
        if body is None:
            return _error(400, 'send {"pin": "..."}')
        pin = body.get("pin")
        if not isinstance(pin, str):
            self.counters.refused["malformed"] += 1
            return _error(400, 'send {"pin": "..."}')
        verdict = self.guard.check(self._addr(request), pin)
        if verdict != "ok":
            log.warning("web remote: %s from %s", verdict.replace("_", " "),
                        self._addr(request))
            return await self._wrong_pin(verdict)
        token = secrets.token_urlsafe(24)
        if len(self.sessions) >= MAX_SESSIONS:
            self.sessions.pop(min(self.sessions, key=self.sessions.__getitem__))
        self.sessions[token] = time.monotonic() + SESSION_S
        self.counters.logins += 1
        resp = web.json_response({"ok": True})
        resp.set_cookie(COOKIE, token, max_age=SESSION_S, httponly=True, samesite="Strict",
                        path="/")
        return resp

    async def api_logout(self, request: web.Request) -> web.Response:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def api_cmd(self, request: web.Request) -> web.Response:
        if not self._same_origin(request):
            self.counters.refused["bad_origin"] += 1
            return _error(403, "request from another site's page")
        pin = request.headers.get("X-Backtrack-Pin")
        if pin is not None:
            verdict = self.guard.check(self._addr(request), pin)
            if verdict != "ok":
                return await self._wrong_pin(verdict)
        elif not self._session_ok(request):
            if self.guard.pin is None:
                return await self._wrong_pin("read_only")
            self.counters.refused["no_pin"] += 1
            return _error(401, "control needs the PIN: header X-Backtrack-Pin, or log in")
        body = await self._body(request)
        if body is None:
            return _error(400, 'send a JSON object like {"cmd": "next"}')
        req, err = self.command_request(body)
        if req is None:
            self.counters.refused["forbidden"] += 1
            return _error(400, err)
        return web.json_response(await self.run_command(req))

    async def api_ws(self, request: web.Request) -> web.StreamResponse:
        if len(self.clients) >= self.rc.max_clients:
            self.counters.refused["too_many_clients"] += 1
            return _error(503, f"{self.rc.max_clients} pages are open (remote.max_clients)")
        # compress=False: per-message deflate would give every page two zlib contexts
        # (about half a megabyte, locked in memory like all of the daemon's: mlockall)
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, heartbeat=15.0,
                                   autoping=True, compress=False)
        await ws.prepare(request)
        page = _Page(ws, self._session_ok(request))
        self.clients.add(page)
        c = self.counters
        c.pages = len(self.clients)
        c.pages_max = max(c.pages_max, c.pages)
        sender = asyncio.ensure_future(self._sender(page))
        try:
            await ws.send_str(json.dumps({"type": "hello", "control": self.guard.pin is not None,
                                          "authorized": page.authorized,
                                          "note": self.pin_note}))
            # the newest status now, not at the next tick: to this page alone (waking every
            # page on every connection made 100 pages opening at once cost 100 x 100 sends)
            if self.latest and self.latest_show and len(self.clients) > 1:
                page.wake.set()  # others are open, so the broadcaster keeps `latest` fresh
            elif self._changed is not None:
                self._changed.set()
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._ws_message(page, request, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._ws_refuse(page, "ws_malformed", "binary messages are not "
                                          "understood; send JSON text")
                elif msg.type == WSMsgType.ERROR:
                    if getattr(msg.data, "code", None) == 1009:  # over max_msg_size
                        c.refused["ws_too_large"] += 1
                    else:
                        c.refused["ws_malformed"] += 1
                    break
                if page.malformed >= MAX_WS_MALFORMED:
                    await ws.close(code=1008, message=b"too many malformed messages")
                    break
        finally:
            sender.cancel()
            self.clients.discard(page)
            c.pages = len(self.clients)
        return ws

    async def _ws_refuse(self, page: _Page, reason: str, error: str, mid=None) -> None:
        self.counters.refused[reason] += 1
        page.malformed += reason == "ws_malformed"
        with contextlib.suppress(Exception):
            await page.ws.send_str(json.dumps({"type": "reply", "id": mid, "ok": False,
                                               "error": error}))

    async def _ws_message(self, page: _Page, request: web.Request, data: str) -> None:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await self._ws_refuse(page, "ws_malformed", 'a message is a JSON object like '
                                  '{"cmd": "next", "id": 1}')
            return
        mid = body.get("id") if isinstance(body.get("id"), (int, str)) else None
        req, err = self.command_request(body)
        if req is None:
            await self._ws_refuse(page, "ws_malformed", err, mid)
            return
        if req["cmd"] in ("status", "setlists"):
            reply = self.daemon.handle(req, "web")
        elif not (page.authorized and self._session_ok(request)):
            page.authorized = False
            await self._ws_refuse(page, "ws_not_authorized", "control needs the PIN: log in",
                                  mid)
            return
        else:
            reply = await self.run_command(req)
        reply = {"type": "reply", "id": mid, **reply}
        reply.pop("state", None)  # the status follows at once on its own
        await page.ws.send_str(json.dumps(reply))

    async def _sender(self, page: _Page) -> None:
        """Newest status (and show, when it changed) to one page; skips what it missed."""
        sent_show = ""
        try:
            while not page.ws.closed:
                await page.wake.wait()
                page.wake.clear()
                if self.latest_show and self.latest_show is not sent_show:
                    sent_show = self.latest_show
                    await asyncio.wait_for(page.ws.send_str(sent_show), SEND_TIMEOUT_S)
                if self.latest:
                    await asyncio.wait_for(page.ws.send_str(self.latest), SEND_TIMEOUT_S)
                    self.counters.updates_sent += 1
        except (TimeoutError, ConnectionError, RuntimeError):
            with contextlib.suppress(Exception):
                await page.ws.close(code=1011, message=b"too slow")

    # ---- the component ---------------------------------------------------------------------
    def status(self) -> dict:
        c = self.counters
        return {"remote": {
            "listen": self.rc.listen, "port": self.port, "control": self.pin_note,
            "thread": self.thread.rt_status, "pages": c.pages, "pages_max": c.pages_max,
            "requests": c.requests, "commands": c.commands,
            "command_errors": c.command_errors, "logins": c.logins,
            "updates_sent": c.updates_sent, "refused": dict(c.refused),
        }}

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.daemon.engine.listeners.remove(self.on_engine)
        self.thread.halt(timeout=5)
        self._commands.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            self.sock.close()


class _WebThread(Worker):
    """The web server's thread, a `threads.Worker` like every thread of the daemon: its own
    asyncio loop, the network threads' priority."""

    def __init__(self, server: RemoteServer):
        super().__init__("backtrack-web")
        self.server = server

    def take_priority(self) -> str:
        return set_thread_network(self.server.realtime)

    def loop(self) -> None:
        self.server.run_loop()

    def wakeup(self) -> None:
        self.server.request_stop()


class _Page:
    """One open WebSocket: its wake-up, whether it logged in, its malformed messages."""

    __slots__ = ("ws", "wake", "authorized", "malformed")

    def __init__(self, ws: web.WebSocketResponse, authorized: bool):
        self.ws = ws
        self.wake = asyncio.Event()
        self.authorized = authorized
        self.malformed = 0


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def start(cfg: Config, daemon) -> RemoteServer | None:
    """Called by the daemon when `remote` is configured. A PIN file that cannot be used
    leaves the page running read-only (and says so); an address that cannot be bound is
    an error the daemon reports (the show goes on without the page)."""
    rc = cfg.remote
    if rc is None:
        return None
    try:
        pin = read_pin(rc.pin_file)
        note = "control with the PIN" if pin else "read-only (no remote.pin_file)"
    except PinError as exc:
        log.error("web remote is read-only: %s", exc)
        pin, note = None, f"read-only ({exc})"
    server = RemoteServer(rc, daemon, pin, note, cfg.engine.realtime_priority > 0)
    daemon.engine.listeners.append(server.on_engine)
    server.start()
    return server


__all__ = ["RemoteServer", "PinGuard", "read_pin", "show_info", "start"]

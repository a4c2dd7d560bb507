"""The local control socket: a Unix stream socket, one JSON object per line each way.

One thread with `selectors` serves every client, so a stuck or hostile client (a huge line,
garbage, a hundred connections) costs a reply and never a thread or the daemon. Requests:
`{"cmd": "next"}`, `{"cmd": "goto", "song": 3}` (or `{"cmd": "goto 3"}`), `{"cmd": "status"}`;
replies `{"ok": true, "state": {...}}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
from collections.abc import Callable
from pathlib import Path

from ..threads import Worker

log = logging.getLogger("backtrack.socket")

MAX_LINE = 64 * 1024
MAX_CLIENTS = 64

Handler = Callable[[dict], dict]


def parse_request(line: bytes) -> tuple[dict | None, str]:
    """(request, "") or (None, error message) for a line from a client."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"malformed JSON: {exc}"
    if not isinstance(req, dict):
        return None, 'a request is a JSON object like {"cmd": "play"}'
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        return None, 'missing "cmd" (text), e.g. {"cmd": "next"}'
    return req, ""


class ControlServer(Worker):
    def __init__(self, path: str, handler: Handler, mode: int = 0o660, rt_priority: int = 0):
        # Below the writer, for the GIL's sake (see appliance/realtime.py).
        super().__init__("backtrack-socket", rt_priority)
        self.path = path
        self.handler = handler
        self.mode = mode
        self.sel = selectors.DefaultSelector()
        self._bufs: dict[socket.socket, bytearray] = {}
        self._discarding: set[socket.socket] = set()
        self.sock = self._bind()

    def _bind(self) -> socket.socket:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists() or p.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except OSError:
                p.unlink()  # stale socket from a daemon that died
            else:
                probe.close()
                raise OSError(f"another daemon is already listening on {self.path}")
            finally:
                probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        os.chmod(self.path, self.mode)
        s.listen(128)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)
        return s

    def step(self) -> None:
        try:
            events = self.sel.select(timeout=0.2)
        except OSError:
            return
        for key, _mask in events:
            sock = key.fileobj
            try:
                if sock is self.sock:
                    self._accept()
                else:
                    self._read(sock)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - one client's trouble never stops the daemon
                log.exception("control client error")
                self._drop(sock)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        if len(self._bufs) >= MAX_CLIENTS:
            with contextlib.suppress(OSError):
                conn.sendall(_reply({"ok": False, "error": "too many clients"}))
            conn.close()
            return
        conn.setblocking(False)
        self._bufs[conn] = bytearray()
        self.sel.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buf = self._bufs[conn]
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_LINE:
                    if conn not in self._discarding:
                        self._send(conn, {"ok": False,
                                          "error": f"line longer than {MAX_LINE} bytes"})
                    self._discarding.add(conn)
                    buf.clear()
                return
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            if conn in self._discarding:
                self._discarding.discard(conn)  # the rest of the oversized line
                continue
            if not line.strip():
                continue
            if len(line) > MAX_LINE:
                self._send(conn, {"ok": False, "error": f"line longer than {MAX_LINE} bytes"})
                continue
            req, err = parse_request(line)
            if req is None:
                self._send(conn, {"ok": False, "error": err})
                continue
            try:
                reply = self.handler(req)
            except Exception as exc:  # noqa: BLE001
                log.exception("handler failed for %r", req)
                reply = {"ok": False, "error": f"internal error: {exc}"}
            self._send(conn, reply)

    def _send(self, conn: socket.socket, reply: dict) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(_reply(reply))
            conn.setblocking(False)
        except OSError:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._bufs.pop(conn, None)
        self._discarding.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def close(self) -> None:
        self.halt(timeout=2)
        for conn in list(self._bufs):
            self._drop(conn)
        with contextlib.suppress(OSError):
            self.sel.unregister(self.sock)
            self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _reply(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

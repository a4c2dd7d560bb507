#!/usr/bin/env python3
"""What deploy/install.sh asks of the installed config and of a running player.

Standard library only (PyYAML is used when the interpreter has it, a line scan when not),
so it runs under the box's python3 before the venv exists, under fakeroot in the tests,
and under the venv's python.

    player-probe.py socket CONFIG    print control.socket (the default when the config has
                                     none, or cannot be read)
    player-probe.py peer CONFIG      exit 0: the config has a peer: section; 1: it has not;
                                     2: the config cannot be read (say why on stderr)
    player-probe.py status SOCKET    ask the player {"cmd": "status"}; print its state
                                     (playing/paused/cued/stopped), a tab, and one line
                                     saying what it plays; exit 0. Exit 3 (and print
                                     nothing) when nobody answers within 3 s; any other
                                     status means the probe itself failed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys

DEFAULT_SOCKET = "/run/backtrack/control.sock"
NO_ANSWER = 3


class Unreadable(Exception):
    pass


def _top_level(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise Unreadable(f"{path}: {exc.strerror or exc}") from None
    try:
        import yaml
    except ImportError:
        return _scan(text)
    try:
        top = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Unreadable(f"{path}: not valid YAML ({exc})") from None
    return top if isinstance(top, dict) else {}


def _scan(text: str) -> dict:
    """Without PyYAML: the top-level keys, and control.socket in block or flow style."""
    top: dict = {}
    section = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"([A-Za-z_][\w-]*)\s*:\s*(.*?)\s*$", line)
        if m and not line[0].isspace():
            section, rest = m.group(1), m.group(2)
            top[section] = None if rest in ("", "~", "null") or rest.startswith("#") else rest
            if section == "control":
                f = re.search(r"socket\s*:\s*(\"[^\"]*\"|'[^']*'|[^,}\s#]+)", rest)
                if f:
                    top["control"] = {"socket": f.group(1).strip("\"'")}
            continue
        if section == "control":
            f = re.match(r"\s+socket\s*:\s*(\"[^\"]*\"|'[^']*'|[^\s#]+)", line)
            if f:
                top["control"] = {"socket": f.group(1).strip("\"'")}
        elif section is not None and top.get(section) is None:
            top[section] = {}
    return top


def config_socket(path: str) -> str:
    try:
        control = _top_level(path).get("control")
    except Unreadable:
        return DEFAULT_SOCKET
    sock = control.get("socket") if isinstance(control, dict) else None
    return sock if isinstance(sock, str) and sock else DEFAULT_SOCKET


def has_peer(path: str) -> int:
    try:
        top = _top_level(path)
    except Unreadable as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0 if top.get("peer") is not None else 1


def ask_status(path: str, timeout: float = 3.0) -> dict | None:
    """The player's reply's "state", or None when nobody answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    cwd = None
    try:
        if len(os.fsencode(path)) > 100:
            # a Unix socket's path is limited to 107 bytes, which a deep folder (a --root
            # image, a test's temporary folder) exceeds: connect by its name from its folder
            cwd = os.open(".", os.O_RDONLY)
            folder, path = os.path.split(path)
            os.chdir(folder or ".")
        s.connect(path)
        s.sendall(b'{"cmd": "status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        reply = json.loads(buf)
    except (OSError, ValueError):
        return None
    finally:
        if cwd is not None:
            os.fchdir(cwd)
            os.close(cwd)
        s.close()
    state = reply.get("state") if isinstance(reply, dict) else None
    return state if isinstance(state, dict) and isinstance(state.get("state"), str) else None


def _clock(seconds) -> str:
    try:
        s = int(float(seconds))
    except (TypeError, ValueError):
        s = 0
    return f"{s // 60}:{s % 60:02d}"


def describe(st: dict) -> str:
    line = f'song {st.get("song", "?")}/{st.get("songs", "?")} "{st.get("title", "")}"'
    if st.get("state") in ("playing", "paused"):
        line += f' at {_clock(st.get("position_s"))}'
        if st.get("duration_s"):
            line += f' of {_clock(st.get("duration_s"))}'
    extra = [f'setlist {st["setlist"]}'] if st.get("setlist") else []
    if st.get("role") and st.get("role") != "leader":
        extra.append(f'{st["role"]} of a pair')
    return line + (f' ({", ".join(extra)})' if extra else "")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("socket", "peer", "status"):
        print(__doc__, file=sys.stderr)
        return 64
    what, arg = argv
    if what == "socket":
        print(config_socket(arg))
        return 0
    if what == "peer":
        return has_peer(arg)
    st = ask_status(arg)
    if st is None:
        return NO_ANSWER
    print(f'{st["state"]}\t{describe(st)}')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

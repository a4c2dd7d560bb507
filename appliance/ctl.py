"""`backtrack ctl`: talk to a running daemon over its control socket."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from .actions import COMMANDS, SPELLED_COMMANDS, parse_action
from .config import DEFAULT_SOCKET
from .errors import UserError


class Client:
    """One connection, JSON lines each way."""

    def __init__(self, path: str, timeout: float = 10.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            raise UserError(f"no daemon is listening on {path} (is `backtrack run` started? "
                            "use --socket PATH or $BACKTRACK_SOCKET)") from None
        except OSError as exc:
            raise UserError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        self.file = self.sock.makefile("rb")

    def request(self, req: dict) -> dict:
        try:
            self.sock.sendall((json.dumps(req) + "\n").encode())
            line = self.file.readline()
        except OSError as exc:
            raise UserError(f"the daemon did not answer: {exc}") from None
        if not line:
            raise UserError("the daemon closed the connection")
        return json.loads(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def socket_path(arg: str | None) -> str:
    return arg or os.environ.get("BACKTRACK_SOCKET") or DEFAULT_SOCKET


def words_to_request(words: list[str]) -> dict:
    """`ctl`'s words -> a socket request. `goto` takes a number or a title, quoted or not
    (`goto Two Hearts` is the title "Two Hearts"); the daemon resolves a title in the
    setlist in use, so a typo comes back naming the songs there."""
    verb = words[0]
    if verb not in COMMANDS:
        raise UserError(f"unknown command '{verb}'; valid: {', '.join(SPELLED_COMMANDS)}")
    if verb == "goto":
        action = parse_action(" ".join(words), titles=True) if len(words) > 1 else None
        if action is None:
            raise UserError('goto needs a song number or title: backtrack ctl goto 3, '
                            'backtrack ctl goto "Ballad"')
        return {"cmd": "goto", "song": action.arg}
    if verb == "setlist":
        if len(words) < 2:
            raise UserError("setlist needs a name: backtrack ctl setlist friday "
                            "(`backtrack ctl setlists` lists them)")
        return {"cmd": "setlist", "name": " ".join(words[1:])}
    if verb == "jump":
        action = parse_action(" ".join(words))
        if action is None:
            raise UserError("jump needs a section: backtrack ctl jump chorus [bar], "
                            "backtrack ctl jump next_section now")
        return {"cmd": "jump", "to": action.arg}
    if verb == "vamp" and len(words) > 1:
        action = parse_action(" ".join(words))
        if action is None or action.arg is None:
            raise UserError("vamp takes a number of bars or nothing: backtrack ctl vamp, "
                            "backtrack ctl vamp 2")
        return {"cmd": "vamp", "bars": action.arg}
    if verb == "mix":
        if words[1:] in ([], ["reset"]):
            return {"cmd": "mix", "reset": True} if words[1:] else {"cmd": "mix"}
        raise UserError("mix takes nothing (print the live mix) or reset")
    if verb in ("mute", "unmute", "solo", "unsolo", "trim"):
        scope = "song" if "--song" in words else "night"
        rest = [w for w in words[1:] if w != "--song"]
        if verb == "trim":
            try:
                db = float(rest[-1])
            except (IndexError, ValueError):
                raise UserError("trim needs a name and a number of dB: "
                                "backtrack ctl trim guide -6") from None
            rest = rest[:-1]
        if not rest:
            raise UserError(f"{verb} needs a stem or output name: backtrack ctl {verb} keys"
                            + (" -3" if verb == "trim" else ""))
        req = {"cmd": verb, "target": " ".join(rest), "scope": scope}
        if verb == "trim":
            req["db"] = db
        return req
    if len(words) != 1:
        raise UserError(f"'{verb}' takes no argument")
    return {"cmd": verb}


def fmt_time(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60)
    return f"{int(m)}:{s:04.1f}"


def status_line(st: dict, width: int = 24) -> str:
    dur = st.get("duration_s") or 0.0
    pos = st.get("position_s") or 0.0
    filled = int(width * min(pos / dur, 1.0)) if dur else 0
    bar = "#" * filled + "-" * (width - filled)
    icon = {"playing": ">", "paused": "||", "cued": "*", "stopped": "[]"}.get(st["state"], "?")
    setlist = f"{st['setlist']} " if st.get("setlist") else ""
    line = (f"{icon} {setlist}{st['song']}/{st['songs']} {st['title'][:24]:<24} [{bar}] "
            f"{fmt_time(pos)} / {fmt_time(dur)}  {st['state']:<7}  xruns {st['xruns']}")
    if st.get("section"):
        line += f"  {st['section']} {st.get('bar_beat') or ''}"
    if st.get("pending"):
        line += f"  [{st['pending']['text']}]"
    if st.get("count_in"):
        line += "  COUNT-IN"
    mix = st.get("mix") or {}
    if mix.get("muted") or mix.get("solo") or mix.get("trim_db"):
        line += "  MIX:" + "".join(
            [f" -{n}" for n in mix.get("muted", ())] + [f" solo {n}" for n in mix.get("solo", ())]
            + [f" {n}{v:+g}dB" for n, v in mix.get("trim_db", {}).items()])
    if st.get("device") != "ok":
        line += f"  DEVICE: {st.get('device')}"
    if st.get("problems"):
        line += f"  {len(st['problems'])} stem problem(s)"
    return line


def watch_status(client: Client, out=sys.stdout, interval: float = 0.1,
          seconds: float | None = None) -> int:
    tty = out.isatty()
    end = time.monotonic() + seconds if seconds else None
    last = 0.0
    try:
        while end is None or time.monotonic() < end:
            reply = client.request({"cmd": "status"})
            line = status_line(reply["state"])
            if tty:
                out.write("\r\033[K" + line)
                out.flush()
            elif time.monotonic() - last >= 1.0:
                out.write(line + "\n")
                out.flush()
                last = time.monotonic()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    if tty:
        out.write("\n")
    return 0


def main(sock: str | None, words: list[str], as_json: bool = False, watch: bool = False) -> int:
    req = words_to_request(words)
    client = Client(socket_path(sock))
    try:
        if watch:
            if req["cmd"] != "status":
                raise UserError("--watch goes with status")
            return watch_status(client)
        reply = client.request(req)
    finally:
        client.close()
    if as_json:
        print(json.dumps(reply))
    elif not reply.get("ok"):
        print(f"backtrack: {reply.get('error')}", file=sys.stderr)
    else:
        if reply.get("message"):
            print(reply["message"])
        for sl in reply.get("setlists", ()):
            mark = "*" if sl["in_use"] else " "
            print(f"{mark} {sl['name']}: {len(sl['songs'])} songs: {', '.join(sl['songs'])}")
        print(status_line(reply["state"]))
    return 0 if reply.get("ok") else 1

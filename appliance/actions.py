"""What a control can ask for: the one list of actions and commands, and their parsing.

Every control names the same actions (a footswitch's `press: next`, a MIDI mapping's
`action: "goto 3"`, `backtrack ctl next`, `{"cmd": "next"}` on the socket, a COMMAND
forwarded by a hot-standby follower, and later OSC and the web remote), so they are
written down once, here, beside the transport that carries them out. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRANSPORT = ("play", "stop", "pause", "play_stop", "next", "prev")
"""Actions without an argument."""

ACTIONS = (*TRANSPORT, "goto N", "setlist NAME")
"""How actions are written where a person types one (config, errors)."""

COMMANDS = (*TRANSPORT, "goto", "setlist", "setlists", "status")
"""The control socket's and `backtrack ctl`'s verbs: the actions plus the queries."""


@dataclass(frozen=True)
class Action:
    """A command a control can name: `play`, `next`, `goto 3` (song numbers from 1),
    `setlist friday` (choose a setlist while stopped or cued)."""

    name: str
    arg: int | str | None = None

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name} {self.arg}"


_GOTO = re.compile(r"^goto\s+(\d+)$")
_SETLIST = re.compile(r"^setlist\s+(\S.*)$")


def parse_action(text: str) -> Action | None:
    """`None` when the text is not an action (the caller reports it with its location)."""
    text = text.strip()
    if text in TRANSPORT:
        return Action(text)
    m = _GOTO.match(text)
    if m:
        return Action("goto", int(m.group(1)))
    m = _SETLIST.match(text)
    if m:
        return Action("setlist", m.group(1).strip())
    return None


def request_action(req: dict) -> tuple[Action | None, str]:
    """A control-socket request -> an Action, or an error message naming what is valid."""
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
    if cmd == "setlist":
        name = req.get("name", req.get("arg"))
        if not isinstance(name, str) or not name.strip():
            return None, 'setlist needs a name: {"cmd": "setlist", "name": "friday"}'
        return Action("setlist", name.strip()), ""
    action = parse_action(cmd)
    if action is None:
        return None, f"unknown command '{cmd[:40]}'; valid: {', '.join(COMMANDS)}"
    return action, ""

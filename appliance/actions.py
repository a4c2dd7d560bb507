"""What a control can ask for: the one list of actions and commands, and their parsing.

Every control names the same actions (a footswitch's `press: next`, a MIDI mapping's
`action: "goto 3"`, `backtrack ctl goto Ballad`, `{"cmd": "next"}` on the socket, a COMMAND
forwarded by a hot-standby follower, and later OSC and the web remote), so they are
written down once, here, beside the transport that carries them out. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

TRANSPORT = ("play", "stop", "pause", "play_stop", "next", "prev")
"""Actions without an argument."""

STRUCTURE = ("jump", "vamp", "cancel")
"""Actions on the song's structure (sections, vamps): carried out by the engine against the
song's tempo map, not by the transport."""

MIX = ("mute", "unmute", "solo", "unsolo", "trim", "mix")
"""Live mix actions (appliance.livemix): carried out by the engine on the decoder's gains.
`mix reset` undoes every live change. A trailing `@song` limits a change to this song."""

LOCAL = ("selftest",)
"""Actions a unit carries out itself, never sent to a pair's leader: the self-test checks
the box whose footswitch was held (appliance.selftest)."""

ACTIONS = (*TRANSPORT, "goto N", "goto TITLE", "setlist NAME", "jump SECTION [WHEN]",
           "vamp [BARS]", "cancel", "mute NAME", "unmute NAME", "solo NAME", "unsolo NAME",
           "trim NAME DB", "mix reset", *LOCAL)
"""How actions are written where a person types one (config, errors)."""

COMMANDS = (*TRANSPORT, "goto", "setlist", *STRUCTURE, *MIX, *LOCAL, "setlists", "status")
"""The control socket's and `backtrack ctl`'s verbs: the actions plus the queries."""

SPELLED_COMMANDS = tuple({"goto": "goto N|TITLE", "setlist": "setlist NAME",
                          "jump": "jump SECTION|next_section|prev_section [WHEN]",
                          "vamp": "vamp [BARS]", "mute": "mute NAME", "unmute": "unmute NAME",
                          "solo": "solo NAME", "unsolo": "unsolo NAME", "trim": "trim NAME DB",
                          "mix": "mix [reset]"}.get(c, c) for c in COMMANDS)
"""COMMANDS as `ctl`'s help and every 'unknown command' error show them, with arguments."""


@dataclass(frozen=True)
class Action:
    """A command a control can name: `play`, `next`, `goto 3` (song numbers from 1),
    `goto Ballad` (a title of the setlist in use, resolved by `resolve_goto` where the
    setlist is known), `setlist friday` (choose a setlist while stopped or cued)."""

    name: str
    arg: int | str | None = None

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name} {self.arg}"


_GOTO = re.compile(r"^goto\s+(\S.*)$")
_SETLIST = re.compile(r"^setlist\s+(\S.*)$")
_JUMP = re.compile(r"^jump\s+(\S.*)$")
_VAMP = re.compile(r"^vamp(?:\s+([0-9]+))?$")
_NUMBER = re.compile(r"[0-9]+")
_MIX = re.compile(r"^(mute|unmute|solo|unsolo)\s+(\S(?:.*\S)?)$")
_TRIM = re.compile(r"^trim\s+(\S(?:.*\S)?)\s+([-+]?[0-9]+(?:\.[0-9]+)?)(\s+@song)?$")


@dataclass(frozen=True)
class MixChange:
    """A live mix action's parts: what the engine's `mix_command` takes."""

    verb: str
    target: str | None = None
    db: float | None = None
    scope: str = "night"


def mix_change(action: Action) -> MixChange:
    """The parts of a mix action (`mute keys`, `trim guide -6 @song`, `mix reset`)."""
    if action.name == "mix":
        return MixChange("reset")
    text = str(action.arg or "")
    scope = "night"
    if text.endswith("@song"):
        text, scope = text[:-5].rstrip(), "song"
    if action.name == "trim":
        name, _, db = text.rpartition(" ")
        return MixChange("trim", name, float(db), scope)
    return MixChange(action.name, text, None, scope)


def parse_action(text: str, titles: bool = False) -> Action | None:
    """`None` when the text is not an action (the caller reports it with its location).

    `goto TITLE` only with `titles`: a caller must be able to resolve or check a title
    before it accepts one (the config checks song numbers against the setlists). Digits
    are always a song number, so `str(action)` parses back to the same action, which the
    hot-standby wire and its de-duplication rely on."""
    text = text.strip()
    if text in TRANSPORT or text in LOCAL:
        return Action(text)
    m = _GOTO.match(text)
    if m:
        target = m.group(1).strip()
        if _NUMBER.fullmatch(target):
            return Action("goto", int(target))
        return Action("goto", target) if titles else None
    m = _SETLIST.match(text)
    if m:
        return Action("setlist", m.group(1).strip())
    m = _JUMP.match(text)
    if m:
        return Action("jump", " ".join(m.group(1).split()))
    m = _VAMP.match(text)
    if m:
        return Action("vamp", int(m.group(1))) if m.group(1) else Action("vamp")
    if text == "cancel":
        return Action("cancel")
    if text == "mix reset":
        return Action("mix", "reset")
    m = _MIX.match(text)
    if m:
        return Action(m.group(1), m.group(2))
    m = _TRIM.match(text)
    if m:
        return Action("trim", f"{m.group(1)} {float(m.group(2)):g}{' @song' if m.group(3) else ''}")
    return None


def request_action(req: dict) -> tuple[Action | None, str]:
    """A control-socket request -> an Action, or an error message naming what is valid.
    A goto may name a title (`{"cmd": "goto", "song": "Ballad"}`); the daemon resolves it
    in the setlist in use (`resolve_goto`)."""
    cmd = str(req.get("cmd", "")).strip()
    if cmd.startswith("goto") and cmd != "goto":
        action = parse_action(cmd, titles=True)
        if action is None:
            return None, f"'{cmd[:40]}' is not valid; use goto N (a song number) or goto TITLE"
        return action, ""
    if cmd == "goto":
        song = req.get("song", req.get("arg"))
        if isinstance(song, str) and song.strip():
            song = song.strip()
            return Action("goto", int(song) if _NUMBER.fullmatch(song) else song), ""
        if isinstance(song, bool) or not isinstance(song, int):
            return None, ('goto needs a song number or title: {"cmd": "goto", "song": 3} or '
                          '{"cmd": "goto", "song": "Ballad"}')
        return Action("goto", song), ""
    if cmd == "jump":
        to = req.get("to", req.get("arg"))
        when = req.get("when")
        if not isinstance(to, str) or not to.strip():
            return None, ('jump needs a section: {"cmd": "jump", "to": "chorus", "when": "bar"}'
                          " (to: a section name, next_section or prev_section)")
        if when is not None and (not isinstance(when, str) or not when.strip()):
            return None, "jump's when is one of now, beat, bar, section_end, N_bars"
        text = " ".join(f"{to} {when or ''}".split())
        return Action("jump", text), ""
    if cmd == "vamp" and req.get("bars") is not None:
        bars = req.get("bars")
        if isinstance(bars, bool) or not isinstance(bars, int) or not 1 <= bars <= 64:
            return None, 'vamp bars is a whole number from 1 to 64: {"cmd": "vamp", "bars": 2}'
        return Action("vamp", bars), ""
    if cmd == "setlist":
        name = req.get("name", req.get("arg"))
        if not isinstance(name, str) or not name.strip():
            return None, 'setlist needs a name: {"cmd": "setlist", "name": "friday"}'
        return Action("setlist", name.strip()), ""
    if cmd in MIX:
        return _mix_request(cmd, req)
    action = parse_action(cmd)
    if action is None:
        return None, f"unknown command '{cmd[:40]}'; valid: {', '.join(SPELLED_COMMANDS)}"
    return action, ""


def _mix_request(cmd: str, req: dict) -> tuple[Action | None, str]:
    """{"cmd": "mute", "target": "keys"}, {"cmd": "trim", "target": "guide", "db": -6},
    {"cmd": "mix", "reset": true}; "scope": "song" limits a change to this song."""
    if cmd == "mix":
        if req.get("reset") is True or req.get("arg") == "reset":
            return Action("mix", "reset"), ""
        return None, 'mix alone is a query: {"cmd": "status"} carries "mix"; reset: ' \
                     '{"cmd": "mix", "reset": true}'
    target = req.get("target", req.get("arg"))
    scope = req.get("scope", "night")
    if not isinstance(target, str) or not target.strip() or "@" in target:
        return None, f'{cmd} needs a stem or output name: {{"cmd": "{cmd}", "target": "keys"}}'
    if scope not in ("night", "song"):
        return None, f"{cmd}: scope is night (the default) or song, not {scope!r}"
    suffix = " @song" if scope == "song" else ""
    if cmd != "trim":
        return Action(cmd, " ".join(target.split()) + suffix), ""
    db = req.get("db")
    if isinstance(db, bool) or not isinstance(db, (int, float)):
        return None, 'trim needs a number of dB: {"cmd": "trim", "target": "guide", "db": -6}'
    return Action("trim", f"{' '.join(target.split())} {float(db):g}{suffix}"), ""


def resolve_goto(action: Action, titles: Sequence[str]) -> tuple[Action | None, str]:
    """`goto TITLE` -> `goto N` in the setlist whose song titles are `titles` (in order), or
    an error naming what is there. Every other action comes back as it is.

    Resolved by the daemon that receives the press, against the setlist it plays (both
    units of a pair play one), so a title names a song of tonight's set and the transport
    and the hot-standby wire only ever carry numbers. The title as
    written first, then ignoring case (as a setlist names library songs); no prefixes: a
    footswitch's `goto Ballad` must not start "Ballad II" because "Ballad" left the set."""
    if action.name != "goto" or not isinstance(action.arg, str):
        return action, ""
    want = action.arg.strip()
    hits = [i for i, t in enumerate(titles) if t == want]
    if not hits:
        hits = [i for i, t in enumerate(titles) if t.casefold() == want.casefold()]
    if len(hits) == 1:
        return Action("goto", hits[0] + 1), ""
    if hits:
        numbers = ", ".join(str(i + 1) for i in hits)
        return None, (f"{len(hits)} songs are titled '{want}' (songs {numbers}); "
                      "goto one by its number")
    return None, f"no song titled '{want}' in the setlist in use; songs: {_numbered(titles)}"


def _numbered(titles: Sequence[str], most: int = 12) -> str:
    shown = [f"{i + 1} {t}" for i, t in enumerate(titles[:most])]
    if len(titles) > most:
        shown.append(f"... ({len(titles)} in all)")
    return ", ".join(shown) or "none"

"""`backtrack render --script`: the presses of a rehearsal (vamp here, release there, jump to
the chorus) turned into the switches the live engine makes for them, so a band can listen
at home to exactly what the box will play. Pure: no audio, no I/O.

A script is presses separated by spaces, each `EVENT@POSITION`:

- `vamp`: loop the section holding that point; `vampN` (`vamp2`): loop N bars from the
  bar holding it. Pressed again while vamping, it releases (as on the box).
- `release`: the vamp's current turn plays to the loop's end and the song goes on.
- `jump:NAME` / `jump:NAME:WHEN`: a jump to a section (or `next_section`, `prev_section`),
  landing at the song's `jump_when` or at WHEN (`now`, `beat`, `bar`, `section_end`,
  `N_bars`), on the first such point after the press (`Structure.boundary`).
- `cancel`: forget the jump waiting to happen, or stop the vamp (as `release`).

POSITION is a song position: `13.3` (bar 13, beat 3), `13` (its downbeat), `83.5s`
(seconds into the audio); bars 0 and below are the count-in. A press happens the first
time playback reaches its position after the press before it; `#N` (`release@11.1#2`) the
Nth time, since a vamp plays the same bars again. A name with spaces is quoted as a
whole token: `'jump:last chorus@40.1'`.

Why a simulation of the engine's decisions and not a second set of rules: the render is
worth listening to only if every switch falls on the frame the box would choose, so the
rules below are the engine's (`Engine._jump`, `_start_vamp`, `_release_vamp`, `_cancel`,
`_switched`), applied to a press heard exactly at its position. The box's own latency
(the writer runs a period or two ahead of what is heard) only matters for `now` and for a
press a few milliseconds before a boundary.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from .errors import UserError
from .structure import N_BARS_MAX, WHEN_HELP, Structure, parse_when

SCRIPT_HELP = ("EVENT@POSITION, e.g. vamp@9.1, vamp2@9.1, release@11.1#2, jump:chorus@17.1, "
               "jump:outro:now@20.3, cancel@18; a position is bar.beat (13.3), a bar (13) or "
               "seconds into the audio (83.5s)")
NTH_MAX = 999

_BAR = re.compile(r"^[-+]?\d+$")
_BAR_BEAT = re.compile(r"^([-+]?\d+)\.(\d+)$")
_SECONDS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)s$")
_VAMP = re.compile(r"^vamp(\d+)?$")


class ScriptError(UserError):
    """A script the render cannot play: the message names the token."""


@dataclass(frozen=True)
class Press:
    """One press of the script. `where`: its position as a person reads it."""

    token: str
    kind: str            # jump | vamp | release | cancel
    frame: int
    where: str
    nth: int = 1
    bars: int | None = None   # vamp N
    to: str = ""              # jump: the section as written (or next_section, prev_section)
    when: str | None = None   # jump: as parse_when spells it; None: the song's jump_when


@dataclass(frozen=True)
class Switch:
    """The writer leaves the playing song frame `at` for `to` (with the song's crossfade);
    `out` is the output frame it happens at, counted from the render's first."""

    at: int
    to: int
    kind: str  # jump | vamp
    out: int


@dataclass(frozen=True)
class Plan:
    """What one song's render plays: from song frame `start`, the switches in order, until
    the song ends; `frames` output frames in all; `log` (output frame, text) of each press
    and switch, for the person."""

    start: int
    switches: tuple[Switch, ...] = ()
    frames: int = 0
    log: tuple[tuple[int, str], ...] = ()


def _bad(token: str, why: str) -> ScriptError:
    return ScriptError(f"--script '{token}': {why}")


def parse_script(text: str, st: Structure | None, rate: int, title: str) -> list[Press]:
    """The presses of `text`, in order; ScriptError naming the first bad token."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ScriptError(f"--script: {exc} (quote a whole token: 'jump:last chorus@40.1')"
                          ) from None
    if not tokens:
        raise ScriptError(f"--script is empty; give presses as {SCRIPT_HELP}")
    return [_parse_token(tok, st, rate, title) for tok in tokens]


def _parse_token(token: str, st: Structure | None, rate: int, title: str) -> Press:
    action, sep, pos = token.rpartition("@")
    if not sep or not action or not pos:
        raise _bad(token, f"not a press; write {SCRIPT_HELP}")
    pos, hash_, nth_text = pos.partition("#")
    nth = 1
    if hash_:
        if not nth_text.isdigit() or not 1 <= int(nth_text) <= NTH_MAX:
            raise _bad(token, f"'#{nth_text}' is not a count; #N is the Nth time the song "
                       f"reaches the position (1 to {NTH_MAX})")
        nth = int(nth_text)
    frame, where = _position(token, pos, st, rate)
    word = action.casefold()
    if word in ("release", "cancel"):
        return Press(token, word, frame, where, nth)
    m = _VAMP.match(word)
    if m:
        bars = int(m.group(1)) if m.group(1) else None
        if bars is not None and not 1 <= bars <= N_BARS_MAX:
            raise _bad(token, f"a vamp loops 1 to {N_BARS_MAX} bars, not {bars}")
        return Press(token, "vamp", frame, where, nth, bars=bars)
    if word.startswith("jump:"):
        to, when = _jump_target(token, action[len("jump:"):], st, title)
        return Press(token, "jump", frame, where, nth, to=to, when=when)
    raise _bad(token, f"'{action}' is not an event: vamp, vampN, release, jump:NAME[:WHEN] "
               "or cancel")


def _position(token: str, text: str, st: Structure | None, rate: int) -> tuple[int, str]:
    m = _SECONDS.match(text)
    if m:
        seconds = float(m.group(1))
        return round(seconds * rate), f"{seconds:g} s"
    if _BAR.match(text):
        bar, beat = int(text), 1
    else:
        m = _BAR_BEAT.match(text)
        if not m:
            raise _bad(token, f"'{text}' is not a position; write bar.beat (13.3), a bar "
                       "(13) or seconds into the audio (83.5s)")
        bar, beat = int(m.group(1)), int(m.group(2))
    if st is None or st.tempo is None:
        raise _bad(token, "bar positions need the song's tempo (tempo: in its song file); "
                   "without one, write seconds into the audio (83.5s)")
    meter = st.tempo.meter_of_bar(bar)
    if not 1 <= beat <= meter.beats:
        raise _bad(token, f"bar {bar} is in {meter}: beat {beat} is not one of its beats; "
                   f"valid: {bar}.1 to {bar}.{meter.beats}")
    return st.tempo.frame_at(bar, beat), f"bar {bar}" + (f" beat {beat}" if beat != 1 else "")


def _jump_target(token: str, rest: str, st: Structure | None, title: str
                 ) -> tuple[str, str | None]:
    """(section as written, when or None) of `jump:NAME[:WHEN]`; a name that is itself a
    section keeps its colons."""
    if st is None or not st.sections:
        raise _bad(token, f"song '{title}' has no sections to jump to (sections: in its song "
                   "file)")
    name, when = rest.strip(), None
    head, colon, tail = rest.rpartition(":")
    if colon and st.find(rest) is None:
        when = parse_when(tail)
        if when is None:
            raise _bad(token, f"'{tail}' is not a point to jump at; use {WHEN_HELP}")
        name = head.strip()
    if not name:
        raise _bad(token, "a jump needs a section: jump:NAME, jump:next_section or "
                   "jump:prev_section")
    if name not in ("next_section", "prev_section") and st.find(name) is None:
        raise _bad(token, f"no section '{name}' in '{title}'; sections: "
                   f"{', '.join(s.name for s in st.sections)}")
    return name, when


def _at(st: Structure | None, frame: int, rate: int) -> str:
    """`13.3`, or seconds for a song without a tempo map."""
    text = st.position_text(frame) if st is not None else ""
    return text or f"{frame / rate:.3f} s"


def plan_script(presses: list[Press], st: Structure | None, song_frames: int, start: int,
                rate: int, title: str) -> Plan:
    """Play the song from `start` (its count-in, as `play` from cued) with the presses made
    as the song reaches them, and return the switches the engine would make; ScriptError
    for a press the box would refuse or that playback never reaches."""
    end_text = f"{_at(st, song_frames, rate)} ({song_frames / rate:.2f} s)"
    for p in presses:
        if p.frame >= song_frames:
            raise _bad(p.token, f"{p.where} is past the song's end: '{title}' ends at "
                       f"{end_text}")
        if p.frame < start:
            raise _bad(p.token, f"{p.where} is before the render starts (at "
                       f"{_at(st, start, rate)}, the start of "
                       f"{'the count-in' if start < 0 else 'the song'})")
    pos, out = start, 0
    pending: tuple[int, int, str] | None = None  # (at, to, kind) the writer holds
    vamp: tuple[int, int, str] | None = None     # (loop start, loop end, what)
    switches: list[Switch] = []
    log: list[tuple[int, str]] = []
    k = 0
    left = presses[0].nth if presses else 0
    before = "the start"
    while True:
        stop = pending[0] if pending is not None else song_frames
        ev = presses[k] if k < len(presses) else None
        press_in = None
        if ev is not None and pos <= ev.frame < stop:
            if left > 1:
                left -= 1  # this time round it passes
            else:
                press_in = ev.frame - pos
        n = press_in if press_in is not None else stop - pos
        pos += n
        out += n
        if ev is not None and press_in is not None:
            pending, vamp, text = _press(ev, st, pending, vamp, song_frames, rate, title)
            log.append((out, f"{ev.token}: {text}"))
            before = ev.token
            k += 1
            left = presses[k].nth if k < len(presses) else 0
            continue
        if pending is not None and pos == pending[0]:
            at, to, kind = pending
            switches.append(Switch(at, to, kind, out))
            log.append((out, f"{_at(st, at, rate)} -> {_at(st, to, rate)} ({kind})"))
            pos = to
            pending = None
            if kind == "vamp" and vamp is not None:
                loop_start, loop_end, what = vamp
                if ev is None:
                    raise _bad(before, f"the vamp of {what} is never released: the box would "
                               "loop it for ever; add release@POSITION inside the loop")
                if not loop_start <= ev.frame < loop_end:
                    raise _bad(ev.token, f"not reached: the vamp of {what} "
                               f"({_at(st, loop_start, rate)} to {_at(st, loop_end, rate)}) "
                               "loops before it; release the vamp inside the loop first")
                pending = (loop_end, loop_start, "vamp")
            continue
        if ev is not None:
            raise _bad(ev.token, f"not reached: after {before} the song does not come to "
                       f"{ev.where}" + (f" {ev.nth} times" if ev.nth > 1 else "")
                       + " before it ends")
        return Plan(start, tuple(switches), out, tuple(log))


def _press(ev: Press, st: Structure | None, pending: tuple[int, int, str] | None,
           vamp: tuple[int, int, str] | None, song_frames: int, rate: int, title: str
           ) -> tuple[tuple[int, int, str] | None, tuple[int, int, str] | None, str]:
    """(pending switch, vamp, what the box says) after the press, as the engine decides."""
    p = ev.frame
    if ev.kind == "cancel":
        if pending is None and vamp is None:
            raise _bad(ev.token, "nothing to cancel: no jump is waiting and no vamp plays")
        return None, None, "cancelled" + (f": the vamp of {vamp[2]}" if vamp else "")
    if ev.kind == "release" or (ev.kind == "vamp" and vamp is not None):
        if vamp is None:
            raise _bad(ev.token, "no vamp to release (press vamp first)")
        return None, None, (f"vamp of {vamp[2]} released: the song plays on at "
                            f"{_at(st, vamp[1], rate)}")
    if ev.kind == "vamp":
        if ev.bars is not None:
            if st is None or st.tempo is None:
                raise _bad(ev.token, f"song '{title}' has no tempo to count bars (tempo: in "
                           "its song file)")
            start, end = st.tempo.bar_start(p), st.tempo.bars_after(p, ev.bars)
            what = f"{ev.bars} bar{'s' if ev.bars != 1 else ''}"
        else:
            if st is None or not st.sections:
                raise _bad(ev.token, f"song '{title}' has no sections to vamp (sections: in "
                           "its song file; or vampN for N bars)")
            i = st.section_at(p)
            if i < 0:
                first = st.sections[0]
                raise _bad(ev.token, f"{ev.where} is before the first section of '{title}' "
                           f"('{first.name}' at {_at(st, first.frame, rate)}); vampN loops "
                           "N bars there")
            start, end = st.sections[i].frame, st.section_end(i, song_frames)
            what = f"'{st.sections[i].name}'"
        return (end, start, "vamp"), (start, end, what), \
            f"vamp {what} ({_at(st, start, rate)} to {_at(st, end, rate)}) until released"
    # a jump
    assert st is not None  # parse_script refused a jump in a song without sections
    here = st.section_at(p)
    if ev.to == "next_section":
        idx = here + 1
        if idx >= len(st.sections):
            raise _bad(ev.token, f"no section after '{st.sections[here].name}' in '{title}'")
    elif ev.to == "prev_section":
        idx = max(0, here - 1)
    else:
        found = st.find(ev.to)
        assert found is not None  # parse_script checked the name
        idx = found
    when = ev.when or st.jump_when
    try:
        at = st.boundary(p, when, song_frames)
    except ValueError as exc:
        raise _bad(ev.token, str(exc)) from None
    target = st.sections[idx]
    if at is None:
        raise _bad(ev.token, f"jump to '{target.name}' {when}: no such point before the song "
                   "ends")
    return (at, target.frame, "jump"), None, \
        f"jump to {target.name} {'now' if when == 'now' else 'at ' + _at(st, at, rate)}"

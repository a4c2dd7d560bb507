"""The song-file keys of a song's structure (tempo map, sections, count-in, click, timecode,
voice guide, how jumps fall) and the show-file defaults for them, read into `Structure`.

A band writes its click and timecode settings once, in the show file; a song's own key
replaces the show's (the whole key: `click: off` in a song silences the show's click for
that song). Positions are read from the characters written, not from what YAML makes of
them: `at: 13.10` is bar 13 beat 10 (an error in 4/4), not 13.1, and `01:00:00:00` is a
timecode, not 216000 in base 60.

Everything here is checked without the audio: what needs the song's length (a section or
a ramp past the end) is `check`'s, where the stems are opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from .routes import read_route, resolve
from .structure import (
    CLICK_MODES,
    COUNT_IN_MAX,
    CROSSFADE_MS,
    GUIDE_MODES,
    LTC_FPS,
    RESERVED_SECTION_NAMES,
    WHEN_HELP,
    ClickSpec,
    GuideSpec,
    LtcSpec,
    Section,
    Structure,
    needs_tempo,
    parse_timecode,
    parse_when,
)
from .tempomap import BPM_MAX, BPM_MIN, COMMON_TIME, Meter, TempoChange, TempoMap
from .yamlnodes import NodeReader

STRUCTURE_KEYS = ("tempo_map", "meter", "start", "sections", "count_in", "jump_when",
                  "crossfade_ms", "click", "ltc", "guide")
"""Song keys read here besides `tempo` (which songfile has always had)."""
SHOW_KEYS = ("click", "ltc", "guide", "count_in", "jump_when", "crossfade_ms")
"""Keys a show file may set for every song."""
CLICK_KEYS = ("to", "mode", "level_db", "subdivision", "accent", "sounds")
CLICK_SOUNDS = ("accent", "beat", "sub")
LTC_KEYS = ("to", "fps", "drop_frame", "start", "level_db")
GUIDE_KEYS = ("to", "mode", "files", "level_db", "count")
TEMPO_CHANGE_KEYS = ("bar", "bpm", "meter", "ramp_to", "bars")
START_MAX_S = 3600.0
RAMP_BARS_MAX = 1000
DEFAULT_CROSSFADE_MS = 10.0

_BAR = re.compile(r"^[-+]?\d+$")
_BAR_BEAT = re.compile(r"^([-+]?\d+)\.(\d+)$")
_SECONDS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*s$")
POSITION_HELP = "a bar (17), bar.beat (13.3) or seconds into the audio (83.5s)"
TEMPO_HELP = "tempo: BPM or tempo_map: [{bar: 1, bpm: ...}]"


@dataclass(frozen=True)
class Defaults:
    """The show file's structure keys, for every song that does not set its own. `count_in`
    and friends are None when the show does not set them."""

    click: ClickSpec | None = None
    ltc: LtcSpec | None = None
    guide: GuideSpec | None = None
    count_in: int | None = None
    jump_when: str | None = None
    crossfade_ms: float | None = None

    @property
    def empty(self) -> bool:
        return self == Defaults()


NO_DEFAULTS = Defaults()


def read_defaults(r: NodeReader, top: dict[str, yaml.Node],
                  outputs: dict[str, tuple[int, ...]], base: Path) -> Defaults:
    """The show file's top-level structure keys (same spelling as in a song)."""
    return Defaults(
        click=read_click(r, top.get("click"), "click", outputs, base),
        ltc=read_ltc(r, top.get("ltc"), "ltc", outputs),
        guide=read_guide(r, top.get("guide"), "guide", outputs, base, None),
        count_in=r.integer(top.get("count_in"), "count_in", 0, COUNT_IN_MAX, default=None),
        jump_when=_when(r, top.get("jump_when"), "jump_when"),
        crossfade_ms=r.number(top.get("crossfade_ms"), "crossfade_ms", *CROSSFADE_MS,
                              default=None),
    )


def read_structure(r: NodeReader, s: dict[str, yaml.Node], k: str,
                   outputs: dict[str, tuple[int, ...]], base: Path, rate: int,
                   defaults: Defaults = NO_DEFAULTS) -> tuple[Structure | None, float | None]:
    """(the song's structure, its first tempo for MIDI clock) from a song mapping's entries;
    problems into `r`, keys prefixed with `k` (`songs[2].` inline, "" in a song file). The
    structure is None when neither the song nor the show sets any of its keys."""
    tempo, tempo_written = _tempo(r, s, k, rate)
    bpm = tempo.changes[0].bpm if tempo is not None else None
    if not (tempo_written or any(n in s for n in STRUCTURE_KEYS)) and defaults.empty:
        return None, bpm
    # where a bar position cannot be placed because the tempo keys themselves are wrong,
    # that is the one error to report, not one more per section
    unplaceable = tempo is None and tempo_written
    if "count_in" in s:
        count_in = r.integer(s["count_in"], f"{k}count_in", 0, COUNT_IN_MAX, default=0) or 0
        count_from = f"count_in: {count_in}"
        if count_in and tempo is None and not unplaceable:
            r.error(s["count_in"], f"{k}count_in", f"a count-in counts bars of the song's "
                    f"tempo: the song has none ({TEMPO_HELP})")
    else:
        count_in = defaults.count_in or 0
        count_from = f"count_in: {count_in} in the show file"
    sections = _sections(r, s.get("sections"), f"{k}sections", tempo, unplaceable, rate,
                         count_in if tempo is not None else 0, count_from)
    jump_when = _jump_when(r, s, k, defaults, tempo is not None or unplaceable)
    crossfade = r.number(s.get("crossfade_ms"), f"{k}crossfade_ms", *CROSSFADE_MS,
                         default=None)
    if crossfade is None:
        crossfade = defaults.crossfade_ms or DEFAULT_CROSSFADE_MS
    click = read_click(r, s["click"], f"{k}click", outputs, base) if "click" in s \
        else defaults.click
    ltc = read_ltc(r, s["ltc"], f"{k}ltc", outputs) if "ltc" in s else defaults.ltc
    if "guide" in s:
        guide = read_guide(r, s["guide"], f"{k}guide", outputs, base, sections)
    else:
        guide = _guide_for(defaults.guide, sections)
    return Structure(tempo=tempo, sections=sections, jump_when=jump_when,
                     crossfade_ms=crossfade, count_in=count_in, click=click, ltc=ltc,
                     guide=guide), bpm


def count_in_override(r: NodeReader, node: yaml.Node, key: str, structure: Structure | None,
                      title: str) -> Structure | None:
    """A setlist entry's `count_in: N`: the song's structure with that count-in (None, with
    the problem in `r`, when the song cannot have it)."""
    n = r.integer(node, key, 0, COUNT_IN_MAX)
    if n is None:
        return None
    if structure is None or structure.tempo is None:
        if n == 0:
            return structure
        r.error(node, key, f"'{title}' has no tempo, so no count-in ({TEMPO_HELP} in its "
                "song file)")
        return None
    if n:
        first = structure.tempo.frame_at(1)
        early = [s for s in structure.sections if s.frame < first]
        if early:
            names = ", ".join(f"'{s.name}'" for s in early)
            r.error(node, key, f"'{title}' has section {names} before bar 1: inside a "
                    f"{n}-bar count-in; a count-in plays before bar 1, where no section is")
            return None
    return replace(structure, count_in=n)


# -- tempo ---------------------------------------------------------------------------------

def _tempo(r: NodeReader, s: dict[str, yaml.Node], k: str, rate: int
           ) -> tuple[TempoMap | None, bool]:
    """(the tempo map, whether the song wrote tempo keys at all)."""
    written = "tempo" in s or "tempo_map" in s
    before = len(r.errors)
    meter = _meter(r, s.get("meter"), f"{k}meter")
    start = r.number(s.get("start"), f"{k}start", 0, START_MAX_S, default=0.0)
    changes: list[TempoChange] | None = None
    if "tempo" in s and "tempo_map" in s:
        r.error(s["tempo_map"], f"{k}tempo_map", "give tempo (one tempo for the whole song) "
                "or tempo_map (its changes), not both")
    elif "tempo" in s:
        bpm = r.number(s["tempo"], f"{k}tempo", BPM_MIN, BPM_MAX)
        if bpm is not None:
            changes = [TempoChange(1, bpm, meter or COMMON_TIME, line=_line(s["tempo"]))]
    elif "tempo_map" in s:
        changes = _tempo_map(r, s["tempo_map"], f"{k}tempo_map", meter or COMMON_TIME)
    else:
        for name, what in (("meter", "a meter"), ("start", "where bar 1 is")):
            if name in s:
                r.error(s[name], f"{k}{name}", f"{what} means something only with the song's "
                        f"tempo: add {TEMPO_HELP}")
    if changes is None or len(r.errors) > before:
        return None, written
    try:
        return TempoMap(changes, start or 0.0, rate), written
    except ValueError as exc:  # a defence: _tempo_map refuses all of these with a line
        r.error(s.get("tempo_map") or s.get("tempo"), f"{k}tempo_map", str(exc))
        return None, written


def _tempo_map(r: NodeReader, node: yaml.Node, key: str, meter: Meter
               ) -> list[TempoChange] | None:
    items = r.sequence(node, key)
    if items is None:
        return None
    if not items:
        r.error(node, key, "lists no change; start with the song's tempo: "
                "[{bar: 1, bpm: 120}]")
        return None
    out: list[TempoChange] = []
    index: list[int] = []  # the entry each change of `out` was written as
    bpm_now: float | None = None
    ramp: tuple[int, int, int, yaml.Node] | None = None  # (index, bar, end bar, its node)
    ok = True
    for j, cnode in enumerate(items):
        ckey = f"{key}[{j}]"
        m = r.mapping(cnode, ckey, TEMPO_CHANGE_KEYS, required=("bar",))
        if m is None:
            ok = False
            continue
        bar = _change_bar(r, m.get("bar"), f"{ckey}.bar")
        bpm = r.number(m.get("bpm"), f"{ckey}.bpm", BPM_MIN, BPM_MAX, default=None)
        new_meter = _meter(r, m.get("meter"), f"{ckey}.meter")
        ramp_to = r.number(m.get("ramp_to"), f"{ckey}.ramp_to", BPM_MIN, BPM_MAX, default=None)
        bars = r.integer(m.get("bars"), f"{ckey}.bars", 1, RAMP_BARS_MAX, default=None)
        if bar is None or ("bpm" in m and bpm is None) or ("meter" in m and new_meter is None) \
                or ("ramp_to" in m and ramp_to is None) or ("bars" in m and bars is None):
            ok = False
            continue
        if j == 0 and bar != 1:
            r.error(m["bar"], f"{ckey}.bar", f"the first change is the tempo the song starts "
                    f"in: it is at bar 1, not bar {bar}")
            ok = False
        prev = out[-1] if out else None
        if prev is not None and bar <= prev.bar:
            r.error(m["bar"], f"{ckey}.bar", f"changes go in bar order: bar {bar} after "
                    f"bar {prev.bar} ({key}[{index[-1]}])" if bar < prev.bar else
                    f"a second change at bar {bar}; write one change per bar")
            ok = False
            continue
        if ramp is not None and bar < ramp[2]:
            r.error(ramp[3], f"{key}[{ramp[0]}].bars", f"the ramp from bar {ramp[1]} lasts to "
                    f"bar {ramp[2]}, past the next change at bar {bar} "
                    f"({key}[{j}]); end the ramp by bar {bar} or move that change")
            ok = False
        if j == 0 and bpm is None:
            r.error(cnode, f"{ckey}.bpm", "is required in the first change: the tempo the "
                    "song starts in" + (" (a ramp starts from it)" if "ramp_to" in m else ""))
            ok = False
            continue
        if "ramp_to" in m and "bars" not in m:
            r.error(m["ramp_to"], f"{ckey}.bars", "a ramp needs bars: how many bars it takes "
                    f"to reach {ramp_to:g}")
            ok = False
        if "bars" in m and "ramp_to" not in m:
            r.error(m["bars"], f"{ckey}.ramp_to", "bars is the length of a ramp: give "
                    "ramp_to, the tempo it reaches")
            ok = False
        if j and not any(n in m for n in ("bpm", "meter", "ramp_to", "bars")):
            r.error(cnode, ckey, "changes nothing: give bpm, meter or ramp_to")
            ok = False
        is_ramp = ramp_to is not None and bars is not None
        ramp = (j, bar, bar + bars, m["bars"]) if is_ramp else None
        start_bpm = bpm if bpm is not None else bpm_now
        bpm_now = ramp_to if is_ramp else start_bpm
        if new_meter is not None:
            meter = new_meter
        if start_bpm is None:  # the tempo it follows is itself wrong (reported there)
            ok = False
            continue
        out.append(TempoChange(bar, start_bpm, meter, ramp_to if is_ramp else None,
                               bars if is_ramp else 0, line=_line(cnode)))
        index.append(j)
    return out if ok else None


def _change_bar(r: NodeReader, node: yaml.Node | None, key: str) -> int | None:
    if isinstance(node, yaml.ScalarNode) and not _BAR.match(node.value.strip()) \
            and re.match(r"^[-+]?\d*\.\d*$", node.value.strip()):
        r.error(node, key, f"a tempo change takes effect on a downbeat: bar is a whole "
                f"number from 1, got {node.value}")
        return None
    return r.integer(node, key, 1, 100_000)


def _meter(r: NodeReader, node: yaml.Node | None, key: str) -> Meter | None:
    if node is None:
        return None
    text = r.text(node, key)
    if text is None:
        return None
    meter = Meter.parse(text)
    if meter is None:
        r.error(node, key, f"'{text}' is not a meter; write beats/unit, e.g. 4/4, 3/4, 6/8, "
                "7/8 (1 to 32 beats of a 1, 2, 4, 8, 16 or 32)")
    return meter


# -- sections ------------------------------------------------------------------------------

def _sections(r: NodeReader, node: yaml.Node | None, key: str, tempo: TempoMap | None,
              unplaceable: bool, rate: int, count_in: int, count_from: str
              ) -> tuple[Section, ...]:
    items = r.sequence(node, key)
    if items is None:
        return ()
    if not items:
        r.error(node, key, "lists no section; give {name: ..., at: ...} entries or leave "
                "sections out")
        return ()
    out: list[Section] = []
    seen: dict[str, int] = {}
    prev: tuple[int, Section] | None = None
    for j, snode in enumerate(items):
        skey = f"{key}[{j}]"
        m = r.mapping(snode, skey, ("name", "at"), required=("name", "at"))
        if m is None:
            continue
        name = r.text(m.get("name"), f"{skey}.name")
        if name is not None:
            name = name.strip()
            folded = name.casefold()
            if not name:
                r.error(m["name"], f"{skey}.name", "a section needs a name")
                name = None
            elif folded in RESERVED_SECTION_NAMES:
                r.error(m["name"], f"{skey}.name", f"'{name}' is a word of the jump command "
                        f"({', '.join(RESERVED_SECTION_NAMES)}); call the section otherwise")
                name = None
            elif folded in seen:
                r.error(m["name"], f"{skey}.name", f"'{name}' is also the name of "
                        f"sections[{seen[folded]}] (case does not count): a jump names one "
                        "section")
                name = None
            else:
                seen[folded] = j
        at = m.get("at")
        pos = _position(r, at, f"{skey}.at", tempo, unplaceable, rate) if at is not None \
            else None
        if pos is None or name is None:
            continue
        frame, bar, beat = pos
        where = f"bar {bar}" + (f" beat {beat}" if beat != 1 else "") if bar is not None \
            else f"{frame / rate:g} s"
        if frame < 0:
            if count_in and bar is not None and bar < 1:
                r.error(at, f"{skey}.at", f"{where} is inside the count-in ({count_from} "
                        "bar(s) before bar 1); sections start at bar 1 or later")
            else:
                r.error(at, f"{skey}.at", f"{where} is before the audio begins (bar 1 is "
                        f"at start: {tempo.start_s if tempo else 0:g} s into it)")
            continue
        if count_in and tempo is not None and frame < tempo.frame_at(1):
            r.error(at, f"{skey}.at", f"{where} is before bar 1, inside the count-in "
                    f"({count_from} bar(s) before bar 1); sections start at bar 1 or later")
            continue
        sec = Section(name, frame, _line(snode), bar, beat if bar is not None else None)
        if prev is not None and frame <= prev[1].frame:
            r.error(at, f"{skey}.at", f"sections go in song order: '{name}' at {where} is "
                    f"not after '{prev[1].name}' (sections[{prev[0]}])")
            continue
        prev = (j, sec)
        out.append(sec)
    return tuple(out)


def _position(r: NodeReader, node: yaml.Node, key: str, tempo: TempoMap | None,
              unplaceable: bool, rate: int) -> tuple[int, int | None, int] | None:
    """(frame, bar or None, beat) of a section position as written."""
    if not isinstance(node, yaml.ScalarNode):
        r.error(node, key, f"expected {POSITION_HELP}")
        return None
    text = node.value.strip()
    m = _SECONDS.match(text)
    if m:
        return round(float(m.group(1)) * rate), None, 1
    if _BAR.match(text):
        bar, beat = int(text), 1
    else:
        m = _BAR_BEAT.match(text)
        if not m:
            r.error(node, key, f"'{text}' is not a position; write {POSITION_HELP}")
            return None
        bar, beat = int(m.group(1)), int(m.group(2))
    if tempo is None:
        if not unplaceable:
            r.error(node, key, f"bar positions need the song's tempo ({TEMPO_HELP}); "
                    "without one, write seconds into the audio (83.5s)")
        return None
    meter = tempo.meter_of_bar(bar)
    if not 1 <= beat <= meter.beats:
        r.error(node, key, f"bar {bar} is in {meter}: beat {beat} is not one of its beats; "
                f"valid: {bar}.1 to {bar}.{meter.beats}")
        return None
    return tempo.frame_at(bar, beat), bar, beat


# -- how jumps fall ------------------------------------------------------------------------

def _when(r: NodeReader, node: yaml.Node | None, key: str) -> str | None:
    if node is None:
        return None
    text = r.text(node, key)
    if text is None:
        return None
    when = parse_when(text)
    if when is None:
        r.error(node, key, f"'{text}' is not valid; use {WHEN_HELP}")
    return when


def _jump_when(r: NodeReader, s: dict[str, yaml.Node], k: str, defaults: Defaults,
               has_tempo: bool) -> str:
    """The song's own (refused when it counts bars the song has not), else the show's,
    else `bar`; a song without a tempo falls back to section_end."""
    fallback = "bar" if has_tempo else "section_end"
    if "jump_when" in s:
        when = _when(r, s["jump_when"], f"{k}jump_when")
        if when is not None and needs_tempo(when) and not has_tempo:
            r.error(s["jump_when"], f"{k}jump_when", f"'{when}' counts beats and bars: the "
                    f"song needs a tempo ({TEMPO_HELP}); use now or section_end")
            return fallback
        return when or fallback
    when = defaults.jump_when
    if when is None or (needs_tempo(when) and not has_tempo):
        return fallback
    return when


# -- click, timecode, voice guide ----------------------------------------------------------

def _is_off(node: yaml.Node | None) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == "off"


def _level(r: NodeReader, node: yaml.Node | None, key: str, default: float,
           hi: float = 12.0) -> float:
    v = r.number(node, key, -60, hi, default=default)
    return default if v is None else v


def read_click(r: NodeReader, node: yaml.Node | None, key: str,
               outputs: dict[str, tuple[int, ...]], base: Path) -> ClickSpec | None:
    """`click: {to: click, mode: auto, ...}`, or `click: off`."""
    if node is None:
        return None
    if _is_off(node):
        return ClickSpec(mode="off")
    m = r.mapping(node, key, CLICK_KEYS)
    if m is None:
        return None
    mode = r.text(m.get("mode"), f"{key}.mode", default="auto", choices=CLICK_MODES)
    names, chans = read_route(r, m.get("to"), f"{key}.to", outputs)
    if mode != "off" and "to" not in m:
        r.error(node, f"{key}.to", "is required: the output the click plays on "
                "(e.g. to: click)")
    sub = r.integer(m.get("subdivision"), f"{key}.subdivision", 1, 8, default=1)
    accent = r.boolean(m.get("accent"), f"{key}.accent", default=True)
    sounds: dict[str, Path] = {}
    sm = r.mapping(m.get("sounds"), f"{key}.sounds", CLICK_SOUNDS)
    for role, fnode in (sm or {}).items():
        f = r.text(fnode, f"{key}.sounds.{role}")
        if f:
            sounds[role] = resolve(base, f)
    if mode is None:
        return None
    return ClickSpec(to=chans, outputs=names, mode=mode,
                     level_db=_level(r, m.get("level_db"), f"{key}.level_db", -6.0),
                     subdivision=sub or 1, accent=accent is not False, sounds=sounds)


def read_ltc(r: NodeReader, node: yaml.Node | None, key: str,
             outputs: dict[str, tuple[int, ...]]) -> LtcSpec | None:
    """`ltc: {to: ltc, fps: 25, ...}`, or `ltc: off` (None)."""
    if node is None or _is_off(node):
        return None
    m = r.mapping(node, key, LTC_KEYS, required=("to", "fps"))
    if m is None:
        return None
    names, chans = read_route(r, m.get("to"), f"{key}.to", outputs)
    fps = None
    if "fps" in m:
        fps = r.number(m["fps"], f"{key}.fps", 0, 1000)
        if fps is not None:
            fps = next((f for f in LTC_FPS if abs(f - fps) < 1e-6), None)
            if fps is None:
                r.error(m["fps"], f"{key}.fps", f"'{m['fps'].value}' is not a timecode rate; "
                        "use one of: 24, 25, 29.97, 30")
    drop = r.boolean(m.get("drop_frame"), f"{key}.drop_frame", default=fps == 29.97)
    if drop and fps is not None and fps != 29.97:
        r.error(m.get("drop_frame"), f"{key}.drop_frame", f"drop-frame timecode exists only "
                f"at 29.97 fps, not {fps:g}")
    start = r.text(m.get("start"), f"{key}.start", default="00:00:00:00")
    level = _level(r, m.get("level_db"), f"{key}.level_db", -10.0, hi=0.0)
    if fps is None or start is None or not chans:
        return None
    tc, why = parse_timecode(start, fps, bool(drop))
    if tc is None:
        r.error(m.get("start"), f"{key}.start", why)
        return None
    return LtcSpec(to=chans, outputs=names, fps=fps, drop_frame=bool(drop), start=tc,
                   level_db=level)


def read_guide(r: NodeReader, node: yaml.Node | None, key: str,
               outputs: dict[str, tuple[int, ...]], base: Path,
               sections: tuple[Section, ...] | None) -> GuideSpec | None:
    """`guide: {to: cue, mode: auto, files: {chorus: cues/chorus.wav}}`, or `guide: off`.
    In a song (`sections` given) every file names one of its sections; in the show file
    they apply to the songs that have a section of that name."""
    if node is None:
        return None
    if _is_off(node):
        return GuideSpec(mode="off")
    m = r.mapping(node, key, GUIDE_KEYS)
    if m is None:
        return None
    mode = r.text(m.get("mode"), f"{key}.mode", default="auto", choices=GUIDE_MODES)
    names, chans = read_route(r, m.get("to"), f"{key}.to", outputs)
    if mode != "off" and "to" not in m:
        r.error(node, f"{key}.to", "is required: the output the spoken cues play on "
                "(e.g. to: cues)")
    files: dict[str, Path] = {}
    fnode = m.get("files")
    if fnode is not None and not isinstance(fnode, yaml.MappingNode):
        r.error(fnode, f"{key}.files", "expected section names and files, e.g. "
                "`{chorus: cues/chorus.wav}`")
    elif fnode is not None:
        for knode, vnode in fnode.value:
            sec = str(knode.value)
            fkey = f"{key}.files.{sec}"
            f = r.text(vnode, fkey)
            if sections is not None:
                hit = next((s.name for s in sections if s.name.casefold() == sec.casefold()),
                           None)
                if hit is None:
                    valid = ", ".join(s.name for s in sections) or "(none: add sections:)"
                    r.error(knode, fkey, f"the song has no section named '{sec}'; its "
                            f"sections: {valid}")
                    continue
                sec = hit
            if f:
                files[sec] = resolve(base, f)
    if mode is None:
        return None
    count = r.boolean(m.get("count"), f"{key}.count", default=True)
    return GuideSpec(to=chans, outputs=names, mode=mode, files=files,
                     level_db=_level(r, m.get("level_db"), f"{key}.level_db", 0.0),
                     count=True if count is None else count)


def _guide_for(guide: GuideSpec | None, sections: tuple[Section, ...]) -> GuideSpec | None:
    """The show's guide for one song: its files under this song's section names."""
    if guide is None or not guide.files:
        return guide
    files = {}
    for s in sections:
        for name, path in guide.files.items():
            if name.casefold() == s.name.casefold():
                files[s.name] = path
    return replace(guide, files=files)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1

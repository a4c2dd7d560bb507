"""`backtrack import`: a folder of stems as a band receives it -> a song file and a report.

Stores and DAW exports name stems by habit (`Click.wav`, `Guide.wav`, `Keys L.wav`), never
by the outputs of this band's show, so routes are guessed from names, in an order a band
can steer: its own `routing_rules` first, then a stem named like an output, then the
built-in table. A guess that cannot be made is left in the file as a comment, never as a
route to a made-up output, so the song file always loads; everything guessed is printed,
because a wrong route found at soundcheck costs more than reading ten lines now.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError
from .library import SONG_FILE, read_song_file
from .songfile import route
from .statefile import write_atomic
from .yamlnodes import ConfigError

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".aif", ".aiff", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac",
    ".mp4", ".caf", ".w64", ".rf64",
})

# (pattern, output), searched case-insensitively in a stem's base name, first match wins;
# a rule whose output the show lacks is passed over, so drums end on `tracks` in a show
# without `drums`. Documented in config/README.md (`routing_rules`); keep the two in step.
BUILTIN_RULES: tuple[tuple[str, str], ...] = (
    ("click|metronome|clk", "click"),
    ("guide|cues?|voice|count|talkback", "cues"),
    ("bass", "bass"),
    ("keys|piano|synth|pad", "keys"),
    ("drums?|perc|loop", "drums"),
    ("vox|vocals?|bgv|choir", "vocals"),
    (".", "tracks"),
)

# `Keys L`, `Keys_R`, `Keys-L`, `Keys Left`, `Keys (R)`, `Keys [L]`: one side of a pair.
_SIDE = re.compile(r"^(?P<base>.*?[^\s_.-])(?:[\s_.-]+(?P<a>left|right|l|r)"
                   r"|[\s_.-]*[(\[]\s*(?P<b>left|right|l|r)\s*[)\]])$", re.I)
# `120 BPM`, `120bpm`, `(96 bpm)`, `92.5_BPM`, with what surrounds it in a title.
_BPM = re.compile(r"(?<![\d.])(?P<n>\d{2,3}(?:\.\d+)?)\s*[_-]?\s*bpm(?![a-z])", re.I)
_BPM_IN_TITLE = re.compile(r"[(\[]?\s*(?<![\d.])\d{2,3}(?:\.\d+)?\s*[_-]?\s*bpm(?![a-z])"
                           r"\s*[)\]]?", re.I)
_TITLE_EDGES = " \t-_–—,.;:|"
_TEMPO_RANGE = (20.0, 400.0)  # what songfile.read_song accepts


@dataclass(frozen=True)
class Show:
    """What routing needs of a show file. `outputs` is None without one: then every
    built-in target is taken to exist and nothing is checked."""

    outputs: dict[str, tuple[int, ...]] | None = None
    rules: tuple[tuple[str, str], ...] = ()
    path: Path | None = None
    note: str = ""  # why the show file was only partly read, if it was


@dataclass
class Placement:
    """One file's fate: `to` is None when it could not be placed (`why` says why)."""

    file: Path
    to: str | None
    why: str
    name: str = ""  # the pair's base name, for both halves of an L/R pair
    notes: list[str] = field(default_factory=list)


@dataclass
class Import:
    """Everything decided about one folder, before anything is written."""

    folder: Path
    out: Path
    show: Show
    title: str
    tempo: float | None
    tempo_from: str
    stems: list[Placement]
    pairs: list[tuple[str, Path, Path]]

    @property
    def placed(self) -> list[Placement]:
        return [s for s in self.stems if s.to is not None]


# -- finding the files ---------------------------------------------------------------------

def audio_files(folder: Path, out: Path) -> list[Path]:
    """The stems of a folder, in the order a person reads them (`Track 2` before `Track
    10`). Subfolders are not searched: a song folder holds its stems, not other songs."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.name != SONG_FILE
             and p.suffix.casefold() in AUDIO_EXTENSIONS and p != out]
    return sorted(files, key=_natural)


def _natural(p: Path) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part.casefold())
            for part in re.split(r"(\d+)", p.name) if part]


def split_side(name: str) -> tuple[str, str] | None:
    """`Keys L` -> ("Keys", "L"); None for a name that is not one side of a pair."""
    m = _SIDE.match(name)
    if not m:
        return None
    side = (m.group("a") or m.group("b"))[0].upper()
    return m.group("base"), side


def group_pairs(files: list[Path]) -> list[tuple[str, list[Path]]]:
    """Files -> (base name, [file] or [left, right]) in file order. Only an exact L/R
    couple is joined: a lone side, or two files claiming one side, stay single files."""
    sides: dict[str, dict[str, list[Path]]] = {}
    for f in files:
        got = split_side(f.stem)
        if got:
            sides.setdefault(_norm(got[0]), {}).setdefault(got[1], []).append(f)
    units: list[tuple[str, list[Path]]] = []
    done: set[Path] = set()
    for f in files:
        if f in done:
            continue
        got = split_side(f.stem)
        pair = sides.get(_norm(got[0]), {}) if got else {}
        if len(pair.get("L", ())) == 1 and len(pair.get("R", ())) == 1:
            units.append((got[0], [pair["L"][0], pair["R"][0]]))
            done.update((pair["L"][0], pair["R"][0]))
        else:
            units.append((f.stem, [f]))
    return units


def _norm(name: str) -> str:
    """Names as a person means them: `Click Track`, `click_track` and `CLICK-TRACK` agree."""
    return re.sub(r"[\s_-]+", "", name).casefold()


# -- routing -------------------------------------------------------------------------------

def decide(base: str, show: Show) -> tuple[str | None, str]:
    """(target output, the rule that chose it) or (None, why nothing fits)."""
    for pattern, target in show.rules:
        if re.search(pattern, base, re.I):
            return target, f"show routing_rules '{pattern}'"
    named = _output_like(base, show.outputs)
    if named:
        return named, "named like the output"
    for pattern, target in BUILTIN_RULES:
        if re.search(pattern, base, re.I):
            have = _output_like(target, show.outputs) if show.outputs is not None else target
            if have:
                return have, ("built-in catch-all" if pattern == "." else
                              f"built-in rule '{pattern}'")
    outs = ", ".join(show.outputs or ())
    return None, (f"no routing_rules pattern, output name or built-in rule fits (the show has "
                  f"no output `tracks` for the catch-all; its outputs: {outs})")


def _output_like(name: str, outputs: dict[str, tuple[int, ...]] | None) -> str | None:
    """The show's own spelling of an output a name means, so `Click` finds `click`."""
    for out in outputs or ():
        if _norm(out) == _norm(name):
            return out
    return None


def place(base: str, files: list[Path], show: Show) -> list[Placement]:
    """A single file, or both halves of a pair routed by their common base name to the
    left and right channel of one output (a pair keeps its stereo image)."""
    target, why = decide(base, show)
    if len(files) == 1:
        return [Placement(files[0], target, why)]
    if target is None:
        return [Placement(f, None, why, name=base) for f in files]
    left, right = _sides_of(target, show)
    return [Placement(files[0], left, why, name=base),
            Placement(files[1], right, why, name=base)]


def _sides_of(target: str, show: Show) -> tuple[str, str]:
    """`keys` -> keys.L, keys.R; a rule that already names one channel gets both halves."""
    if show.outputs is None or target in show.outputs:
        return f"{target}.L", f"{target}.R"
    return target, target


def channel_notes(stem: Placement, show: Show) -> list[str]:
    """Why this file would not play as routed; `check` would refuse the same. Mono goes
    anywhere, N channels need N (appliance.audio.source._routable)."""
    from .audio.source import probe_file

    info, _promised = probe_file(stem.file)
    if info.problem is not None:
        return [f"{_one_line(info.problem)}, so it would play as silence"]
    channels = info.channels
    width = _width(stem.to, show)
    if stem.to is None or width is None or channels == 1 or channels == width:
        return []
    return [f"has {channels} channels but {stem.to} is {width} channel(s): route it to an "
            f"output of {channels} channels, or export it mono"]


def _width(to: str | None, show: Show) -> int | None:
    """Channels behind a route; None when no show says (except one side of a pair)."""
    if to is None:
        return None
    if show.outputs is None:
        return 1 if to.endswith((".L", ".R")) else None
    chans = route(to, show.outputs)
    return len(chans) if chans is not None else None


# -- tempo and title -----------------------------------------------------------------------

def find_tempo(folder: Path, files: list[Path]) -> tuple[float | None, str]:
    """(BPM, where it was read) from the folder name, else the first file name that has
    one; stores write it in either place."""
    for where, name in [("the folder name", folder.name)] + [(f.name, f.stem) for f in files]:
        for m in _BPM.finditer(name):
            bpm = float(m.group("n"))
            if _TEMPO_RANGE[0] <= bpm <= _TEMPO_RANGE[1]:
                return bpm, where
    return None, ""


def title_of(folder: Path) -> str:
    """The folder name without its tempo: `Song - 128 BPM` -> `Song`."""
    title = _BPM_IN_TITLE.sub(" ", folder.name).strip(_TITLE_EDGES)
    return re.sub(r"\s{2,}", " ", title) or folder.name


# -- the plan, the song file, the report ---------------------------------------------------

def plan(folder: Path, out: Path, show: Show) -> Import:
    """Decide everything about `folder`; nothing is written."""
    files = audio_files(folder, out)
    if not files:
        exts = ", ".join(sorted(e[1:] for e in AUDIO_EXTENSIONS))
        raise UserError(f"no audio files in {folder} (looked for {exts}; subfolders are not "
                        "searched)")
    stems: list[Placement] = []
    pairs: list[tuple[str, Path, Path]] = []
    for base, group in group_pairs(files):
        placed = place(base, group, show)
        if len(group) == 2:
            pairs.append((base, group[0], group[1]))
        stems.extend(placed)
    for stem in stems:
        stem.notes = channel_notes(stem, show)
    tempo, tempo_from = find_tempo(folder, files)
    return Import(folder, out, show, title_of(folder), tempo, tempo_from, stems, pairs)


def song_text(imp: Import) -> str:
    """The song file: placed stems as entries, the rest as comments saying why, so the
    file loads as written and a person sees what is left to do."""
    checked = (f"routes checked against {imp.show.path}" if imp.show.path
               else "routes not checked against a show (no --config)")
    made = json.dumps(imp.folder.name, ensure_ascii=False)
    lines = [f"# Made by `backtrack import` from the folder {made}; {checked}.",
             f"title: {_scalar(imp.title)}",
             f"tempo: {_number(imp.tempo)}" if imp.tempo else "# tempo: (unknown; add it)",
             "stems:"]
    lines += [_stem_line(s, imp.out.parent) for s in imp.stems]
    return "\n".join(lines) + "\n"


def _stem_line(stem: Placement, base: Path) -> str:
    rel = Path(os.path.relpath(stem.file, base)).as_posix()
    if stem.to is None:
        entry = f"{{file: {_scalar(rel)}, to: OUTPUT}}"
        return f"  # - {entry}  # not placed: {_one_line(stem.why)}"
    name = f", name: {_scalar(stem.name)}" if stem.name else ""
    entry = f"  - {{file: {_scalar(rel)}, to: {_scalar(stem.to)}{name}}}"
    return entry + (f"  # {_one_line('; '.join(stem.notes))}" if stem.notes else "")


def _scalar(text: str) -> str:
    """Plain when YAML reads it back as the same text inside a flow mapping, else quoted."""
    try:
        plain = yaml.safe_load(f"{{k: {text}}}") == {"k": text}
    except yaml.YAMLError:
        plain = False
    return text if plain and text == text.strip() and text else json.dumps(text,
                                                                            ensure_ascii=False)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def report(imp: Import) -> list[str]:
    """What a person checks before soundcheck: every route and the rule behind it."""
    width = max(len(s.file.name) for s in imp.stems)
    lines = [f"Import of {imp.folder} ({len(imp.stems)} audio file(s)):"]
    for s in imp.stems:
        where = s.to if s.to is not None else "(not placed)"
        lines.append(f"  {s.file.name:<{width}}  -> {where:<10}  {s.why if s.to else ''}".rstrip())
    lines += _pair_lines(imp) + _tempo_lines(imp) + _problem_lines(imp)
    if imp.show.path is None:
        lines.append("Routes were not checked against a show: give --config FILE to use its "
                     "outputs and routing_rules.")
    elif imp.show.note:
        lines.append(imp.show.note)
    return lines


def _pair_lines(imp: Import) -> list[str]:
    if not imp.pairs:
        return ["L/R pairs joined: none"]
    return ["L/R pairs joined:"] + [f"  {base}: {left.name} + {right.name}"
                                    for base, left, right in imp.pairs]


def _tempo_lines(imp: Import) -> list[str]:
    if imp.tempo is None:
        return ["Tempo: not found in the folder or file names (write e.g. `120 BPM` in the "
                "folder name); the song file says `# tempo: (unknown; add it)`"]
    return [f"Tempo: {_number(imp.tempo)} BPM (from {imp.tempo_from})"]


def _problem_lines(imp: Import) -> list[str]:
    out = [f"  {s.file.name}: {s.why}" for s in imp.stems if s.to is None]
    lines = ["Not placed (written as comments in the song file):"] + out if out else []
    notes = [f"  {s.file.name}: {n}" for s in imp.stems for n in s.notes]
    return lines + (["Will not play as routed:"] + notes if notes else [])


# -- the show file -------------------------------------------------------------------------

def load_show(path: str) -> Show:
    """Outputs and routing_rules of the show file. A show whose setlist already names the
    song being imported does not load until the song exists, so when the whole file fails
    and its outputs and rules alone do not, those are used and the rest is reported later
    by `check`."""
    from .config import ConfigError, load

    try:
        cfg = load(path)
    except ConfigError as exc:
        return _partial_show(Path(path).expanduser().absolute(), exc)
    return Show(dict(cfg.outputs), cfg.routing_rules, cfg.path)


def _partial_show(path: Path, whole: ConfigError) -> Show:
    """Only `device`, `outputs` and `routing_rules`; their own errors are the ones shown."""
    from .config import load_outputs

    outputs, rules = load_outputs(path)
    return Show(outputs, rules, path, note=f"The show file does not load yet "
                f"({len(whole.problems)} problem(s) outside outputs and routing_rules; "
                "`backtrack check` lists them): routes used its outputs and routing_rules.")


# -- the command ---------------------------------------------------------------------------

def main(folder: str, config: str | None, out: str | None, force: bool) -> int:
    """`backtrack import`: exit 0 when the song file is written (and, with a show, loads
    without errors), 1 otherwise."""
    src = Path(folder).expanduser().absolute()
    if not src.is_dir():
        raise UserError(f"{src} is not a folder; give the folder that holds the song's stems")
    dest = Path(out).expanduser().absolute() if out else src / SONG_FILE
    _check_destination(dest, force)
    show = load_show(config) if config else Show()
    imp = plan(src, dest, show)
    print("\n".join(report(imp)))
    if not imp.placed:
        raise UserError(f"none of the stems could be placed, so {dest} was not written; add "
                        "routing_rules to the show file or outputs the stems can go to")
    _write(dest, song_text(imp))
    print(f"Wrote {dest}")
    if dest.name != SONG_FILE:
        print(f"Note: a library only finds song files named {SONG_FILE}.")
    return _verify(dest, show)


def _check_destination(dest: Path, force: bool) -> None:
    if dest.is_dir():
        raise UserError(f"--out {dest} is a folder; give the song file's path (e.g. "
                        f"{dest / SONG_FILE})")
    if not dest.parent.is_dir():
        raise UserError(f"the folder {dest.parent} does not exist; create it or choose "
                        "another --out")
    if dest.exists() and not force:
        raise UserError(f"{dest} already exists; add --force to overwrite it")


def _write(dest: Path, text: str) -> None:
    """Written beside and renamed, so an interrupted import never leaves half a song."""
    try:
        write_atomic(dest, text.encode("utf-8"))
    except OSError as exc:
        raise UserError(f"cannot write {dest}: {exc.strerror or exc}") from None


def _verify(dest: Path, show: Show) -> int:
    """Read the new file the way the library will, so a problem shows now, not at the gig."""
    if show.outputs is None:
        return 0
    problems = read_song_file(dest, show.outputs).problems
    if not problems:
        print(f"Checked: {dest.name} loads with the outputs of {show.path}.")
        _reload(show)
        return 0
    print(f"{dest.name} has {len(problems)} problem(s) with the outputs of {show.path}:")
    for p in problems:
        print(f"  {p}")
    return 1 if any(p.severity == "error" for p in problems) else 0


def _reload(show: Show) -> None:
    """A show that did not load before the import (its setlist named this song) may load
    now; say which, since that is what the person will try next."""
    from .config import ConfigError, load

    if not show.note or show.path is None:
        return
    try:
        load(show.path)
    except ConfigError as exc:
        print(f"The show file still has {len(exc.problems)} problem(s); `backtrack check "
              f"--config {show.path}` lists them.")
        return
    print(f"The show file {show.path} loads now.")

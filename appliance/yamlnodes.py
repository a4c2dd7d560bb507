"""Reading a YAML node tree with every error tied to a file, a line and a key path.

PyYAML's `safe_load` throws away line numbers, and a band member fixing a show file at
soundcheck needs "line 14, songs[2].stems[0].to" rather than a traceback. So the config is
composed into nodes (which keep their marks) and read through `NodeReader`, which collects
every problem instead of stopping at the first one.

PyYAML reads YAML 1.1, whose plain scalars hold traps a person cannot see: `3:45` is the
number 225 (base 60), `010` is 8 (octal), `yes`/`on` are true. The reader undoes them by
the kind of value a key expects: a text key reads exactly what was written (`title: 3:45`
is "3:45"); a number key refuses a spelling YAML reads differently from how it looks
(`period: 010`), saying what to write; a true/false key takes only true or false.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located precisely enough to fix without guessing."""

    file: str
    line: int
    key: str
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        tag = "" if self.severity == "error" else f" ({self.severity})"
        return f"{where}:{key} {self.message}{tag}"


class ConfigError(Exception):
    """All the errors of one config file, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_MISSING = object()


def type_name(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    return {"str": "text", "int": "a whole number", "float": "a number", "bool": "true/false",
            "null": "nothing (null)"}.get(tag, tag)


class NodeReader:
    """Turns composed YAML nodes into Python values, recording problems as it goes."""

    def __init__(self, file: str | Path):
        self.file = str(file)
        self.problems: list[Problem] = []

    # -- reporting -------------------------------------------------------------------------
    def error(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.problems.append(Problem(self.file, line, key, message))

    def warn(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.problems.append(Problem(self.file, line, key, message, "warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    # -- structure -------------------------------------------------------------------------
    def mapping(self, node: yaml.Node | None, key: str, allowed: Iterable[str],
                required: Iterable[str] = ()) -> dict[str, yaml.Node] | None:
        """A mapping's entries by key; unknown keys are errors because a typo must not be
        silently ignored on stage (`gain_bd: -6` playing at full level)."""
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"expected a mapping (key: value lines), got {type_name(node)}")
            return None
        allowed = list(allowed)
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            name = knode.value if isinstance(knode, yaml.ScalarNode) else None
            sub = f"{key}.{name}" if key else str(name)
            if name is None:
                self.error(knode, key, "keys must be plain words")
            elif name in out:
                self.error(knode, sub, "appears twice")
            elif name not in allowed:
                self.error(knode, sub, f"unknown key; valid keys here: {', '.join(allowed)}")
            else:
                out[name] = vnode
        for req in required:
            if req not in out:
                self.error(node, f"{key}.{req}" if key else req, "is required")
        return out

    def sequence(self, node: yaml.Node | None, key: str) -> list[yaml.Node] | None:
        if node is None:
            return None
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, key, f"expected a list, got {type_name(node)}")
            return None
        return list(node.value)

    # -- scalars ---------------------------------------------------------------------------
    def _scalar(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, key, f"expected a single value, got {type_name(node)}")
            return _MISSING
        try:
            return _CONSTRUCTOR.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            self.error(node, key, f"cannot read '{node.value}': {exc}")
            return _MISSING

    def text(self, node: yaml.Node | None, key: str, default: Any = _MISSING,
             choices: Iterable[str] | None = None) -> Any:
        if node is None:
            return self._default(default, key)
        if isinstance(node, yaml.ScalarNode) and node.tag in _WRITTEN_AS_TEXT:
            # a text key means the characters typed, whatever YAML 1.1 would make of them
            value = node.value
        else:
            value = self._scalar(node, key)
            if value is _MISSING:
                return None
            if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
                self.error(node, key, f"expected text, got {type_name(node)}")
                return None
            value = str(value)
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                self.error(node, key, f"'{value}' is not valid; use one of: {', '.join(choices)}")
                return None
        return value

    def integer(self, node: yaml.Node | None, key: str, lo: int, hi: int,
                default: Any = _MISSING, choices: Iterable[int] | None = None) -> Any:
        if node is None:
            return self._default(default, key)
        if self._number_trap(node, key):
            return None
        value = self._scalar(node, key)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, key, f"expected a whole number from {lo} to {hi}, got {_show(node)}")
            return None
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                self.error(node, key, f"{value} is not valid; use one of: "
                           f"{', '.join(str(c) for c in choices)}")
                return None
        elif not lo <= value <= hi:
            self.error(node, key, f"{value} is out of range; valid: {lo} to {hi}")
            return None
        return value

    def number(self, node: yaml.Node | None, key: str, lo: float, hi: float,
               default: Any = _MISSING) -> Any:
        if node is None:
            return self._default(default, key)
        if self._number_trap(node, key):
            return None
        value = self._scalar(node, key)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(node, key, f"expected a number from {lo:g} to {hi:g}, got {_show(node)}")
            return None
        if not lo <= value <= hi:
            self.error(node, key, f"{value:g} is out of range; valid: {lo:g} to {hi:g}")
            return None
        return float(value)

    def boolean(self, node: yaml.Node | None, key: str, default: Any = _MISSING) -> Any:
        if node is None:
            return self._default(default, key)
        if _is_plain(node) and node.tag == _BOOL and node.value.lower() not in ("true", "false"):
            # yes/no/on/off are booleans in YAML 1.1 only: one spelling, read the same by
            # every tool and every reader of the file
            self.error(node, key, f"`{node.value}` means true or false only to some YAML "
                                  "readers: write true or false")
            return None
        value = self._scalar(node, key)
        if value is _MISSING:
            return None
        if not isinstance(value, bool):
            self.error(node, key, f"expected true or false, got {_show(node)}")
            return None
        return value

    def _number_trap(self, node: yaml.Node, key: str) -> bool:
        """Report a plain scalar YAML 1.1 reads as another number than it looks (or as text
        where a number was plainly meant); True when reported. The number is refused, not
        guessed: `010` may mean ten or eight, `3:45` a time or a typo."""
        if not _is_plain(node):
            return False
        what = _misread_number(node)
        if what is None:
            return False
        self.error(node, key, what)
        return True

    def _default(self, default: Any, key: str) -> Any:
        if default is _MISSING:
            return None
        return default


_TAG = "tag:yaml.org,2002:"
_INT, _FLOAT, _BOOL = _TAG + "int", _TAG + "float", _TAG + "bool"
_WRITTEN_AS_TEXT = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "timestamp"))
"""Tags whose scalars a text key reads as written: YAML's implicit readings of plain text
(null stays "nothing": `name: null` must be quoted, and the message says so)."""

_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_LEADING_ZERO = re.compile(r"([-+]?)0+([0-9][0-9_]*)")
_RADIX = re.compile(r"[-+]?0([xXbBoO])([0-9a-fA-F_]+)")
_RADIX_NAME = {"x": "hexadecimal", "b": "binary", "o": "octal"}


def _is_plain(node: yaml.Node) -> bool:
    """Unquoted: the only scalars YAML resolves (libyaml reports the style as '', PyYAML's
    pure-Python parser as None)."""
    return isinstance(node, yaml.ScalarNode) and not node.style


def _misread_number(node: yaml.ScalarNode) -> str | None:
    """What is wrong with a number written this way, or None when it reads as it looks."""
    text = node.value
    if node.tag in (_INT, _FLOAT) and _SEXAGESIMAL.fullmatch(text):
        value = _CONSTRUCTOR.construct_object(node)
        return (f"`{text}` would be read as {value} (base 60, YAML 1.1): "
                f"write {value} if that is meant")
    m = _LEADING_ZERO.fullmatch(text)
    if m:
        meant = m.group(1).lstrip("+") + m.group(2).replace("_", "")
        if node.tag == _INT:
            value = _CONSTRUCTOR.construct_object(node)
            return f"`{text}` would be read as {value} (octal): write {meant}"
        return f"`{text}` starts with 0, which YAML reads as octal or as text: write {meant}"
    m = _RADIX.fullmatch(text)
    if m:
        try:
            value = int(text.replace("_", ""), 0)
        except ValueError:
            return None
        name = _RADIX_NAME[m.group(1).lower()]
        return f"`{text}` is {value} written in {name}: write {value}"
    return None


_CONSTRUCTOR = yaml.SafeLoader("")
# libyaml's parser when PyYAML has it (Debian's and PyPI's do): marks and nodes are the
# same, and a 300-song library composes ten times faster than in pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _show(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f"'{node.value}' ({type_name(node)})"
    return type_name(node)


def compose(path: Path, reader: NodeReader) -> yaml.Node | None:
    """Parse the file into nodes; YAML syntax errors become problems with their line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        reader.error(None, "", "file not found")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reader.error(None, "", f"cannot read the file: {exc}")
        return None
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        what = exc.problem or "malformed YAML"
        reader.problems.append(Problem(reader.file, line, "", f"YAML syntax error: {what}"))
        return None
    except yaml.YAMLError as exc:
        reader.error(None, "", f"YAML syntax error: {exc}")
        return None
    if node is None:
        reader.error(None, "", "the file is empty")
    return node

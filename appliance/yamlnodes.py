"""Reading a YAML node tree with every error tied to a file, a line and a key path.

PyYAML's `safe_load` throws away line numbers, and a band member fixing a show file at
soundcheck needs "line 14, songs[2].stems[0].to" rather than a traceback. So the config is
composed into nodes (which keep their marks) and read through `NodeReader`, which collects
every problem instead of stopping at the first one.
"""

from __future__ import annotations

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
        value = self._scalar(node, key)
        if value is _MISSING:
            return None
        if not isinstance(value, bool):
            self.error(node, key, f"expected true or false, got {_show(node)}")
            return None
        return value

    def _default(self, default: Any, key: str) -> Any:
        if default is _MISSING:
            return None
        return default


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

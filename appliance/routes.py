"""Where a song's parts come from and go to: file paths as written in a song or show file,
and output names -> device channels for everything a song sends somewhere (its stems, and
the click, timecode and voice guide it generates). One reader, so `to:` means the same and
is refused with the same words wherever it is written.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .yamlnodes import NodeReader

# `to: keys.L` is the left (first) channel of the output `keys`, `keys.R` the right (second;
# on a one-channel output both are that channel: a stereo pair folds down), `keys.3` the
# third: how a pair of mono files (`Keys L.wav`, `Keys R.wav`) keeps its stereo image.
_CHANNEL_OF = re.compile(r"^(?P<out>.+)\.(?P<ch>L|R|\d{1,2})$")


def route(name: str, outputs: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """An output name, or one channel of it (`keys.L`, `keys.R`, `keys.2`), -> device
    channels; None when there is no such output or channel."""
    if name in outputs:
        return outputs[name]
    m = _CHANNEL_OF.match(name)
    if not m or m.group("out") not in outputs:
        return None
    chans = outputs[m.group("out")]
    if not chans:
        return None
    ch = m.group("ch")
    if ch in ("L", "R"):
        return (chans[min(len(chans) - 1, 0 if ch == "L" else 1)],)
    i = int(ch) - 1
    return (chans[i],) if 0 <= i < len(chans) else None


def read_route(r: NodeReader, node: yaml.Node | None, key: str,
               outputs: dict[str, tuple[int, ...]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """`to:` (one output name or a list of them) -> (the names as written, their device
    channels in order); each unknown name is reported at `key` with the outputs there are."""
    names: list[str] = []
    if isinstance(node, yaml.SequenceNode):
        for k, n in enumerate(node.value):
            t = r.text(n, f"{key}[{k}]")
            if t is not None:
                names.append(t)
    elif node is not None:
        t = r.text(node, key)
        if t is not None:
            names.append(t)
    chans: list[int] = []
    for n in names:
        got = route(n, outputs)
        if got is None:
            valid = ", ".join(outputs) or "(none defined)"
            r.error(node, key, f"no output named '{n}'; outputs are: {valid} "
                    "(one channel of an output: NAME.L, NAME.R or NAME.N)")
        else:
            chans.extend(got)
    return tuple(names), tuple(chans)


def resolve(base: Path, file: str) -> Path:
    """A path as written in a file, relative to that file's folder."""
    p = Path(file).expanduser()
    return p if p.is_absolute() else base / p

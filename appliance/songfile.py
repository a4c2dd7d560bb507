"""A song: its stems, routes and gains, what happens after it, its tempo and MIDI.

One reader for both places a song is written: an entry of the show file's inline `songs:`
list (a small show needs no library), and a song file (`song.yaml` in the song's own
folder, stem paths relative to that folder; see `library`). The keys are the same in both,
so what the song-structure, live-mix and show-log work adds to a song is added once, here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .yamlnodes import NodeReader

AFTER = ("stop", "next", "pause")
SONG_KEYS = ("title", "stems", "after", "tempo", "midi_out")
STEM_KEYS = ("file", "to", "gain_db", "name")
# `to: keys.L` is the left (first) channel of the output `keys`, `keys.R` the right (second;
# on a one-channel output both are that channel: a stereo pair folds down), `keys.3` the
# third: how a pair of mono files (`Keys L.wav`, `Keys R.wav`) keeps its stereo image.
_CHANNEL_OF = re.compile(r"^(?P<out>.+)\.(?P<ch>L|R|\d{1,2})$")


@dataclass(frozen=True)
class Stem:
    """One file of a song. `channels` are 0-based device channels, in route order. `name`
    is what a person calls it (the live mix, a setlist's gains): the `name:` key, else the
    file name without its extension; two files may share one (a left/right pair)."""

    file: Path
    to: tuple[str, ...]
    channels: tuple[int, ...]
    gain_db: float = 0.0
    line: int = 0  # where it was declared, so `check` can point at it
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.file.stem


@dataclass(frozen=True)
class MidiMessage:
    """A message sent at song start. Numbers as the gear prints them (program 1-128, channel
    1-16); `to_bytes` does the minus-one of the wire."""

    kind: str  # program | cc | note
    number: int
    value: int = 0
    channel: int = 1

    def to_bytes(self) -> list[int]:
        ch = self.channel - 1
        if self.kind == "program":
            return [0xC0 | ch, self.number - 1]
        if self.kind == "cc":
            return [0xB0 | ch, self.number, self.value]
        return [0x90 | ch, self.number, self.value]


@dataclass(frozen=True)
class Song:
    """`file` is the song file it came from (None for an inline song), `key` the name a
    setlist may use besides the title (the song's folder name)."""

    title: str
    stems: tuple[Stem, ...]
    after: str = "stop"
    tempo: float | None = None
    midi_out: tuple[MidiMessage, ...] = ()
    line: int = 0
    file: Path | None = None
    key: str = ""

    def stem_named(self, name: str) -> list[Stem]:
        """The stems a person means by `name` (case does not matter: `keys` is `Keys`)."""
        want = name.casefold()
        return [s for s in self.stems if s.label.casefold() == want]


def read_song(r: NodeReader, node: yaml.Node, key: str, outputs: dict[str, tuple[int, ...]],
              base: Path, *, default_title: str, file: Path | None = None,
              song_key: str = "") -> Song | None:
    """A song mapping -> Song, problems into `r` (keys prefixed with `key`, e.g.
    `songs[2]` inline, nothing in a song file). Stem paths are relative to `base`."""
    s = r.mapping(node, key, SONG_KEYS, required=("stems",) if file else ("title", "stems"))
    if s is None:
        return None
    k = f"{key}." if key else ""
    title = r.text(s.get("title"), f"{k}title") or default_title
    stems = read_stems(r, s.get("stems"), f"{k}stems", outputs, base)
    after = r.text(s.get("after"), f"{k}after", default="stop", choices=AFTER) or "stop"
    tempo = r.number(s.get("tempo"), f"{k}tempo", 20, 400, default=None)
    midi_out = read_midi_out(r, s.get("midi_out"), f"{k}midi_out")
    return Song(title=title, stems=stems, after=after, tempo=tempo, midi_out=midi_out,
                line=node.start_mark.line + 1, file=file, key=song_key)


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


def read_stems(r: NodeReader, node: yaml.Node | None, key: str,
               outputs: dict[str, tuple[int, ...]], base: Path) -> tuple[Stem, ...]:
    items = r.sequence(node, key)
    if items is None:
        return ()
    if not items:
        r.error(node, key, "a song needs at least one stem")
    stems = []
    for j, stnode in enumerate(items):
        skey = f"{key}[{j}]"
        st = r.mapping(stnode, skey, STEM_KEYS, required=("file", "to"))
        if st is None:
            continue
        file = r.text(st.get("file"), f"{skey}.file")
        names: list[str] = []
        tonode = st.get("to")
        if isinstance(tonode, yaml.SequenceNode):
            for k, n in enumerate(tonode.value):
                t = r.text(n, f"{skey}.to[{k}]")
                if t is not None:
                    names.append(t)
        elif tonode is not None:
            t = r.text(tonode, f"{skey}.to")
            if t is not None:
                names.append(t)
        chans: list[int] = []
        for n in names:
            got = route(n, outputs)
            if got is None:
                valid = ", ".join(outputs) or "(none defined)"
                r.error(tonode, f"{skey}.to", f"no output named '{n}'; outputs are: {valid} "
                        "(one channel of an output: NAME.L, NAME.R or NAME.N)")
            else:
                chans.extend(got)
        gain = r.number(st.get("gain_db"), f"{skey}.gain_db", -120, 24, default=0.0)
        name = r.text(st.get("name"), f"{skey}.name", default="") or ""
        if file is not None and names and len(chans) > 0:
            stems.append(Stem(file=resolve(base, file), to=tuple(names), channels=tuple(chans),
                              gain_db=gain if gain is not None else 0.0,
                              line=stnode.start_mark.line + 1, name=name))
    return tuple(stems)


def read_midi_out(r: NodeReader, node: yaml.Node | None, key: str) -> tuple[MidiMessage, ...]:
    items = r.sequence(node, key)
    if not items:
        return ()
    out = []
    for i, mnode in enumerate(items):
        mkey = f"{key}[{i}]"
        m = r.mapping(mnode, mkey, ("program", "cc", "note", "value", "velocity", "channel"))
        if m is None:
            continue
        kinds = [k for k in ("program", "cc", "note") if k in m]
        if len(kinds) != 1:
            r.error(mnode, mkey, "give exactly one of program, cc or note")
            continue
        kind = kinds[0]
        channel = r.integer(m.get("channel"), f"{mkey}.channel", 1, 16, default=1)
        if kind == "program":
            num = r.integer(m["program"], f"{mkey}.program", 1, 128)
            value = 0
        elif kind == "cc":
            num = r.integer(m["cc"], f"{mkey}.cc", 0, 127)
            value = r.integer(m.get("value"), f"{mkey}.value", 0, 127)
            if "value" not in m:
                r.error(mnode, f"{mkey}.value", "a cc message needs a value (0-127)")
        else:
            num = r.integer(m["note"], f"{mkey}.note", 0, 127)
            value = r.integer(m.get("velocity"), f"{mkey}.velocity", 1, 127, default=100)
        if num is not None and value is not None and channel is not None:
            out.append(MidiMessage(kind, num, value, channel))
    return tuple(out)


def resolve(base: Path, file: str) -> Path:
    """A path as written in a file, relative to that file's folder."""
    p = Path(file).expanduser()
    return p if p.is_absolute() else base / p

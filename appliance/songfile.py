"""A song: its stems, routes and gains, what happens after it, its tempo and MIDI.

One reader for both places a song is written: an entry of the show file's inline `songs:`
list (a small show needs no library), and a song file (`song.yaml` in the song's own
folder, stem paths relative to that folder; see `library`). The keys are the same in both,
so what the song-structure, live-mix and show-log work adds to a song is added once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .routes import read_route, resolve, route
from .structfile import NO_DEFAULTS, STRUCTURE_KEYS, Defaults, read_structure
from .structure import Structure
from .yamlnodes import NodeReader

__all__ = ["AFTER", "SONG_KEYS", "STEM_KEYS", "MidiMessage", "Song", "Stem", "read_song",
           "read_stems", "read_midi_out", "resolve", "route"]

AFTER = ("stop", "next", "pause")
SONG_KEYS = ("title", "stems", "after", "tempo", "midi_out", *STRUCTURE_KEYS)
STEM_KEYS = ("file", "to", "gain_db", "name")
DEFAULT_RATE = 48000


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
    setlist may use besides the title (the song's folder name). `tempo` is the tempo the
    song starts in (MIDI clock); `structure` its tempo map, sections, count-in, click,
    timecode and voice guide (None when neither the song nor the show sets any)."""

    title: str
    stems: tuple[Stem, ...]
    after: str = "stop"
    tempo: float | None = None
    midi_out: tuple[MidiMessage, ...] = ()
    line: int = 0
    file: Path | None = None
    key: str = ""
    structure: Structure | None = None

    def stem_named(self, name: str) -> list[Stem]:
        """The stems a person means by `name` (case does not matter: `keys` is `Keys`)."""
        want = name.casefold()
        return [s for s in self.stems if s.label.casefold() == want]


def read_song(r: NodeReader, node: yaml.Node, key: str, outputs: dict[str, tuple[int, ...]],
              base: Path, *, default_title: str, file: Path | None = None,
              song_key: str = "", rate: int = DEFAULT_RATE,
              defaults: Defaults = NO_DEFAULTS) -> Song | None:
    """A song mapping -> Song, problems into `r` (keys prefixed with `key`, e.g.
    `songs[2]` inline, nothing in a song file). Stem paths are relative to `base`; song
    positions are frames at `rate` (the device's); `defaults` are the show file's."""
    s = r.mapping(node, key, SONG_KEYS, required=("stems",) if file else ("title", "stems"))
    if s is None:
        return None
    k = f"{key}." if key else ""
    title = r.text(s.get("title"), f"{k}title") or default_title
    stems = read_stems(r, s.get("stems"), f"{k}stems", outputs, base)
    after = r.text(s.get("after"), f"{k}after", default="stop", choices=AFTER) or "stop"
    structure, tempo = read_structure(r, s, k, outputs, base, rate, defaults)
    midi_out = read_midi_out(r, s.get("midi_out"), f"{k}midi_out")
    return Song(title=title, stems=stems, after=after, tempo=tempo, midi_out=midi_out,
                line=node.start_mark.line + 1, file=file, key=song_key, structure=structure)


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
        names, chans = read_route(r, st.get("to"), f"{skey}.to", outputs)
        gain = r.number(st.get("gain_db"), f"{skey}.gain_db", -120, 24, default=0.0)
        name = r.text(st.get("name"), f"{skey}.name", default="") or ""
        if file is not None and names and len(chans) > 0:
            stems.append(Stem(file=resolve(base, file), to=names, channels=chans,
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

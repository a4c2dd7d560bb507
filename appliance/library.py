"""The song library and the setlists that name its songs.

A band keeps one folder per song (`song.yaml` beside its stems) and plays a different
setlist every night, so the show file names the library folder(s) and lists setlists of
song titles (or folder names); each entry may change `after`, stem gains and the count-in
for that night.
Every song file is read with its own reader, so a mistake is reported with that file and
line; a song no setlist uses cannot stop the show, so its problems are only warnings.

Loading reads the song files and nothing else: no stem is opened here (`check` does that),
so a 300-song library loads in a fraction of a second and start-up stays fast.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .songfile import AFTER, DEFAULT_RATE, Song, read_song
from .structfile import NO_DEFAULTS, Defaults, count_in_override
from .yamlnodes import NodeReader, Problem, compose

SONG_FILE = "song.yaml"
SETLIST_NAME_MAX = 100  # "setlist NAME" fits a COMMAND (peer.wire.ACTION_MAX, 128 bytes)
IMPLICIT = "all"  # the setlist of a show file that writes none: every song, in order
_SKIP_DIRS = {".backtrack-cache", "__pycache__"}


@dataclass
class LibrarySong:
    """A song file as read: the song (None when its file could not be read at all) and
    what was wrong with it."""

    file: Path
    song: Song | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


def scan(folders: Iterable[Path]) -> list[Path]:
    """Every `song.yaml` under the folders, in path order (a folder per song; nested
    folders such as artist/song are fine). Hidden folders and the stem cache are skipped."""
    out: list[Path] = []
    for top in folders:
        found = []
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
            if SONG_FILE in files:
                found.append(Path(root) / SONG_FILE)
        out.extend(sorted(found))
    return out


def read_song_file(file: Path, outputs: dict[str, tuple[int, ...]], *,
                   rate: int = DEFAULT_RATE, defaults: Defaults = NO_DEFAULTS) -> LibrarySong:
    """One song file; `rate` and `defaults` (the show's structure keys) as the show has
    them, so positions are in the device's frames and the show's click applies."""
    r = NodeReader(file)
    root = compose(file, r)
    song = None
    if root is not None:
        song = read_song(r, root, "", outputs, file.parent, default_title=file.parent.name,
                         file=file, song_key=file.parent.name, rate=rate, defaults=defaults)
    return LibrarySong(file, song, r.problems)


def load_library(folders: Iterable[Path], outputs: dict[str, tuple[int, ...]], *,
                 rate: int = DEFAULT_RATE, defaults: Defaults = NO_DEFAULTS
                 ) -> list[LibrarySong]:
    return [read_song_file(f, outputs, rate=rate, defaults=defaults) for f in scan(folders)]


class Library:
    """Songs by the names a setlist may use: the title first, then the folder name, then
    either without regard to case."""

    def __init__(self, songs: list[Song]):
        self.songs = songs
        self.by_title: dict[str, list[Song]] = {}
        self.by_key: dict[str, Song] = {}
        for s in songs:
            self.by_title.setdefault(s.title, []).append(s)
            if s.key:
                self.by_key.setdefault(s.key, s)

    def find(self, ref: str) -> list[Song]:
        if ref in self.by_title:
            return self.by_title[ref]
        if ref in self.by_key:
            return [self.by_key[ref]]
        low = ref.casefold()
        hits = {id(s): s for s in self.songs
                if s.title.casefold() == low or s.key.casefold() == low}
        return list(hits.values())

    def close_to(self, ref: str) -> list[str]:
        names = list(self.by_title) + [k for k in self.by_key if k not in self.by_title]
        return difflib.get_close_matches(ref, names, n=3, cutoff=0.6)


def read_setlists(r: NodeReader, node: yaml.Node | None, library: Library
                  ) -> tuple[dict[str, tuple[Song, ...]], set[int]]:
    """The show file's `setlists:` -> name -> songs with that night's changes applied, and
    the ids of the library songs some setlist uses (their problems are errors)."""
    used: set[int] = set()
    out: dict[str, tuple[Song, ...]] = {}
    if node is None:
        return out, used
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "setlists", "expected a mapping of setlist names to lists of songs, "
                "e.g. `friday: [Opener, Ballad]`")
        return out, used
    for knode, vnode in node.value:
        name = str(knode.value)
        key = f"setlists.{name}"
        if name in out:
            r.error(knode, key, "appears twice")
            continue
        if len(name.encode()) > SETLIST_NAME_MAX or not name.strip():
            r.error(knode, key, f"a setlist name is 1 to {SETLIST_NAME_MAX} bytes (it travels "
                    "between the units of a pair in `setlist NAME`)")
            continue
        items = r.sequence(vnode, key)
        if items is None:
            continue
        if not items:
            r.error(vnode, key, "the setlist is empty; add at least one song")
        songs = []
        for i, enode in enumerate(items):
            song = _entry(r, enode, f"{key}[{i}]", library)
            if song is not None:
                used.add(id(song[0]))
                songs.append(song[1])
        out[name] = tuple(songs)
    return out, used


def _entry(r: NodeReader, node: yaml.Node, key: str, library: Library
           ) -> tuple[Song, Song] | None:
    """(the library's song, the song as played that night)."""
    over: dict[str, yaml.Node] = {}
    if isinstance(node, yaml.MappingNode):
        m = r.mapping(node, key, ("song", "after", "gains", "count_in"), required=("song",))
        if m is None or "song" not in m:
            return None
        over = m
        ref = r.text(m["song"], f"{key}.song")
        ref_node = m["song"]
    else:
        ref = r.text(node, key)
        ref_node = node
    if ref is None:
        return None
    hits = library.find(ref)
    if not hits:
        near = library.close_to(ref)
        hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else \
            f"; the library has {len(library.songs)} song(s)"
        r.error(ref_node, key, f"no song titled '{ref}' (nor a song folder of that name) in "
                f"the library{hint}")
        return None
    if len(hits) > 1:
        where = ", ".join(str(s.file) if s.file else f"inline song line {s.line}" for s in hits)
        r.error(ref_node, key, f"{len(hits)} songs are titled '{ref}' ({where}); name one by "
                "its folder name or give them different titles")
        return None
    song = hits[0]
    played = song
    if "after" in over:
        after = r.text(over["after"], f"{key}.after", choices=AFTER)
        if after is not None:
            played = replace(played, after=after)
    if "gains" in over:
        played = _gains(r, over["gains"], f"{key}.gains", played)
    if "count_in" in over:
        st = count_in_override(r, over["count_in"], f"{key}.count_in", played.structure,
                               played.title)
        if st is not None:
            played = replace(played, structure=st)
    return song, played


def _gains(r: NodeReader, node: yaml.Node, key: str, song: Song) -> Song:
    """`gains: {keys: -3, guide: -6}`: that night's gain (dB) for the stems of that name,
    in place of the song file's."""
    if not isinstance(node, yaml.MappingNode):
        r.error(node, key, "expected stem names and gains in dB, e.g. `{keys: -3}`")
        return song
    stems = list(song.stems)
    for knode, vnode in node.value:
        name = str(knode.value)
        db = r.number(vnode, f"{key}.{name}", -120, 24)
        hit = song.stem_named(name)
        if not hit:
            names = sorted({s.label for s in song.stems})
            r.error(knode, f"{key}.{name}", f"'{song.title}' has no stem named '{name}'; its "
                    f"stems: {', '.join(names)}")
            continue
        if db is None:
            continue
        stems = [replace(s, gain_db=db) if s in hit else s for s in stems]
    return replace(song, stems=tuple(stems))


def demote(problems: list[Problem], why: str) -> list[Problem]:
    """Errors of a song no setlist uses: reported, but not a reason to refuse the show."""
    return [replace(p, severity="warning", message=f"{p.message} ({why})")
            if p.severity == "error" else p for p in problems]

"""A song's structure as the show uses it: sections, where a jump lands, count-in, click,
timecode and voice guide. Pure data and arithmetic on song frames, no I/O.

Everything is in song frames at the device rate (frame 0 = the audio's first frame; a
count-in plays at negative frames), computed once when the song file is read, so the
engine, the overlays and the status line compare integers and never re-derive a position.
The song-file keys that build it are read in `structfile`; the musical time in `tempomap`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from .tempomap import TempoMap

WHENS = ("now", "beat", "bar", "section_end")
"""Where a jump happens; besides these, `N_bars` (`2_bars`, `4_bars`): at the bar line N
bars after the start of the bar playing (so `1_bars` is `bar`)."""
N_BARS_MAX = 64
_N_BARS = re.compile(r"^(\d{1,3})_bars?$")
NEEDS_TEMPO = ("beat", "bar")  # and every N_bars
CLICK_MODES = ("auto", "stem", "off")
GUIDE_MODES = ("auto", "off")
LTC_FPS = (24.0, 25.0, 29.97, 30.0)
CROSSFADE_MS = (5.0, 50.0)
COUNT_IN_MAX = 8  # bars
RESERVED_SECTION_NAMES = ("next_section", "prev_section")  # words of the jump command
WHEN_HELP = "now, beat, bar, section_end or N_bars (e.g. 2_bars, 4_bars)"


def parse_when(text: str) -> str | None:
    """A `when` as typed (`bar`, `Bar`, `2_bars`, `1_bar`) -> its one spelling (`bar`,
    `2_bars`, `1_bars`); None when it is none of them. The control side and the song-file
    reader share it, so `jump chorus 2_bars` means what `jump_when: 2_bars` means."""
    w = str(text).strip().casefold()
    if w in WHENS:
        return w
    m = _N_BARS.match(w)
    if m and 1 <= int(m.group(1)) <= N_BARS_MAX:
        return f"{int(m.group(1))}_bars"
    return None


_TIMECODE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})[:;.](\d{2})$")


def parse_timecode(text: str, fps: float, drop_frame: bool) -> tuple[str | None, str]:
    """`HH:MM:SS:FF` (`;` before the frames is fine too) -> (it with colons, ""), or (None,
    what is wrong with it). Drop-frame timecode has no frames 00 and 01 at the start of a
    minute not divisible by ten: such a start does not exist on the desk's display."""
    m = _TIMECODE.match(str(text).strip())
    if not m:
        return None, f"'{text}' is not a timecode; write HH:MM:SS:FF, e.g. 01:00:00:00"
    hh, mm, ss, ff = (int(g) for g in m.groups())
    frames = round(fps)
    if hh > 23 or mm > 59 or ss > 59 or ff >= frames:
        return None, (f"'{text}' is not a timecode at {fps:g} fps: hours 00-23, minutes and "
                      f"seconds 00-59, frames 00-{frames - 1:02d}")
    if drop_frame and ss == 0 and ff < 2 and mm % 10:
        return None, (f"'{text}' does not exist in drop-frame timecode (frames 00 and 01 "
                      f"are skipped at minute {mm:02d}); start at "
                      f"{hh:02d}:{mm:02d}:00:02")
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}", ""


def needs_tempo(when: str) -> bool:
    """Whether a `when` (as parse_when spells it) is counted in beats or bars."""
    return when in NEEDS_TEMPO or when.endswith("_bars")


@dataclass(frozen=True)
class Section:
    """A named point of the song (`verse`, `chorus`): where jumps land and vamps loop.
    `bar`/`beat` as written (None for a position given in seconds)."""

    name: str
    frame: int
    line: int = 0
    bar: int | None = None
    beat: int | None = None

    @property
    def written(self) -> str:
        """The position as a person wrote it, for messages."""
        if self.bar is None:
            return ""
        return f"bar {self.bar}" + (f" beat {self.beat}" if self.beat not in (None, 1) else "")


@dataclass(frozen=True)
class ClickSpec:
    """The generated click. `mode`: auto (generated unless the song has a stem named
    `click`), stem (the song's click stem plays; only the count-in is generated), off.
    `sounds`: user samples by role (accent, beat, sub); the built-in sounds otherwise."""

    to: tuple[int, ...] = ()        # 0-based device channels
    outputs: tuple[str, ...] = ()   # the output names as written
    mode: str = "auto"
    level_db: float = -6.0
    subdivision: int = 1            # clicks a beat: 2 = eighths over a quarter-note beat
    accent: bool = True             # beat 1 of each bar louder / its own sound
    sounds: dict[str, Path] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class LtcSpec:
    """SMPTE linear timecode on an output. `start` is the timecode at the audio's frame 0
    (not at bar 1: a lighting desk's cue list follows the audio file); a count-in before
    frame 0 runs below it."""

    to: tuple[int, ...]
    outputs: tuple[str, ...] = ()
    fps: float = 25.0
    drop_frame: bool = False        # only at 29.97
    start: str = "00:00:00:00"
    level_db: float = -10.0


@dataclass(frozen=True)
class GuideSpec:
    """The spoken voice guide: each section's name a bar before it starts. `files`: a
    recorded cue per section name (as the section is written); otherwise a spoken one."""

    to: tuple[int, ...] = ()
    outputs: tuple[str, ...] = ()
    mode: str = "auto"
    files: dict[str, Path] = field(default_factory=dict, hash=False)
    level_db: float = 0.0
    count: bool = True   # speak the count-in's beats ("one, two, three, four")


@dataclass(frozen=True)
class Structure:
    """`sections` are in song order (strictly increasing frames). `count_in` is in bars
    of the first change's tempo and meter, played before bar 1."""

    tempo: TempoMap | None
    sections: tuple[Section, ...] = ()
    jump_when: str = "bar"
    crossfade_ms: float = 10.0
    count_in: int = 0
    click: ClickSpec | None = None
    ltc: LtcSpec | None = None
    guide: GuideSpec | None = None
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # the engine asks section_at on every pass of its loop: no list built per call
        object.__setattr__(self, "_starts", tuple(s.frame for s in self.sections))

    def section_at(self, frame: int) -> int:
        """Index of the section holding `frame`; -1 before the first."""
        return bisect_right(self._starts, frame) - 1

    def find(self, name: str) -> int | None:
        """The section a person means by `name` (case does not matter)."""
        want = name.strip().casefold()
        for i, s in enumerate(self.sections):
            if s.name.casefold() == want:
                return i
        return None

    def section_end(self, i: int, song_frames: int) -> int:
        """Where section i ends: the next section's start, or the song's end."""
        if i + 1 < len(self.sections):
            return self.sections[i + 1].frame
        return song_frames

    def boundary(self, frame: int, when: str, song_frames: int) -> int | None:
        """The frame at which a jump asked for at `frame` happens: `now` at once, `beat` /
        `bar` at the next beat / bar line strictly after it, `section_end` where the
        section holding it ends (before the first section: where that one starts),
        `N_bars` at the bar line N bars after the start of the bar holding it. None when
        that point is past the song's end; ValueError, with a message for the person who
        asked, when it cannot be computed (a bar without a tempo map, no sections)."""
        w = parse_when(when)
        if w is None:
            raise ValueError(f"'{when}' is not a point to jump at; use {WHEN_HELP}")
        if w == "now":
            at = frame
        elif w == "section_end":
            if not self.sections:
                raise ValueError("section_end needs the song's sections (sections: in its "
                                 "song file)")
            i = self.section_at(frame)
            at = self.sections[0].frame if i < 0 else self.section_end(i, song_frames)
        else:
            if self.tempo is None:
                raise ValueError(f"'{w}' counts beats and bars: the song needs a tempo "
                                 "(tempo: or tempo_map: in its song file); use now or "
                                 "section_end")
            if w == "beat":
                at = self.tempo.next_beat(frame)
            elif w == "bar":
                at = self.tempo.next_bar(frame)
            else:
                at = self.tempo.bars_after(frame, int(w.split("_", 1)[0]))
        return at if at <= song_frames else None

    def count_in_start(self) -> int:
        """The song frame play-with-count-in starts at: the count-in's first bar line, or
        frame 0 when the audio already reaches back that far (pre-roll before bar 1 plays
        under the count-in) or there is no count-in."""
        if self.tempo is None or self.count_in <= 0:
            return 0
        return min(0, self.tempo.frame_at(1 - self.count_in))

    def position_text(self, frame: int) -> str:
        """`13.3` (bar 13, beat 3), for the status line; "" without a tempo map."""
        if self.tempo is None:
            return ""
        bar, beat, _ = self.tempo.where(frame)
        return f"{bar}.{beat}"

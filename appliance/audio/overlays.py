"""What is generated rather than read: the click, LTC timecode and the spoken voice guide.

Each is a pure function of the song frame, added by the decode thread into the song's mix
before it is converted to device bytes. So a vamp or a jump that replays song frames replays
them exactly (the click stays on the beat the tempo map says, the timecode says the song
position), both units of a pair render the same samples, and the writer's per-period cost
does not change at all: the writer never knows they exist. A live change to them (a click
level) is a change of mix, which the live-mix work carries like any stem's.

A song with its own click stem still gets the generated count-in (the stem has nothing
before its first frame); `click: {mode: stem}` generates nothing else, `off` nothing at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..songfile import Song
from ..structure import GuideSpec
from .click import ClickRenderer, ClickSounds
from .ltc import LtcEncoder
from .mixer import db_to_gain
from .voiceguide import GuideRenderer, cached_spoken, load_cue, spoken, spoken_path

log = logging.getLogger("backtrack.engine")

Render = Callable[[int, np.ndarray], None]


class Overlays:
    """`parts`: (device channels, render(song frame 0, column)) each; the column is summed
    into every channel of its route."""

    def __init__(self, parts: Sequence[tuple[tuple[int, ...], Render]], block: int):
        self.parts = list(parts)
        self._col = np.zeros(block, np.float32)

    def render(self, frame0: int, mix: np.ndarray) -> None:
        n = len(mix)
        col = self._col[:n]
        for chans, fn in self.parts:
            col.fill(0.0)
            fn(frame0, col)
            for ch in chans:
                mix[:, ch] += col


def click_part(song: Song, rate: int, cache_dir: Path) -> tuple[tuple[int, ...], Render] | None:
    st = song.structure
    if st is None or st.click is None or st.tempo is None or st.click.mode == "off":
        return None
    spec = st.click
    tempo = st.tempo
    sounds, problems = ClickSounds.from_files(rate, spec.sounds.get("accent"),
                                              spec.sounds.get("beat"), spec.sounds.get("sub"))
    for p in problems:
        log.warning("song '%s': click: %s (the built-in sound plays)", song.title, p)
    renderer = ClickRenderer(sounds, db_to_gain(spec.level_db), accent=spec.accent)
    reach = sounds.longest
    sub = spec.subdivision
    # a click stem of its own: the generated click only counts in (before the audio)
    count_in_only = spec.mode == "stem" or any(
        s.label.casefold() == "click" for s in song.stems)

    def render(frame0: int, out: np.ndarray) -> None:
        end = frame0 + len(out)
        if count_in_only:
            if frame0 - reach >= 0:
                return
            end = min(end, 0)
        onsets = tempo.onsets(frame0 - reach + 1, end, sub)
        if onsets:
            renderer.render(frame0, out, onsets)

    return spec.to, render


def ltc_part(song: Song, rate: int) -> tuple[tuple[int, ...], Render] | None:
    st = song.structure
    if st is None or st.ltc is None:
        return None
    spec = st.ltc
    enc = LtcEncoder(spec.fps, rate, drop_frame=spec.drop_frame, start=spec.start,
                     level=db_to_gain(spec.level_db))
    return spec.to, enc.render


def guide_part(song: Song, rate: int, cache_dir: Path) -> tuple[tuple[int, ...], Render] | None:
    """Each section's name, spoken a bar before it starts (from the user's file, else the
    spoken cue the cache holds: `check` and the cache warmer make them with espeak-ng;
    never here, in the decode thread)."""
    st = song.structure
    if st is None or st.guide is None or st.guide.mode == "off":
        return None
    cues: list[tuple[int, np.ndarray]] = []
    for frame, word in count_words(song):
        samples, why = cached_spoken(word, rate, cache_dir)
        if samples is None:
            log.warning("song '%s': no spoken count '%s': %s", song.title, word, why)
            continue
        cues.append((frame, samples))
    for sec in st.sections:
        file = cue_file(st.guide, sec.name)
        if file is not None:
            samples, why = load_cue(file, rate)
        else:
            samples, why = cached_spoken(sec.name, rate, cache_dir)
        if samples is None:
            log.warning("song '%s': no spoken cue for section '%s': %s", song.title,
                        sec.name, why)
            continue
        cues.append((guide_start(st, sec.frame, rate), samples))
    if not cues:
        return None
    cues.sort(key=lambda c: c[0])
    return st.guide.to, GuideRenderer(cues, db_to_gain(st.guide.level_db)).render


def cue_file(guide: GuideSpec, section: str) -> Path | None:
    """The user's recording for a section, if the guide has one (under the name as the
    section writes it, or folded: a show-wide `files` key may be spelled otherwise)."""
    return guide.files.get(section) or guide.files.get(section.casefold())


COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
               "eleven", "twelve")


def count_words(song: Song) -> list[tuple[int, str]]:
    """(song frame, word) of each beat of the count-in, spoken on the beat: "one, two,
    three, four" each bar (guide on with `count: true`, the default)."""
    st = song.structure
    if st is None or st.guide is None or st.guide.mode == "off" or not st.guide.count \
            or st.tempo is None or st.count_in <= 0:
        return []
    return [(f, COUNT_WORDS[beat - 1]) for f, _bar, beat, _sub in
            st.tempo.onsets(st.count_in_start(), st.tempo.start_frame)
            if beat <= len(COUNT_WORDS)]


def spoken_sections(song: Song) -> list[str]:
    """What of `song` is spoken by espeak-ng (guide on, no recording): section names and
    the count-in's numbers, the cues that must be in the cache before the song plays,
    since the decode thread only reads them there."""
    st = song.structure
    if st is None or st.guide is None or st.guide.mode == "off":
        return []
    words = list(dict.fromkeys(w for _f, w in count_words(song)))
    return words + [sec.name for sec in st.sections if cue_file(st.guide, sec.name) is None]


def spoken_cues_cached(song: Song, rate: int, cache_dir: Path) -> bool:
    """Whether the cache holds every spoken cue of `song` (a stat per section): overlays
    built while one was missing (the cache warmer still at work after a start) lack that
    cue, and are worth building again once this says True."""
    return all(spoken_path(name, rate, cache_dir).exists() for name in spoken_sections(song))


def make_spoken_cues(songs: Sequence[Song], rate: int, cache_dir: Path
                     ) -> tuple[list[tuple[Song, str]], list[tuple[Song, str, str]]]:
    """Speak into the cache every cue `songs` need (`check`, the cache warmer and `render`
    call it; a cue already there costs a file read). Returns (song, section) made or found,
    and (song, section, why not) for the others; never raises."""
    ok: list[tuple[Song, str]] = []
    failed: list[tuple[Song, str, str]] = []
    for song in songs:
        for name in spoken_sections(song):
            samples, why = spoken(name, rate, cache_dir)
            if samples is None:
                failed.append((song, name, why))
            else:
                ok.append((song, name))
    return ok, failed


def guide_start(st, frame: int, rate: int) -> int:
    """A bar before the section (a beat-less song: two seconds before it)."""
    if st.tempo is not None:
        bar = st.tempo.where(frame)[0]
        return st.tempo.frame_at(bar - 1)
    return frame - 2 * rate


def overlays_for(song: Song, rate: int, cache_dir: Path, block: int) -> Overlays | None:
    parts = [p for p in (click_part(song, rate, cache_dir), ltc_part(song, rate),
                         guide_part(song, rate, cache_dir)) if p is not None]
    return Overlays(parts, block) if parts else None

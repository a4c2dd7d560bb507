"""The live mix: mutes, solos and trims a band changes on stage, by name, as a pure value.

Why it looks like this:

- One immutable value (`LiveMix`) per change, with a version number: the engine hands it to
  the decoder, which mixes every block with the gains of the value it holds, and the
  follower of a pair receives the leader's value whole (appliance.peer.wire MIX). No lock,
  no half-applied change.
- Names are what people say: a stem's label (its `name:` key, else its file name without
  extension) or an output of the show file. When a name is both, it is the output (the
  stems routed there are reached through it). Case is ignored.
- A stem mute, solo or trim changes that stem's gain before it is mixed. An output mute or
  trim is a gain on the output's device channels after the mix, so it reaches what the
  decoder generates there too (click, voice guide, timecode). A solo (of stems, or of an
  output: the stems routed to it) silences the other stems but never the generated click
  and guide: a band that solos the bass to find a wrong note still needs its click.
- Scope: by default a change holds for the rest of the night for that name, in every song
  that has it ("keys are live tonight"); `scope: song` changes last until the song changes.
- Trims are limited to -60..+12 dB: below -60 is a mute, and more than +12 dB of live gain
  on a stem mixed at line level is a mistake waiting to clip.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

TRIM_MIN_DB, TRIM_MAX_DB = -60.0, 12.0
MIX_TEXT_MAX = 480  # bytes of the mix's JSON a pair's wire carries (one datagram, < 576)
MIX_VERBS = ("mute", "unmute", "solo", "unsolo", "trim", "mix")
SCOPES = ("night", "song")


class MixError(ValueError):
    """A mix change that cannot be made; the message names what exists. The mix is
    unchanged."""


@dataclass(frozen=True)
class LiveMix:
    """What the band changed live. Names are stored casefolded."""

    muted: frozenset[str] = frozenset()
    solo: frozenset[str] = frozenset()
    trim_db: tuple[tuple[str, float], ...] = ()
    song_scoped: frozenset[str] = frozenset()  # names whose change ends with the song
    version: int = 0
    _trims: dict[str, float] = field(default_factory=dict, init=False, compare=False,
                                     repr=False)

    def __post_init__(self) -> None:
        self._trims.update(self.trim_db)

    @property
    def empty(self) -> bool:
        return not (self.muted or self.solo or self.trim_db)

    # ---- gains ------------------------------------------------------------------------------
    def stem_gain(self, label: str, outputs: Iterable[str]) -> float:
        """The live gain of a stem (a factor on its song-file gain)."""
        name = label.casefold()
        outs = {o.split(".")[0].casefold() for o in outputs}
        if name in self.muted:
            return 0.0
        if self.solo and name not in self.solo and not outs & self.solo:
            return 0.0
        db = self._trims.get(name)
        return 1.0 if db is None else 10.0 ** (db / 20.0)

    def channel_gains(self, outputs: Mapping[str, Sequence[int]], channels: int
                      ) -> np.ndarray | None:
        """Per device channel: the outputs' mutes and trims (None when there are none, so
        the decoder does no work for them)."""
        gains = None
        for out, chans in outputs.items():
            name = out.casefold()
            g = 0.0 if name in self.muted else (
                10.0 ** (self._trims[name] / 20.0) if name in self._trims else None)
            if g is None:
                continue
            if gains is None:
                gains = np.ones(channels, np.float32)
            for c in chans:
                gains[c] *= g
        return gains

    # ---- changes ----------------------------------------------------------------------------
    def changed(self, verb: str, target: str | None, names: Names, db: float | None = None,
                scope: str = "night") -> LiveMix:
        """The mix after one change (a new version), or MixError naming what exists."""
        if scope not in SCOPES:
            raise MixError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if verb == "reset":
            return LiveMix(version=self.version + 1)
        if verb not in ("mute", "unmute", "solo", "unsolo", "trim"):
            raise MixError(f"unknown mix change {verb!r}; one of mute, unmute, solo, unsolo, "
                           "trim, reset")
        name = names.find(target)
        muted, solo, trims = set(self.muted), set(self.solo), dict(self._trims)
        if verb == "mute":
            muted.add(name)
        elif verb == "unmute":
            muted.discard(name)
        elif verb == "solo":
            solo.add(name)
        elif verb == "unsolo":
            solo.discard(name)
        else:
            trims[name] = check_trim(db)
            if trims[name] == 0.0:
                del trims[name]
        scoped = set(self.song_scoped)
        if scope == "song":
            scoped.add(name)
        else:
            scoped.discard(name)
        made = self._made(muted, solo, trims, scoped)
        if len(made.to_json().encode()) > MIX_TEXT_MAX:
            raise MixError("too many live changes for a pair's wire to carry "
                           f"({MIX_TEXT_MAX} bytes); undo some, or `mix reset`")
        return made

    def song_ended(self) -> LiveMix:
        """The changes made for one song are taken back when another song starts."""
        if not self.song_scoped:
            return self
        keep = lambda n: n not in self.song_scoped  # noqa: E731
        return self._made({n for n in self.muted if keep(n)}, {n for n in self.solo if keep(n)},
                          {n: v for n, v in self._trims.items() if keep(n)}, set())

    def _made(self, muted: set[str], solo: set[str], trims: dict[str, float],
              scoped: set[str]) -> LiveMix:
        used = muted | solo | set(trims)
        return LiveMix(frozenset(muted), frozenset(solo), tuple(sorted(trims.items())),
                       frozenset(scoped & used), self.version + 1)

    # ---- status, state file, wire ---------------------------------------------------------
    def as_status(self) -> dict:
        return {"muted": sorted(self.muted), "solo": sorted(self.solo),
                "trim_db": dict(self.trim_db), "song_only": sorted(self.song_scoped)}

    def to_json(self) -> str:
        """Compact, for the state file and the peer wire (MIX carries it)."""
        return json.dumps({"m": sorted(self.muted), "s": sorted(self.solo),
                           "t": dict(self.trim_db), "o": sorted(self.song_scoped)},
                          separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, version: int = 0) -> LiveMix:
        """Raises MixError for anything but what `to_json` writes (a state file edited by
        hand, a peer of another version)."""
        try:
            d = json.loads(text)
            muted = {str(n).casefold() for n in d.get("m", [])}
            solo = {str(n).casefold() for n in d.get("s", [])}
            trims = {str(n).casefold(): check_trim(v) for n, v in dict(d.get("t", {})).items()}
            scoped = {str(n).casefold() for n in d.get("o", [])}
        except (ValueError, TypeError, AttributeError) as exc:
            raise MixError(f"not a live mix: {exc}") from None
        return replace(LiveMix(), version=version - 1)._made(muted, solo, trims, scoped)


def cc_to_db(value: int) -> float:
    """A MIDI fader's value as a trim: the General MIDI volume law (gain (v/127)^2), so 127
    is 0 dB, 100 about -4 dB, 64 about -12 dB, and 0 the floor (-60 dB); rounded to 0.1 dB
    so a fader's small moves do not each make a change."""
    if value <= 0:
        return TRIM_MIN_DB
    return max(TRIM_MIN_DB, round(40.0 * math.log10(min(value, 127) / 127.0), 1))


def describe(status: Mapping) -> str:
    """A mix's status (`LiveMix.as_status`) as a person reads it: "muted keys; guide -6 dB"."""
    parts = [f"muted {', '.join(status['muted'])}"] if status.get("muted") else []
    parts += [f"solo {', '.join(status['solo'])}"] if status.get("solo") else []
    parts += [f"{n} {v:+g} dB" for n, v in (status.get("trim_db") or {}).items()]
    return "; ".join(parts) or "none"


def check_trim(db: object) -> float:
    try:
        v = float(db)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MixError(f"trim needs a number of dB ({TRIM_MIN_DB:g}..+{TRIM_MAX_DB:g}), "
                       f"not {db!r}") from None
    if not math.isfinite(v) or not TRIM_MIN_DB <= v <= TRIM_MAX_DB:
        raise MixError(f"trim {v:g} dB is outside {TRIM_MIN_DB:g}..+{TRIM_MAX_DB:g} dB "
                       "(below that, mute it)")
    return round(v, 2)


@dataclass(frozen=True)
class Names:
    """What the live mix can name in the show in use: its stems and its outputs."""

    stems: frozenset[str]
    outputs: frozenset[str]
    shown: tuple[str, ...] = ()  # as written, for messages

    @classmethod
    def of(cls, songs: Iterable, outputs: Iterable[str]) -> Names:
        labels = sorted({st.label for s in songs for st in s.stems}, key=str.casefold)
        outs = sorted(outputs, key=str.casefold)
        return cls(frozenset(n.casefold() for n in labels), frozenset(o.casefold() for o in outs),
                   (", ".join(labels), ", ".join(outs)))

    def find(self, target: str | None) -> str:
        name = (target or "").strip().casefold()
        if not name:
            raise MixError("name a stem or an output")
        if name in self.outputs or name in self.stems:
            return name
        stems, outs = self.shown or ("", "")
        raise MixError(f"no stem or output named {target!r}; stems: {stems or 'none'}; "
                       f"outputs: {outs or 'none'}")

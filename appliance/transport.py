"""The transport as pure logic: which song, which state, what a command does.

No threads, no clocks, no audio: `Transport.apply(action)` returns the new state and what
the engine must do about it (`Effect`), so every rule below is tested in microseconds.

States: `stopped` (nothing to play: the set has ended), `cued` (a song is ready at its
first frame), `playing`, `paused` (holding a song at a frame). Commands:

- play: cued -> playing; paused -> playing (resume where it paused); playing: nothing.
- stop: playing/paused -> cued at the start of the same song (stopping mid-song usually
  means "again from the top" or "wait"; `next` moves on).
- pause: playing -> paused; paused -> playing (a footswitch pause is a toggle).
- play_stop: playing -> stop, otherwise play.
- next / prev / goto N: while playing, the target song plays from its first frame at
  once; otherwise it is cued. Past either end of the set: nothing happens.
- end of song (reported by the engine), per song `after`: `next` -> the next song plays
  gaplessly, `stop` -> the next song is cued, `pause` -> paused at frame 0 of the next
  song. After the last song: stopped (end of set); `next` then cues song 1, `prev` the
  last song, `goto N` song N.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .actions import Action

STOPPED, CUED, PLAYING, PAUSED = "stopped", "cued", "playing", "paused"


@dataclass(frozen=True)
class State:
    state: str = CUED
    song: int = 0  # 0-based; meaningless when stopped at end of set


@dataclass(frozen=True)
class Effect:
    """What the engine must do. `start` plays `song` from frame 0 now; `cue` readies it;
    `resume`/`pause`/`halt` act on the song under the writer; `message` explains a no-op."""

    kind: str  # start | cue | resume | pause | halt | none
    song: int | None = None
    message: str = ""


class Transport:
    def __init__(self, nsongs: int, afters: list[str]):
        if nsongs < 1:
            raise ValueError("a setlist needs at least one song")
        self.nsongs = nsongs
        self.afters = afters
        self.current = State(CUED, 0)

    def apply(self, action: Action) -> Effect:
        s = self.current
        name = action.name
        if name == "play_stop":
            name = "stop" if s.state == PLAYING else "play"
        if name == "play":
            if s.state == CUED:
                return self._set(State(PLAYING, s.song), Effect("start", s.song))
            if s.state == PAUSED:
                return self._set(State(PLAYING, s.song), Effect("resume", s.song))
            if s.state == STOPPED:
                return Effect("none", message="end of the set: use goto N or prev")
            return Effect("none", message="already playing")
        if name == "stop":
            if s.state in (PLAYING, PAUSED):
                return self._set(State(CUED, s.song), Effect("halt", s.song))
            return Effect("none", message="not playing")
        if name == "pause":
            if s.state == PLAYING:
                return self._set(replace(s, state=PAUSED), Effect("pause", s.song))
            if s.state == PAUSED:
                return self._set(replace(s, state=PLAYING), Effect("resume", s.song))
            return Effect("none", message="not playing")
        if name in ("next", "prev", "goto"):
            if name == "goto":
                target = (action.arg or 0) - 1
                if not 0 <= target < self.nsongs:
                    return Effect("none", message=f"there is no song {action.arg}; songs are "
                                  f"numbered 1 to {self.nsongs}")
            elif s.state == STOPPED:
                target = self.nsongs - 1 if name == "prev" else 0
            else:
                target = s.song + (1 if name == "next" else -1)
            if not 0 <= target < self.nsongs:
                return Effect("none", message="no song " + ("after" if name == "next" else
                                                            "before") + " this one")
            if s.state == PLAYING:
                return self._set(State(PLAYING, target), Effect("start", target))
            return self._set(State(CUED, target), Effect("cue", target))
        return Effect("none", message=f"unknown action '{action}'")

    def song_ended(self, song: int) -> Effect:
        """The engine reports that `song` played to its last frame. The writer has already
        moved on gaplessly for `after: next`; this keeps the books in step."""
        after = self.afters[song]
        nxt = song + 1
        if nxt >= self.nsongs:
            return self._set(State(STOPPED, song), Effect("halt", song))
        if after == "next":
            return self._set(State(PLAYING, nxt), Effect("none", nxt))
        if after == "pause":
            return self._set(State(PAUSED, nxt), Effect("cue", nxt))
        return self._set(State(CUED, nxt), Effect("cue", nxt))

    def _set(self, state: State, effect: Effect) -> Effect:
        self.current = state
        return effect

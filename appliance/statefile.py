"""State that must survive a power cut: written so that the file on disk is always either
the old version or the new one, never a torn mix or an empty file.

The recipe (the only one that holds on ext4, f2fs and vfat alike): write a temporary file
in the same folder, fsync it, rename it over the old name, then fsync the folder so the
rename itself is on the card. A crash before the rename leaves the old file (and at worst
a stray temporary file, removed on the next write); after it, the new one.

Reading is tolerant on purpose: a missing, empty or garbled file gives the defaults and a
reason, because a box that refuses to start over a bad state file is worse than one that
forgets which song was cued.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

VERSION = 1
_TMP_SUFFIX = ".tmp"


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash at any instant leaves the old or the new
    contents. Raises OSError (disk full, read-only folder): the caller decides whether that
    matters."""
    path = Path(path)
    folder = path.parent
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable. Some file systems cannot fsync a folder (EINVAL);
    there the rename is as durable as it will get."""
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _remove_stale(path: Path) -> None:
    """Temporary files a crash left behind: they are never the current state."""
    with contextlib.suppress(OSError):
        for p in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                p.unlink()


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` as JSON, atomically and durably."""
    doc = {"version": VERSION, **state}
    write_atomic(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def load(path: str | os.PathLike | None, defaults: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(state, note). Never raises: a missing or damaged file gives `defaults` and a note
    saying why, for the log. Keys of the wrong type fall back one by one."""
    out = dict(defaults)
    if path is None:
        return out, "no state_file configured"
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return out, f"{path} does not exist yet (first start)"
    except OSError as exc:
        return out, f"cannot read {path}: {exc.strerror or exc}"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return out, f"{path} is damaged ({len(raw)} bytes, not JSON); using defaults"
    if not isinstance(doc, dict):
        return out, f"{path} holds no state object; using defaults"
    bad = []
    for key, dflt in defaults.items():
        if key not in doc:
            continue
        val = doc[key]
        ok = (dflt is None or isinstance(val, type(dflt))
              or (isinstance(dflt, float) and isinstance(val, int)))
        if isinstance(val, bool) and not isinstance(dflt, bool) and dflt is not None:
            ok = False
        if ok:
            out[key] = val
        else:
            bad.append(key)
    note = f"read {path}"
    if bad:
        note += f" (ignored {', '.join(bad)}: wrong type)"
    return out, note


class ShowState:
    """What the daemon keeps across restarts: the setlist chosen, the song that was current
    (index and title), the transport state, the position, and whether the last run ended
    cleanly.

    Written when the song or state changes, every `every_s` while playing, and at shutdown;
    never per period (the SD card would wear, and a position is only a hint: after a power
    cut the band restarts the song, or a hot-standby peer brings the unit back in step).
    """

    DEFAULTS: dict[str, Any] = {"song": 0, "title": "", "state": "cued", "position_s": 0.0,
                                "clean_shutdown": True, "saved_at": "", "setlist": "",
                                "mix": ""}

    def __init__(self, path: str | os.PathLike | None, every_s: float = 30.0):
        self.path = Path(path) if path is not None else None
        self.every_s = every_s
        self.last: dict[str, Any] = {}
        self._key: tuple | None = None
        self._saved_mono = 0.0
        self.error = ""

    def read(self) -> tuple[dict[str, Any], str]:
        return load(self.path, self.DEFAULTS)

    def setlist(self) -> str:
        """The setlist chosen when the daemon last ran ("" when none was saved)."""
        state, _note = self.read()
        return state["setlist"] if self.path is not None else ""

    def cue_index(self, titles: list[str]) -> tuple[int | None, str]:
        """The song to cue at start: the saved title if the set still has it (songs may have
        been reordered), else the saved index if it is in range, else None."""
        state, note = self.read()
        if self.path is None or not self.path.exists():
            return None, note
        title, idx = state["title"], state["song"]
        if title and title in titles:
            found = titles.index(title)
        elif isinstance(idx, int) and 0 <= idx < len(titles):
            found = idx
        else:
            return None, f"{note}; saved song {idx + 1 if isinstance(idx, int) else idx} " \
                         f"is not in this set"
        how = "cleanly" if state["clean_shutdown"] else "without a clean stop (power cut or crash)"
        return found, (f"{note}: the last run ended {how} in song {idx + 1} "
                       f"'{title}' ({state['state']} at {state['position_s']:.1f} s)")

    def update(self, snapshot: dict[str, Any], now: float, final: bool = False) -> bool:
        """Save if the song or state changed, on the periodic tick while playing, or at the
        end. Returns True when written. A failed write is remembered in `error` (the show
        goes on; a read-only card must not stop the music)."""
        if self.path is None:
            return False
        key = (snapshot.get("song"), snapshot.get("state"), snapshot.get("setlist"),
               snapshot.get("mix"))
        due = snapshot.get("state") == "playing" and now - self._saved_mono >= self.every_s
        if not final and key == self._key and not due:
            return False
        doc = {**snapshot, "clean_shutdown": final,
               "saved_at": _utc_now()}
        try:
            save(self.path, doc)
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror or exc}"
            self._key = key  # do not retry every tick; the next change tries again
            self._saved_mono = now
            return False
        self.error = ""
        self._key = key
        self._saved_mono = now
        self.last = doc
        return True


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

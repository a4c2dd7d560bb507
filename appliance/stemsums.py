"""The stems' checksums: written before the tour, verified before each show.

Why: a stem that rotted on the SD card, was half-copied, or was replaced by the wrong
version plays wrong without any error; only a checksum taken when the show was known good
can tell. `backtrack check --write-checksums` writes the manifest (default
`checksums.sha256` beside the show file, `selftest.checksums` for another place) and the
self-test (`backtrack check --live`, and at the daemon's start) compares every stem of the
setlist in use with it.

The manifest is `sha256sum`'s format, so it can be checked by hand too
(`cd /etc/backtrack && sha256sum -c checksums.sha256`): one line per file, the hex digest,
two spaces, the path relative to the manifest's folder (absolute when the file is
elsewhere); lines starting with `#` are comments. It is written atomically.

Verifying reads every byte of every stem, so on the box it runs in a child process at the
lowest CPU and disk priority (`python -m appliance.stemsums verify`, a JSON request on
stdin, one JSON result per stem on stdout), never in the daemon's threads; the daemon stops
it when a song starts.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks (hashlib releases the GIL on each)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[Path, str]:
    """File (absolute) -> hex digest. UserError when it cannot be read; bad lines are
    skipped (a hand edit must not make every stem 'unlisted')."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no checksums stored: {path} does not exist (write them with "
                        "`backtrack check --write-checksums`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the checksums {path}: {exc}") from None
    out: dict[Path, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            digest, sep, name = line.partition(" *")  # sha256sum's binary mode
        if not sep or len(digest) != 64:
            continue
        f = Path(name)
        out[f if f.is_absolute() else (path.parent / f)] = digest.lower()
    return out


def write_manifest(path: Path, files: Iterable[Path], progress=None
                   ) -> tuple[int, list[str]]:
    """Hash `files` and write the manifest atomically; (files written, problems: files
    that could not be read, left out)."""
    path = Path(path)
    files = sorted({Path(f) for f in files})
    lines = [f"# backtrack stem checksums (sha256), written {time.strftime('%Y-%m-%d %H:%M')} "
             "by `backtrack check --write-checksums`; `sha256sum -c` reads this file too"]
    problems = []
    done = 0
    for i, f in enumerate(files):
        if progress:
            progress(i, len(files), f.name)
        try:
            digest = sha256_file(f)
        except OSError as exc:
            problems.append(f"{f}: not written: {exc.strerror or exc}")
            continue
        try:
            name = str(f.relative_to(path.parent))
        except ValueError:
            name = str(f)
        lines.append(f"{digest}  {name}")
        done += 1
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UserError(f"cannot write the checksums {path}: {exc.strerror or exc}") from None
    return done, problems


def verify(entries: list[dict[str, Any]], manifest: Path | None, quick: bool = False
           ) -> Iterator[dict[str, Any]]:
    """One result per entry ({"file", "song", "title"}): status ok | missing | unreadable |
    not_audio | changed | unlisted | unchecked (quick: headers only, no checksum), with a
    detail. A missing or unreadable manifest makes every readable stem `unlisted` and is
    said in the first result's `manifest` field."""
    from .audio.source import probe_file

    sums: dict[Path, str] = {}
    manifest_problem = None
    if manifest is not None and not quick:
        try:
            sums = read_manifest(manifest)
        except UserError as exc:
            manifest_problem = str(exc)
    first = True
    for e in entries:
        f = Path(e["file"])
        res = dict(e)
        if first:
            res["manifest"] = manifest_problem
            first = False
        if not f.exists():
            res.update(status="missing", detail="file not found")
            yield res
            continue
        info, _promised = probe_file(f)
        if info.problem is not None:
            res.update(status="missing" if "not found" in info.problem else "not_audio",
                       detail=info.problem)
            yield res
            continue
        if quick:
            res.update(status="unchecked", detail="readable; checksum not verified")
            yield res
            continue
        try:
            digest = sha256_file(f)
        except OSError as exc:
            res.update(status="unreadable", detail=f"read error: {exc.strerror or exc}")
            yield res
            continue
        want = sums.get(f) or sums.get(f.resolve())
        if want is None:
            res.update(status="unlisted", detail="no stored checksum")
        elif want != digest:
            res.update(status="changed", detail=f"checksum differs from {manifest.name}"
                       if manifest else "checksum differs")
        else:
            res.update(status="ok", detail="checksum matches")
        yield res


# ---- the child process ----------------------------------------------------------------------

_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "armv7l": 314, "armv6l": 314, "i686": 289}
_IOPRIO_CLASS_IDLE = 3


def lowest_priority() -> None:
    """Only CPU and disk time nobody else wants (the decoder reads stems from the same SD
    card), and gone with the daemon that started it."""
    from .warmcache import _lowest_priority
    _lowest_priority()
    nr = _IOPRIO_SET.get(platform.machine())
    if nr is not None:
        try:
            ctypes.CDLL(None, use_errno=True).syscall(nr, 1, 0, _IOPRIO_CLASS_IDLE << 13)
        except (OSError, AttributeError):
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="verify stems against their checksums "
                                 "(a JSON request on stdin, JSON lines out)")
    ap.add_argument("command", choices=["verify"])
    args = ap.parse_args(argv)
    assert args.command == "verify"
    lowest_priority()
    try:
        req = json.load(sys.stdin)
        manifest = Path(req["manifest"]) if req.get("manifest") else None
        entries = list(req["files"])
        quick = bool(req.get("quick"))
    except (ValueError, KeyError, TypeError) as exc:
        print(json.dumps({"error": f"bad request: {exc}"}), flush=True)
        return 1
    for res in verify(entries, manifest, quick):
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Write deploy/constraints.txt: every package the player needs on the box, pinned to the
version installed in this environment (the project's venv: `make lock`).

The set is the project's runtime dependencies (pyproject's `dependencies`, not the `test`
extra) and theirs, walked through the installed packages' metadata, so pytest, ruff,
JACK-Client and the like stay out unless the player itself needs them. Markers are
evaluated for Linux on both aarch64 (the box) and x86_64 (a PC), Python as here.

    .venv/bin/python deploy/lock.py            rewrite deploy/constraints.txt
    .venv/bin/python deploy/lock.py --check    exit 1 if it differs from this venv
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

PROJECT = "backtrack-appliance"
OUT = Path(__file__).resolve().parent / "constraints.txt"
MACHINES = ("aarch64", "x86_64")

HEADER = """\
# Every Python package the player runs with on the box, pinned: deploy/install.sh installs
# with `pip install -c deploy/constraints.txt`, so both units of a pair (and a box rebuilt
# from scratch) run exactly these versions. Generated from the project's venv by
# `make lock` (deploy/lock.py): the runtime dependencies in pyproject.toml and theirs, not
# the test tools. Refresh it deliberately (upgrade the venv, run the tests, `make lock`,
# commit), then install on both units.
"""


def wanted(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    for machine in MACHINES:
        for extra in extras or {""}:
            env = {"platform_machine": machine, "sys_platform": "linux",
                   "platform_system": "Linux", "os_name": "posix", "extra": extra}
            if req.marker.evaluate(env):
                return True
    return False


def closure(project: str) -> dict[str, str]:
    """name -> installed version for everything `project` needs at run time."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(project, set())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"lock.py: {name} is needed but not installed here; install the project "
                     f"into this venv first (pip install -e .)")
        if canonicalize_name(name) != canonicalize_name(project):
            pins[dist.metadata["Name"]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if wanted(req, extras):
                todo.append((req.name, set(req.extras)))
    return pins


def render(pins: dict[str, str]) -> str:
    body = "".join(f"{name}=={pins[name]}\n"
                   for name in sorted(pins, key=lambda n: canonicalize_name(n)))
    return HEADER + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 when the file differs from this environment")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    text = render(closure(PROJECT))
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} differs from this environment: run `make lock`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out} ({text.count('==')} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Backtrack appliance: a headless multi-output backtrack player for live bands."""

from __future__ import annotations

DISTRIBUTION = "backtrack-appliance"
"""The name pip installs the package under (pyproject.toml's project.name)."""


def package_version() -> str:
    """The version pyproject.toml declares, its one home: read from the installed package's
    metadata (a wheel or `pip install -e`), else from pyproject.toml beside the package when
    run from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    import tomllib
    from pathlib import Path

    try:
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def __getattr__(name: str) -> str:
    # computed on first use: the daemon and `ctl` need not look up package metadata to start
    if name == "__version__":
        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The installed version of vigil, for ``vigil --version`` and the API's description."""

from __future__ import annotations


def vigil_version() -> str:
    """The installed distribution's version (the wheel's, not a source tree's guess)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:
        return "unknown (not installed)"

"""The versions of what shapes a run's numbers, recorded in every summary and bench
result: numpy's random streams, the simulator's event order, the statistics and the
Python that runs them may all change between releases (requirements.lock pins them)."""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata

SHAPING = ("numpy", "simpy", "pandas", "hydra-core", "omegaconf")


@cache
def package_versions() -> dict[str, str]:
    """Python's version and each shaping package's (``"absent"`` if not installed)."""
    found = {"python": platform.python_version()}
    for name in SHAPING:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found

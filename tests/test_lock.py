"""requirements.lock, the versions every install takes: it pins every dependency that
pyproject.toml names, each pin satisfies pyproject's range, and this environment was
installed from it (the packages that shape the numbers are at their pinned versions)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from experiments.runs.versions import SHAPING, package_versions

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines if not line.startswith("actormux")]


def test_the_lock_pins_every_declared_dependency_within_its_range():
    locked = pins()
    assert len(locked) > 100
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in requirements.lock (make lock)"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{requirement.name}=={locked[name]} is outside pyproject's {requirement.specifier}"
        )


def test_this_environment_was_installed_from_the_lock():
    locked = pins()
    recorded = package_versions()
    for name in SHAPING:
        assert metadata.version(name) == locked[canonicalize_name(name)] == recorded[name], name

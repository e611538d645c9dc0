"""requirements.lock, the versions every install takes: it pins every dependency that
pyproject.toml names, each pin satisfies pyproject's range, and this environment was
installed from it (the packages that shape the numbers are at their pinned versions)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from experiments.runs.versions import SHAPING, package_versions

ROOT = Path(__file__).resolve().parent.parent


SEPARATE = {"ray": "requirements-ray.lock"}  # extras with a venv and lock of their own


def pins(lock: str = "requirements.lock") -> dict[str, str]:
    found = {}
    for line in (ROOT / lock).read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def declared(extras: str = "shared") -> list[Requirement]:
    """The core dependencies and the extras in the shared lock, or (``extras`` names one
    of :data:`SEPARATE`) the core and that extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if (extras == "shared" and name not in SEPARATE) or name == extras:
            lines += extra
    return [Requirement(line) for line in lines if not line.startswith("actormux")]


@pytest.mark.parametrize("extras", ["shared", *SEPARATE])
def test_the_lock_pins_every_declared_dependency_within_its_range(extras):
    locked = pins(SEPARATE.get(extras, "requirements.lock"))
    assert len(locked) > 100
    for requirement in declared(extras):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in requirements.lock (make lock)"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{requirement.name}=={locked[name]} is outside pyproject's {requirement.specifier}"
        )


def test_a_separate_lock_keeps_the_packages_that_shape_the_numbers_at_the_same_versions():
    """A sweep on Ray gives the numbers a sweep with joblib gives."""
    shared = pins()
    for lock in SEPARATE.values():
        separate = pins(lock)
        for name in SHAPING:
            assert separate[canonicalize_name(name)] == shared[canonicalize_name(name)], name


def test_this_environment_was_installed_from_the_lock():
    locked = pins()
    recorded = package_versions()
    for name in SHAPING:
        assert metadata.version(name) == locked[canonicalize_name(name)] == recorded[name], name

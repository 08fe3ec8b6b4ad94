"""The committed lock files agree with pyproject.toml (`make lock` writes them).

``requirements/lock.txt`` is what every make target and CI install; ``requirements/floors.txt``
is what ``make test-floors`` installs. A dependency changed in pyproject.toml without
``make lock`` fails here, before it can make a build that differs from machine to machine.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import Specifier
from packaging.utils import canonicalize_name
from packaging.version import Version
from scripts.lock import BUILD, FLOORS, LOCK, TOOLS, pins, user_dependencies

PYPROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())


def requirements(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def every_requirement() -> list[Requirement]:
    extras = list(PYPROJECT["project"]["optional-dependencies"])
    build = [Requirement(line) for line in PYPROJECT["build-system"]["requires"]]
    return [*requirements(*extras), *build]


def floor(requirement: Requirement) -> Version:
    lows = [spec.version for spec in requirement.specifier if spec.operator in (">=", "==")]
    assert len(lows) == 1, f"{requirement}: give one lower bound (>=), so that it can be tested"
    return Version(lows[0])


@pytest.mark.parametrize("requirement", every_requirement(), ids=str)
def test_the_lock_pins_every_requirement_within_its_range(requirement: Requirement) -> None:
    locked = pins(LOCK)
    name = canonicalize_name(requirement.name)
    assert name in locked, f"{name} is not in {LOCK.name}: run `make lock`"
    assert requirement.specifier.contains(locked[name], prereleases=True), (
        f"{LOCK.name} has {name}=={locked[name]}, outside {requirement}: run `make lock`"
    )


def test_every_pin_carries_its_hashes() -> None:
    for path in (LOCK, FLOORS):
        lines = path.read_text().splitlines()
        for at, line in enumerate(lines):
            if "==" in line and not line.startswith((" ", "#")):
                assert "--hash=sha256:" in lines[at + 1], f"{path.name}: no hash for {line}"


def test_the_floors_are_the_lowest_versions_pyproject_allows() -> None:
    floors = pins(FLOORS)
    for requirement in requirements("encryption", "compression"):
        name = canonicalize_name(requirement.name)
        assert name in floors, f"{name} is not in {FLOORS.name}: run `make lock`"
        assert Version(floors[name]) == floor(requirement), (
            f"{FLOORS.name} has {name}=={floors.get(name)}, not the floor of {requirement}: "
            "run `make lock`"
        )
    assert sorted(user_dependencies()) == sorted(
        canonicalize_name(r.name) for r in requirements("encryption", "compression")
    )


def test_the_floors_keep_the_test_tools_of_the_lock() -> None:
    locked, floors = pins(LOCK), pins(FLOORS)
    for tool in TOOLS:
        assert floors[tool] == locked[tool], f"{tool}: {floors[tool]} != {locked[tool]}"


def test_the_build_backend_is_locked() -> None:
    lines = [line.strip() for line in BUILD.read_text().splitlines()]
    wanted = [Requirement(line) for line in lines if line and not line.startswith("#")]
    locked = pins(LOCK)
    assert {canonicalize_name(r.name) for r in wanted} <= set(locked)
    assert Specifier(">=1.18").contains(locked["hatchling"])

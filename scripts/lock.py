"""Write the two committed lock files from pyproject.toml (`make lock` runs this).

- ``requirements/lock.txt``: every package that ``make venv``/``test``/``demo``/``bench`` and CI
  install (the runtime dependencies, every extra, and the build backend), each pinned to one
  version with its hashes. Resolved for every platform and every Python the package supports
  (``--universal``), so the same file serves any machine.
- ``requirements/floors.txt``: the same environment with every dependency a user installs
  (the runtime dependencies and the ``encryption``/``compression`` extras) at the lowest
  version pyproject.toml allows; the test tools keep their versions from the lock, so that
  ``make test-floors`` changes only what a user's own install could change.

Usage: ``python scripts/lock.py write UV`` (UV: the uv binary to run) writes both files,
taking the newest releases that pyproject.toml allows. ``python scripts/lock.py versions
[FILE]`` prints the installed version of each dependency a user installs (for the logs of
``make test-floors`` and ``make test-latest``) and, given a compiled FILE, fails unless the
installed versions are the ones it pins.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
FLOORS = ROOT / "requirements" / "floors.txt"
BUILD = ROOT / "requirements" / "build.in"
PYTHON = "3.11"  # the oldest Python the package supports: the resolution covers it and newer
# the test tools and the build backend: pinned to the lock's versions in the floors' too
TOOLS = (
    "editables",
    "hatchling",
    "httpx",
    "hypothesis",
    "mypy",
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "pyyaml",
    "ruff",
    "types-pyyaml",
)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(path: Path) -> dict[str, str]:
    """Read ``name==version`` pins (names normalised) from a compiled requirements file."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[normalise(match.group(1))] = match.group(2)
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compile_(uv: str, output: Path, *args: str) -> None:
    command = [
        uv, "pip", "compile", "--quiet", "--universal", "--python-version", PYTHON,
        "--generate-hashes", "--upgrade", "--no-header", "--output-file", str(output), *args,
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT)


def user_dependencies() -> list[str]:
    """The names of the runtime dependencies and of the user-facing extras' packages."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in ("encryption", "compression"):
        lines += project["optional-dependencies"][extra]
    names = (re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0] for line in lines)
    return list(dict.fromkeys(normalise(name) for name in names))


def versions(pinned: Path | None) -> int:
    """Print each user dependency's installed version; 1 if one differs from ``pinned``'s."""
    wanted = pins(pinned) if pinned else {}
    wrong = 0
    for name in user_dependencies():
        installed = metadata.version(name)
        expected = wanted.get(name, installed)
        wrong += expected != installed
        note = "" if expected == installed else f"  (the lock says {expected})"
        print(f"  {name:<20} {installed}{note}")
    return 1 if wrong else 0


def write(uv: str) -> None:
    compile_(uv, LOCK, "pyproject.toml", "--all-extras", str(BUILD.relative_to(ROOT)))
    locked = pins(LOCK)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as tools:
        tools.write("".join(f"{name}=={locked[name]}\n" for name in TOOLS))
        tools.flush()
        compile_(
            uv, FLOORS, "pyproject.toml", str(BUILD.relative_to(ROOT)), "--extra", "dev",
            "--extra", "encryption", "--extra", "compression", "--resolution", "lowest-direct",
            "--constraint", tools.name,
        )  # fmt: skip
    print(f"wrote {LOCK.relative_to(ROOT)} and {FLOORS.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) <= 2:
        write(argv[1] if len(argv) == 2 else "uv")
        return 0
    if argv[:1] == ["versions"] and len(argv) <= 2:
        return versions(Path(argv[1]) if len(argv) == 2 else None)
    print("usage: lock.py write [UV] | lock.py versions [FILE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

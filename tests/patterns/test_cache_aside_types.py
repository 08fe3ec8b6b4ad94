"""``get_or_set_json`` is typed as its loader's value (checked by mypy --strict on a program)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """
from resilient_cache import MemoryCache, get_or_set_json

async def load_count() -> int:
    return 3

async def load_user() -> dict[str, str]:
    return {"name": "Ada"}

async def main() -> None:
    cache = MemoryCache()
    count = await get_or_set_json(cache, "visits", load_count)
    user = await get_or_set_json(cache, "user", load_user)
    reveal_type(count)
    reveal_type(user)
    total: int = count + 1
    name: str = user["name"]
"""


@pytest.mark.slow
def test_the_value_is_typed_as_the_loaders(tmp_path: Path) -> None:
    """Before: the whole JSON union, so ``count + 1`` did not type-check."""
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    notes = [line for line in done.stdout.splitlines() if "Revealed type" in line]
    revealed = [note.split("Revealed type is ")[1].replace("builtins.", "") for note in notes]
    assert revealed == ['"int"', '"dict[str, str]"'], done.stdout
    assert done.returncode == 0, done.stdout

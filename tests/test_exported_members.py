"""``resilient_cache.__all__`` is the public API: sorted, and every public name in it."""

import subprocess
import sys
import types

import pytest

import resilient_cache


def test_all_is_sorted_and_names_every_public_member() -> None:
    public = [
        name
        for name, member in vars(resilient_cache).items()
        if not isinstance(member, types.ModuleType)
        and (not name.startswith("_") or name == "__version__")
    ]
    assert resilient_cache.__all__ == sorted(public)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("resilient_cache.toxiproxy", "resilient_cache.testing.toxiproxy"),
        ("resilient_cache.bench", "resilient_cache.cli.bench"),
        ("resilient_cache.cache_aside", "resilient_cache.patterns.cache_aside"),
    ],
)
def test_a_moved_module_still_imports_with_a_deprecation_warning(old: str, new: str) -> None:
    code = f"import {old}"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    strict = [sys.executable, "-W", "error::DeprecationWarning", "-c", code]
    failed = subprocess.run(strict, capture_output=True, text=True, check=False)
    assert failed.returncode != 0
    assert new in failed.stderr

"""``resilient_cache.__all__`` is the public API: sorted, and every public name in it."""

import subprocess
import sys
import types

import pytest

import resilient_cache


def test_all_is_sorted_and_names_every_public_member() -> None:
    """Some are imported on first use (``__getattr__``): they are members all the same."""
    public = [
        name
        for name in dir(resilient_cache)
        if not isinstance(getattr(resilient_cache, name), types.ModuleType)
        and (not name.startswith("_") or name == "__version__")
    ]
    assert resilient_cache.__all__ == sorted(public)


def test_importing_the_package_leaves_the_settings_for_later() -> None:
    """pydantic-settings alone was a third of ``import resilient_cache``."""
    code = (
        "import sys, resilient_cache\n"
        "print('resilient_cache.settings' in sys.modules, 'pydantic_settings' in sys.modules)\n"
        "resilient_cache.CacheSettings\n"
        "print('resilient_cache.settings' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.split() == ["False", "False", "True"]


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

"""``resilient_cache.__all__`` is the public API: sorted, and every public name in it."""

import types

import resilient_cache


def test_all_is_sorted_and_names_every_public_member() -> None:
    public = [
        name
        for name, member in vars(resilient_cache).items()
        if not isinstance(member, types.ModuleType)
        and (not name.startswith("_") or name == "__version__")
    ]
    assert resilient_cache.__all__ == sorted(public)


def test_a_moved_module_still_imports_with_a_deprecation_warning() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    old = "import resilient_cache.toxiproxy as t; assert t.ToxiproxyServer"
    assert subprocess.run([sys.executable, "-c", old], check=False).returncode == 0
    strict = [sys.executable, "-W", "error::DeprecationWarning", "-c", old]
    failed = subprocess.run(strict, capture_output=True, text=True, check=False)
    assert failed.returncode != 0
    assert "resilient_cache.testing.toxiproxy" in failed.stderr

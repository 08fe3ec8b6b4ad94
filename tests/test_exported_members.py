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

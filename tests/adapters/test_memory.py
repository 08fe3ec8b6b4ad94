"""MemoryCache specifics: the injectable clock, the LRU bound, namespaced views."""

from __future__ import annotations

import pytest

from resilient_cache import ConfigurationError, MemoryCache, Success
from resilient_cache.testing import ManualClock
from tests.fresh_python import python_output


async def test_entries_expire_by_the_injected_clock(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set("k", "v", ttl=10)
    clock.advance(9.5)
    assert await cache.get("k") == Success("v")
    assert await cache.ttl("k") == Success(1)  # rounded up: an existing key never says 0
    clock.advance(0.5)
    assert await cache.get("k") == Success(None)
    assert await cache.exists("k") == Success(False)
    assert await cache.increment("k") == Success(1)  # an expired key counts as missing


async def test_expire_and_ttl_follow_the_clock(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set("k", "v")
    assert await cache.expire("k", 3) == Success(True)
    clock.advance(1.2)
    assert await cache.ttl("k") == Success(2)
    clock.advance(2)
    assert await cache.expire("k", 3) == Success(False)


async def test_expired_keys_are_not_counted_by_delete_pattern(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set_many({"a:1": "v", "a:2": "v"}, ttl=5)
    await cache.set("a:3", "v")
    clock.advance(5)
    assert await cache.delete_pattern("a:*") == Success(1)


async def test_lru_bound_evicts_the_least_recently_used(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock, max_entries=2)
    await cache.set("a", "1")
    await cache.set("b", "2")
    await cache.get("a")  # a is now more recent than b
    await cache.set("c", "3")
    assert await cache.get_many(["a", "b", "c"]) == Success({"a": "1", "b": None, "c": "3"})


async def test_namespaced_views_share_one_store(clock: ManualClock) -> None:
    root = MemoryCache(clock=clock, max_entries=3)
    tenant = root.namespaced("t")
    await tenant.set("k", "v")
    assert await root.get("t:k") == Success("v")
    assert await tenant.get("t:k") == Success(None)
    assert "namespace='t'" in repr(tenant)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [({"max_entries": 0}, "max_entries"), ({"max_entries": True}, "max_entries"),
     ({"namespace": ""}, "namespace")],
)  # fmt: skip
def test_bad_settings_raise_naming_the_setting(kwargs: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        MemoryCache(**kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


async def test_memory_cache_is_an_async_context_manager_like_redis_adapter() -> None:
    async with MemoryCache() as cache:
        assert await cache.set("k", "v") == Success(None)
    await cache.aclose()  # closing twice is fine


def test_manual_clock_never_goes_back() -> None:
    clock = ManualClock(start=5)
    clock.advance(1)
    assert clock() == 6
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)


def test_importing_the_package_has_no_side_effects() -> None:
    code = (
        "import socket, threading; before = threading.active_count();"
        "socket.socket.connect = lambda *a: (_ for _ in ()).throw(AssertionError('connect'));"
        "import resilient_cache, resilient_cache.testing;"
        "assert threading.active_count() == before; print(resilient_cache.__version__)"
    )
    assert python_output(code)


async def test_a_pathological_pattern_is_refused_not_raised() -> None:
    cache = MemoryCache()
    await cache.set("a" * 1000, "v")
    result = await cache.delete_pattern("*a" * 1100)
    assert not result.is_success()
    assert await cache.exists("a" * 1000) == Success(True)

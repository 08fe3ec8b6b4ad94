"""NearCacheLayer around MemoryCache with a hand-driven invalidation source (no Redis)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from resilient_cache.adapters.memory import MemoryCache
from resilient_cache.domain.errors import ConfigurationError, ErrorCode
from resilient_cache.domain.result import Success
from resilient_cache.layers.circuit_breaker import BreakerState, CircuitBreakerLayer
from resilient_cache.layers.near_cache import ManualInvalidations, NearCacheLayer
from resilient_cache.testing import ManualClock, ScriptedCache


class CountingCache(MemoryCache):
    """MemoryCache that counts the reads reaching it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return await super().get(key)

    async def get_many(self, keys: list[str]):  # type: ignore[no-untyped-def]
        self.reads += 1
        return await super().get_many(keys)


def build(
    *, clock: ManualClock | None = None, registry: CollectorRegistry | None = None, **limits: int
) -> tuple[NearCacheLayer, CountingCache, ManualInvalidations]:
    inner = CountingCache()
    source = ManualInvalidations()
    near = NearCacheLayer(
        inner,
        source,
        clock=clock or ManualClock(),
        registry=registry,
        **limits,  # type: ignore[arg-type]
    )
    return near, inner, source


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"cache": "default", **labels})
    return value or 0.0


async def test_hit_is_served_without_reaching_the_inner_cache() -> None:
    near, inner, source = build()
    await inner.set("k", "v")
    assert await near.get("k") == Success("v")
    assert await near.get("k") == Success("v")
    assert inner.reads == 1
    assert source.started


async def test_a_miss_is_not_cached() -> None:
    near, inner, _ = build()
    assert await near.get("k") == Success(None)
    assert await near.get("k") == Success(None)
    assert inner.reads == 2


async def test_an_invalidation_drops_the_copy() -> None:
    near, inner, source = build()
    await inner.set("k", "v1")
    await near.get("k")
    await inner.set("k", "v2")  # behind the layer's back, like another instance
    source.invalidate("k")
    assert await near.get("k") == Success("v2")


async def test_writes_through_the_layer_drop_the_copy() -> None:
    near, inner, source = build()
    for write in (
        lambda: near.set("k", "new"),
        lambda: near.delete("k"),
        lambda: near.increment("k"),  # fails (not a number), drops all the same
        lambda: near.set_many({"k": "new"}),
        lambda: near.expire("k", 10),
        near.flush,
        lambda: near.delete_pattern("*"),
    ):
        await inner.set("k", "old")
        source.invalidate("k")
        assert await near.get("k") == Success("old")
        await write()
        await inner.set("k", "new")
        assert await near.get("k") == Success("new")


async def test_entries_limit_evicts_the_least_recently_used() -> None:
    near, inner, _ = build(max_entries=2)
    await inner.set_many({"a": "1", "b": "2", "c": "3"})
    await near.get("a")
    await near.get("b")
    await near.get("a")  # b is now the least recently used
    await near.get("c")
    assert len(near) == 2
    reads = inner.reads
    await near.get("a")
    await near.get("c")
    assert inner.reads == reads
    await near.get("b")
    assert inner.reads == reads + 1


async def test_bytes_limit() -> None:
    near, inner, _ = build(max_bytes=10)
    await inner.set_many({"a": "1234", "b": "1234", "big": "x" * 20})
    await near.get("a")
    await near.get("b")
    assert near.size_bytes == 10
    await near.get("big")  # larger than the whole budget: never stored
    assert len(near) == 2
    await inner.set("c", "1")
    await near.get("c")  # 2 bytes: the oldest goes
    assert near.size_bytes <= 10
    assert len(near) == 2


async def test_both_forms_of_a_value_count_against_max_bytes() -> None:
    """A key read with get and with get_json holds two forms: both are counted, so that
    max_bytes bounds what is held (900 KB accounted, 1.8 MB held before)."""
    near, inner, _ = build(max_bytes=1000)
    value = '"' + "x" * 400 + '"'  # a JSON string: its text and its JSON form
    await inner.set("k", value)
    await near.get_json("k")  # the JSON form
    await near.get("k")  # and the text: both held
    held = len("k") + len(value) + len(value)  # the get_json form is re-encoded alike
    assert near.size_bytes == held
    await inner.set("k2", '"' + "y" * 600 + '"')
    await near.get_json("k2")
    await near.get("k2")  # both forms would not fit beside k: something goes
    assert near.size_bytes <= 1000


async def test_max_age() -> None:
    clock = ManualClock()
    near, inner, _ = build(clock=clock, max_age=5)
    await inner.set("k", "v")
    await near.get("k")
    clock.advance(4.9)
    await near.get("k")
    assert inner.reads == 1
    clock.advance(0.1)
    await near.get("k")
    assert inner.reads == 2


async def test_channel_loss_flushes_and_stops_serving_until_restored() -> None:
    near, inner, source = build()
    await inner.set("k", "v")
    await near.get("k")
    source.lose()
    assert len(near) == 0
    assert not near.serving
    await near.get("k")
    await near.get("k")
    assert inner.reads == 3  # nothing stored while the channel is down
    source.restore()
    await near.get("k")
    await near.get("k")
    assert inner.reads == 4


async def test_an_entry_of_an_older_generation_is_never_served() -> None:
    near, inner, source = build()
    await inner.set("k", "v")
    await near.get("k")
    source.generation += 1  # reconnected without telling (listeners missed the loss)
    await near.get("k")
    assert inner.reads == 2


async def test_a_read_racing_an_invalidation_does_not_store_the_old_value() -> None:
    inner = CountingCache()
    source = ManualInvalidations()
    near = NearCacheLayer(inner, source)
    await inner.set("k", "old")
    gate = asyncio.Event()
    original = inner.get

    async def slow_get(key: str):  # type: ignore[no-untyped-def]
        result = await original(key)
        await gate.wait()  # the old value is on its way back...
        return result

    inner.get = slow_get  # type: ignore[method-assign]
    reading = asyncio.create_task(near.get("k"))
    await asyncio.sleep(0)
    await inner.set("k", "new")
    source.invalidate("k")  # ...when the write is announced
    gate.set()
    assert await reading == Success("old")
    inner.get = original  # type: ignore[method-assign]
    assert await near.get("k") == Success("new")


async def test_a_read_spanning_a_channel_loss_and_restore_stores_nothing() -> None:
    near, inner, source = build()
    await inner.set("k", "v")
    gate = asyncio.Event()
    original = inner.get

    async def slow_get(key: str):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await original(key)

    inner.get = slow_get  # type: ignore[method-assign]
    reading = asyncio.create_task(near.get("k"))
    await asyncio.sleep(0)
    source.lose()
    source.restore()
    gate.set()
    await reading
    assert len(near) == 0


async def test_get_json_returns_a_fresh_value_each_time() -> None:
    near, inner, _ = build()
    await inner.set_json("k", {"a": [1]})
    first = await near.get_json("k")
    assert first == Success({"a": [1]})
    assert isinstance(first, Success) and isinstance(first.value, dict)
    first.value["a"] = "mutated"
    assert await near.get_json("k") == Success({"a": [1]})


async def test_get_many_fetches_only_what_is_not_held() -> None:
    near, inner, _ = build()
    await inner.set_many({"a": "1", "b": "2"})
    await near.get("a")
    fetched: list[list[str]] = []
    original = inner.get_many

    async def spy(keys: list[str]):  # type: ignore[no-untyped-def]
        fetched.append(list(keys))
        return await original(keys)

    inner.get_many = spy  # type: ignore[method-assign]
    assert await near.get_many(["a", "b", "c"]) == Success({"a": "1", "b": "2", "c": None})
    assert fetched == [["b", "c"]]
    assert await near.get_many(["a", "b"]) == Success({"a": "1", "b": "2"})
    assert fetched == [["b", "c"]]


async def test_metrics() -> None:
    registry = CollectorRegistry()
    near, inner, source = build(registry=registry)
    await inner.set("k", "v")
    await near.get("k")
    await near.get("k")
    source.invalidate("k")
    await near.get("k")
    source.lose()
    assert sample(registry, "resilient_cache_near_cache_lookups_total", result="hit") == 1
    assert sample(registry, "resilient_cache_near_cache_lookups_total", result="miss") == 2
    assert sample(registry, "resilient_cache_near_cache_invalidations_total") == 1
    assert sample(registry, "resilient_cache_near_cache_flushes_total", reason="channel_lost") == 1
    assert sample(registry, "resilient_cache_near_cache_entries") == 0
    # families are created once per registry: a second layer shares them
    build(registry=registry)


@pytest.mark.parametrize("setting", ["max_entries", "max_bytes", "max_age"])
def test_limits_must_be_positive(setting: str) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        NearCacheLayer(MemoryCache(), ManualInvalidations(), **{setting: 0})  # type: ignore[arg-type]


async def test_aclose_stops_the_source() -> None:
    near, _, source = build()
    await near.aclose()
    assert source.closed


async def test_an_open_breaker_flushes_and_stops_serving() -> None:
    registry = CollectorRegistry()
    inner = MemoryCache()
    breaker = CircuitBreakerLayer(inner)
    near = NearCacheLayer(breaker, ManualInvalidations(), registry=registry)
    await inner.set("k", "v")
    await near.get("k")
    assert len(near) == 1
    near.on_breaker_transition(BreakerState.CLOSED, BreakerState.OPEN)
    assert len(near) == 0 and not near.serving
    assert sample(registry, "resilient_cache_near_cache_flushes_total", reason="breaker_open") == 1
    await near.get("k")
    assert len(near) == 0
    near.on_breaker_transition(BreakerState.OPEN, BreakerState.HALF_OPEN)
    await near.get("k")
    assert len(near) == 1


async def test_the_breaker_inside_is_followed() -> None:
    scripted = ScriptedCache()
    near = NearCacheLayer(CircuitBreakerLayer(scripted, fail_max=1), ManualInvalidations())
    await scripted.set("k", "v")
    await near.get("k")
    assert len(near) == 1
    scripted.fail_always(ErrorCode.CONNECTION)
    await near.set("other", "x")  # fails: the breaker opens
    assert not near.serving and len(near) == 0


async def test_closing_is_not_counted_as_a_channel_loss() -> None:
    registry = CollectorRegistry()
    inner = MemoryCache()
    source = ManualInvalidations()
    near = NearCacheLayer(inner, source, registry=registry)
    await inner.set("k", "v")
    await near.get("k")

    async def close_like_the_real_source() -> None:
        source.lose()  # the real source tells its listeners as its task stops

    source.aclose = close_like_the_real_source  # type: ignore[method-assign]
    await near.aclose()
    assert len(near) == 0
    assert sample(registry, "resilient_cache_near_cache_flushes_total", reason="channel_lost") == 0


async def test_a_get_many_above_the_backends_batch_limit_is_refused_like_the_backend() -> None:
    """Held keys are served locally, but a batch the backend would refuse is refused all
    the same (a call must not depend on what happens to be held)."""
    from resilient_cache import ErrorCode, Failure, Limits  # noqa: PLC0415

    inner = MemoryCache(limits=Limits(max_batch_keys=3))
    near = NearCacheLayer(inner, ManualInvalidations())
    await inner.set_many({"a": "1", "b": "2", "c": "3"})
    assert (await near.get_many(["a", "b", "c"])).is_success()  # now held
    result = await near.get_many(["a", "b", "c", "a"])
    assert isinstance(result, Failure) and result.error.code is ErrorCode.VALIDATION
    await near.aclose()

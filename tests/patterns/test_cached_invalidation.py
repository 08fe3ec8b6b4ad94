"""@cached and @invalidate together: an invalidation reaches @cached's in-process state.

A computation in flight when an invalidation comes must not write its older value back (not
even when its write was already on its way), and the stale copy must never serve an
invalidated value, whether the invalidation came through ``@invalidate``, through
``CachedFunction.invalidate``, while Redis was down, or on the outbox's replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry

from resilient_cache import (
    CacheError,
    CacheProtocol,
    ConfigurationError,
    ErrorCode,
    Failure,
    Layer,
    MemoryCache,
    RedisAdapter,
    Result,
    Success,
)
from resilient_cache.layers.base import Call
from resilient_cache.patterns import Outbox, ServeStale, cached, invalidate, outbox_for
from resilient_cache.testing import ManualClock, ScriptedCache

T = TypeVar("T")


@pytest.fixture
def scripted(clock: ManualClock) -> ScriptedCache:
    return ScriptedCache(MemoryCache(clock=clock))


@pytest.fixture
async def outbox(scripted: ScriptedCache) -> AsyncIterator[Outbox]:
    async with Outbox(scripted, ping_interval=None, registry=CollectorRegistry()) as built:
        yield built


class Database:
    """The source of truth; a read can be held after it has read (a slow query)."""

    def __init__(self) -> None:
        self.rows: dict[int, str] = {1: "old", 2: "two"}
        self.reads = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.read_done = asyncio.Event()

    async def read(self, user_id: int) -> str:
        self.reads += 1
        value = self.rows[user_id]  # read now...
        self.read_done.set()
        await self.hold.wait()  # ...returned later
        return value


# -- @invalidate reaches @cached ------------------------------------------------------------


async def test_a_load_that_read_before_the_write_does_not_write_its_value_back(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    db = Database()

    @cached(scripted, key="user:{user_id}", ttl=3600)
    async def get_user(user_id: int) -> str:
        return await db.read(user_id)

    @invalidate(outbox, keys=["user:{user_id}"])
    async def rename(user_id: int, name: str) -> None:
        db.rows[user_id] = name

    db.hold.clear()
    reader = asyncio.create_task(get_user(1))
    await db.read_done.wait()  # it has read "old"...
    await rename(1, "new")  # ...the write and its delete happen meanwhile
    db.hold.set()
    assert await reader == "old"  # its caller was there before the write
    await get_user.drain()
    assert await scripted.get("user:1") == Success(None)  # "old" was not written back
    assert await get_user(1) == "new"


async def test_a_successful_invalidation_clears_the_stale_copy(
    scripted: ScriptedCache, outbox: Outbox, clock: ManualClock
) -> None:
    db = Database()

    @cached(scripted, key="user:{user_id}", ttl=3600, clock=clock, serve_stale=ServeStale(300))
    async def get_user(user_id: int) -> str:
        return await db.read(user_id)

    @invalidate(outbox, keys=["user:{user_id}"])
    async def rename(user_id: int, name: str) -> None:
        db.rows[user_id] = name

    assert await get_user(1) == "old"
    assert await get_user(2) == "two"
    await rename(1, "new")  # Redis deletes the entry; the stale copy must forget it too
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)  # then Redis goes away
    assert await get_user(1) == "new"  # never the old value
    assert await get_user(2) == "two"  # not invalidated: still served stale
    assert db.reads == 3


async def test_an_invalidation_deferred_during_an_outage_clears_the_stale_copy_at_once(
    scripted: ScriptedCache, outbox: Outbox, clock: ManualClock
) -> None:
    db = Database()

    @cached(scripted, key="user:{user_id}", ttl=3600, clock=clock, serve_stale=ServeStale(300))
    async def get_user(user_id: int) -> str:
        return await db.read(user_id)

    @invalidate(outbox, keys=["user:{user_id}"])
    async def rename(user_id: int, name: str) -> None:
        db.rows[user_id] = name

    assert await get_user(1) == "old"
    scripted.fail_always(ErrorCode.CONNECTION)
    await rename(1, "new")
    assert outbox.pending == 1
    assert await get_user(1) == "new"  # the stale copy forgot it, though Redis did not


async def test_a_pattern_invalidation_forgets_the_keys_it_matches_as_redis_would(
    scripted: ScriptedCache, outbox: Outbox, clock: ManualClock
) -> None:
    versions: dict[str, int] = {}

    @cached(scripted, key="user:{user_id}:{section}", ttl=3600, clock=clock,
            serve_stale=ServeStale(300))  # fmt: skip
    async def section(user_id: str, section: str) -> str:
        name = f"{user_id}/{section}"
        versions[name] = versions.get(name, 0) + 1
        return f"{name}@{versions[name]}"

    @invalidate(outbox, pattern="user:{user_id}:*")
    async def update(user_id: str) -> None:
        pass

    for user_id in ("4", "42", "4*"):
        await section(user_id, "profile")
    scripted.fail_always(ErrorCode.CONNECTION)
    await update("4")  # deferred in Redis; in process, user:4:* only
    await update("4*")  # the value's * is escaped: user:4*:* only, not user:42:...
    assert await section("4", "profile") == "4/profile@2"  # forgotten: computed
    assert await section("4*", "profile") == "4*/profile@2"
    assert await section("42", "profile") == "42/profile@1"  # still served stale


async def test_an_invalidation_replayed_after_recovery_forgets_what_was_read_meanwhile(
    scripted: ScriptedCache, outbox: Outbox, clock: ManualClock
) -> None:
    db = Database()

    @cached(scripted, key="user:{user_id}", ttl=3600, clock=clock, serve_stale=ServeStale(300))
    async def get_user(user_id: int) -> str:
        return await db.read(user_id)

    @invalidate(outbox, keys=["user:{user_id}"])
    async def rename(user_id: int, name: str) -> None:
        db.rows[user_id] = name

    assert await get_user(1) == "old"
    scripted.fail_always(ErrorCode.CONNECTION)
    await rename(1, "new")  # deferred
    scripted.heal()
    assert await get_user(1) == "old"  # Redis still has it: read, and remembered
    assert await outbox.replay() == 1
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    assert await get_user(1) == "new"  # the replay made the stale copy forget it


async def test_the_wholesale_action_after_an_overflow_clears_every_stale_copy(
    scripted: ScriptedCache, clock: ManualClock
) -> None:
    calls: list[int] = []

    @cached(scripted, key="user:{user_id}", ttl=3600, clock=clock, serve_stale=ServeStale(300))
    async def get_user(user_id: int) -> str:
        calls.append(user_id)
        return f"user {user_id} v{len(calls)}"

    async with Outbox(
        scripted, max_pending=1, ping_interval=None, registry=CollectorRegistry()
    ) as outbox:
        scripted.fail_always(ErrorCode.CONNECTION)
        await outbox.delete("a")
        await outbox.delete("b")  # overflow: a flush is owed
        scripted.heal()
        assert await get_user(7) == "user 7 v1"  # remembered after the overflow
        assert await outbox.replay() == 1  # the flush stands for invalidations of any key
        scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
        assert await get_user(7) == "user 7 v2"  # so the stale copy forgot everything


async def test_a_write_cancelled_after_its_commit_still_owes_its_invalidation(
    scripted: ScriptedCache, outbox: Outbox, clock: ManualClock
) -> None:
    committed = asyncio.Event()
    db = Database()

    @cached(scripted, key="user:{user_id}", ttl=3600, clock=clock, serve_stale=ServeStale(300))
    async def get_user(user_id: int) -> str:
        return await db.read(user_id)

    @invalidate(outbox, keys=["user:{user_id}"])
    async def rename(user_id: int, name: str) -> None:
        db.rows[user_id] = name  # committed...
        committed.set()
        await asyncio.Event().wait()  # ...then the request times out before returning

    assert await get_user(1) == "old"
    call = asyncio.create_task(rename(1, "new"))
    await committed.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert outbox.pending == 1  # owed, not lost
    assert await outbox.replay() == 1
    assert await get_user(1) == "new"


# -- the write-back races the invalidation's delete -------------------------------------------


class SlowSet(Layer):
    """Holds every SET until ``gate`` opens (a pool wait, a retry after a timeout...)."""

    name = "slowset"

    def __init__(self, inner: CacheProtocol) -> None:
        super().__init__(inner)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        if operation == "set":
            self.waiting.set()
            await self.gate.wait()
        return await call()


@pytest.mark.parametrize("through", ["CachedFunction.invalidate", "@invalidate"])
async def test_a_write_back_landing_after_the_invalidations_delete_is_deleted_again(
    through: str,
) -> None:
    memory = MemoryCache()
    cache = SlowSet(memory)
    rows = {1: "old"}

    @cached(cache, key="user:{user_id}", ttl=3600)
    async def get_user(user_id: int) -> str:
        return rows[user_id]

    @invalidate(cache, keys=["user:{user_id}"])
    async def rename(user_id: int, name: str) -> None:
        rows[user_id] = name

    try:
        assert await get_user(1) == "old"  # its write-back now waits for a connection
        await cache.waiting.wait()
        if through == "@invalidate":
            await rename(1, "new")  # the DEL reaches Redis before the SET
        else:
            rows[1] = "new"
            assert await get_user.invalidate(1) == Success(False)
        cache.gate.set()  # the old value lands after the DEL...
        await get_user.drain()
        assert await memory.get("user:1") == Success(None)  # ...and is deleted again
        assert await get_user(1) == "new"
    finally:
        await outbox_for(cache).aclose()


class WritesButSaysNot(SlowSet):
    """A SET that lands but reports a CONNECTION failure 'not applied' (a backend whose
    maybe_applied cannot be trusted, like the cluster's was after a failed refresh)."""

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        result = await super()._around(operation, key, call)
        if operation == "set":
            error = CacheError.of(ErrorCode.CONNECTION, "lost", operation="set", key=key)
            return Failure(error)
        return result


async def test_a_write_back_that_failed_after_an_invalidation_is_deleted_again_anyway() -> None:
    """Deleting once more is cheap; a stale value served until its TTL is not: only a write
    surely refused before sending (the request's own fault) is trusted not to have landed."""
    memory = MemoryCache()
    cache = WritesButSaysNot(memory)
    rows = {1: "old"}

    @cached(cache, key="user:{user_id}", ttl=3600)
    async def get_user(user_id: int) -> str:
        return rows[user_id]

    try:
        assert await get_user(1) == "old"
        await cache.waiting.wait()
        rows[1] = "new"
        assert await get_user.invalidate(1) == Success(False)
        cache.gate.set()  # the old value lands, and says it did not
        await get_user.drain()
        assert await memory.get("user:1") == Success(None)  # deleted again all the same
    finally:
        await outbox_for(cache).aclose()


# -- CachedFunction.invalidate goes through an outbox ---------------------------------------


async def test_cached_invalidate_is_deferred_while_the_cache_is_down_and_replayed(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @cached(scripted, key="user:{user_id}", ttl=3600, outbox=outbox)
    async def get_user(user_id: int) -> int:
        return user_id

    await get_user(1)
    scripted.fail_always(ErrorCode.CONNECTION)
    result = await get_user.invalidate(1)
    assert isinstance(result, Failure)  # the first try, as before...
    assert outbox.pending == 1  # ...but owed, not lost
    scripted.heal()
    assert await outbox.replay() == 1
    assert await scripted.get("user:1") == Success(None)


async def test_cached_invalidate_defaults_to_the_caches_shared_outbox(
    scripted: ScriptedCache,
) -> None:
    @cached(scripted, key="user:{user_id}", ttl=3600)
    async def get_user(user_id: int) -> int:
        return user_id

    shared = outbox_for(scripted)
    try:
        scripted.fail_always(ErrorCode.CONNECTION)
        await get_user.invalidate(1)
        assert shared.pending == 1
    finally:
        await shared.aclose()


async def test_cached_invalidate_reaches_the_other_functions_of_the_cache(
    scripted: ScriptedCache, outbox: Outbox, clock: ManualClock
) -> None:
    calls: list[str] = []

    @cached(scripted, key="user:{user_id}", ttl=3600, outbox=outbox)
    async def get_user(user_id: int) -> str:
        return "A"

    @cached(scripted, key="user:{user_id}", ttl=3600, clock=clock, serve_stale=ServeStale(300))
    async def get_user_again(user_id: int) -> str:  # another function on the same key
        calls.append("B")
        return f"B{len(calls)}"

    assert await get_user_again(1) == "B1"
    await get_user.invalidate(1)
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    assert await get_user_again(1) == "B2"  # its stale copy had forgotten the key


async def test_an_outbox_of_another_cache_is_refused(scripted: ScriptedCache) -> None:
    async with Outbox(MemoryCache(), ping_interval=None, registry=CollectorRegistry()) as other:
        with pytest.raises(ConfigurationError) as raised:
            cached(scripted, key="k", ttl=60, outbox=other)
    assert raised.value.setting == "outbox"
    with pytest.raises(ConfigurationError) as raised:
        cached(scripted, key="k", ttl=60, outbox="nope")  # type: ignore[arg-type]
    assert raised.value.setting == "outbox"


async def test_an_outbox_of_another_layer_of_the_same_stack_is_accepted(
    scripted: ScriptedCache,
) -> None:
    inner = scripted.inner
    async with Outbox(inner, ping_interval=None, registry=CollectorRegistry()) as outbox:

        @cached(scripted, key="user:{user_id}", ttl=60, outbox=outbox)
        async def get_user(user_id: int) -> int:
            return user_id

        assert await get_user(1) == 1
        await get_user.drain()
        assert await get_user.invalidate(1) == Success(True)


# -- no whole-database flush by default -----------------------------------------------------


async def test_a_redis_cache_without_a_namespace_never_gets_a_flushing_outbox_by_default() -> None:
    """@cached and @invalidate work on build_cache()'s default stack (no namespace): the
    default outbox drops what overflows instead of flushing the shared database; only an
    explicit on_overflow="flush" is refused there."""
    adapter = RedisAdapter.from_url("redis://127.0.0.1:1/0")  # never connected
    try:
        with pytest.raises(ConfigurationError) as raised:
            Outbox(adapter, on_overflow="flush", registry=CollectorRegistry())
        assert raised.value.setting == "on_overflow"
        assert "EVERY key of its database" in str(raised.value)
        async with Outbox(adapter, ping_interval=None, registry=CollectorRegistry()):
            pass  # the default: "drop"
        assert outbox_for(adapter).cache is adapter
        invalidate(adapter, keys=["k"])
        cached(ScriptedCache(adapter), key="x:{n}", ttl=60)  # seen through the layers
        await outbox_for(adapter).aclose()

        async def flush_it(cache: CacheProtocol) -> Result[None, CacheError]:
            return await cache.flush()

        async with Outbox(
            adapter, on_overflow=flush_it, ping_interval=None, registry=CollectorRegistry()
        ) as chosen:  # an explicit choice is respected
            cached(adapter, key="k", ttl=60, outbox=chosen)
            invalidate(chosen, keys=["k"])
        namespaced = RedisAdapter.from_url("redis://127.0.0.1:1/0", namespace="app")
        async with Outbox(namespaced, ping_interval=None, registry=CollectorRegistry()):
            pass
        await namespaced.aclose()
    finally:
        await adapter.aclose()


async def test_a_dropping_outbox_drops_what_overflows_and_keeps_the_rest() -> None:
    scripted = ScriptedCache(MemoryCache())
    registry = CollectorRegistry()
    scripted.fail_always(ErrorCode.CONNECTION)
    async with Outbox(
        scripted, max_pending=2, on_overflow="drop", ping_interval=None, registry=registry
    ) as outbox:
        for key in ("a", "b", "c", "d"):
            await outbox.delete(key)
        assert (outbox.pending, outbox.overflowed) == (2, False)
        dropped = registry.get_sample_value(
            "resilient_cache_invalidations_dropped_total",
            {"cache": "default", "reason": "overflow"},
        )
        assert dropped == 2
        scripted.heal()
        assert await outbox.replay() == 2

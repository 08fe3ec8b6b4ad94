"""@invalidate and the invalidation outbox: unit tests over fakes, and a real outage.

The decorator and the outbox are tested around MemoryCache and ScriptedCache (no sleeping:
the outbox's pause between pings is injected and stepped by hand). The outage tests at the
end go through build_cache, a real Toxiproxy and the session redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import structlog
from prometheus_client import CollectorRegistry

from resilient_cache import (
    BreakerState,
    CacheError,
    CacheProtocol,
    CacheSettings,
    CircuitBreakerLayer,
    ConfigurationError,
    ErrorCode,
    Failure,
    Layer,
    Limits,
    MemoryCache,
    RedisAdapter,
    Result,
    Success,
    build_cache,
    cache_key,
)
from resilient_cache.layers.base import Call
from resilient_cache.patterns import Outbox, SessionStore, invalidate, outbox_for
from resilient_cache.patterns._outbox import MAX_ATTEMPTS
from resilient_cache.testing import ManualClock, ScriptedCache
from resilient_cache.testing.toxiproxy import Proxy
from tests.servers import RedisServer

T = TypeVar("T")

PENDING = "resilient_cache_invalidations_pending"
DEFERRED = "resilient_cache_invalidations_deferred_total"
REPLAYED = "resilient_cache_invalidations_replayed_total"
OVERFLOWS = "resilient_cache_invalidation_overflows_total"
DROPPED = "resilient_cache_invalidations_dropped_total"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"cache": "default", **labels})


async def settle() -> None:
    """Let background tasks run until they wait (the fakes answer without I/O)."""
    for _ in range(20):
        await asyncio.sleep(0)


def state(breaker: CircuitBreakerLayer) -> BreakerState:
    return breaker.state  # read anew each time (mypy would narrow the property)


def outbox_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("resilient_cache.outbox")]


class SteppedSleep:
    """The outbox's pause between pings: returns only when the test calls :meth:`step`."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._gate = asyncio.Semaphore(0)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self._gate.acquire()

    async def step(self) -> None:
        self._gate.release()
        await settle()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def scripted() -> ScriptedCache:
    return ScriptedCache(MemoryCache())


@pytest.fixture
async def outbox(scripted: ScriptedCache, registry: CollectorRegistry) -> AsyncIterator[Outbox]:
    async with Outbox(scripted, ping_interval=None, registry=registry) as built:
        yield built


async def present(cache: CacheProtocol, *keys: str) -> list[str]:
    return [key for key in keys if await cache.exists(key) == Success(True)]


# -- @invalidate: what it deletes, and when -------------------------------------------------


@dataclass
class User:
    id: int
    org: str


async def test_keys_are_filled_from_arguments_defaults_and_attributes(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, keys=["user:{user_id}:{section}", "org:{user.org}"])
    async def update(user_id: int, user: User, section: str = "profile") -> None:
        pass

    for key in ("user:7:profile", "user:7:avatar", "org:acme", "org:other"):
        await scripted.set(key, "v")
    await update(7, User(7, "acme"))
    assert await present(scripted, "user:7:profile", "user:7:avatar", "org:acme", "org:other") == [
        "user:7:avatar",
        "org:other",
    ]


async def test_a_pattern_deletes_the_matching_keys_only(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, pattern="user:{user_id}:*")
    async def update(user_id: int) -> None:
        pass

    for key in ("user:4:a", "user:4:b", "user:42:a", "user:4"):
        await scripted.set(key, "v")
    await update(4)
    assert await present(scripted, "user:4:a", "user:4:b", "user:42:a", "user:4") == [
        "user:42:a",
        "user:4",
    ]


async def test_values_are_written_like_cached_keys_and_escaped_in_patterns(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, keys=["user:{user_id}"])
    async def by_key(user_id: str) -> None:
        pass

    @invalidate(outbox, pattern="user:{user_id}:*")
    async def by_pattern(user_id: str) -> None:
        pass

    forged = cache_key("user", "1:admin")  # user:1%3Aadmin, as @cached writes it
    await scripted.set(forged, "v")
    await scripted.set("user:1:admin", "v")
    await by_key("1:admin")
    assert await present(scripted, forged, "user:1:admin") == ["user:1:admin"]

    for key in ("user:4*:a", "user:42:a", "user:4:a"):
        await scripted.set(key, "v")
    await by_pattern("4*")  # the value's * matches itself, nothing more
    assert await present(scripted, "user:4*:a", "user:42:a", "user:4:a") == [
        "user:42:a",
        "user:4:a",
    ]


async def test_runs_after_success_and_returns_the_value_unchanged(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    seen_inside: list[str] = []
    returned = {"id": 1}

    @invalidate(outbox, keys=["user:{user_id}"])
    async def update(user_id: int) -> dict[str, int]:
        seen_inside.extend(await present(scripted, "user:1"))
        return returned

    await scripted.set("user:1", "v")
    assert await update(1) is returned
    assert seen_inside == ["user:1"]  # not invalidated before the write
    assert await present(scripted, "user:1") == []


async def test_nothing_is_invalidated_when_the_function_raises(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, pattern="user:{user_id}*")
    async def update(user_id: int) -> None:
        raise LookupError("no such user")

    await scripted.set("user:1", "v")
    with pytest.raises(LookupError, match="no such user"):
        await update(1)
    assert "delete_pattern" not in scripted.attempts
    assert await present(scripted, "user:1") == ["user:1"]


async def test_a_value_that_cannot_be_a_key_raises_before_the_function_runs(
    outbox: Outbox,
) -> None:
    ran: list[object] = []

    @invalidate(outbox, keys=["user:{user_id}"])
    async def update(user_id: object) -> None:
        ran.append(user_id)

    with pytest.raises(TypeError, match=r"\{user_id\}"):
        await update(None)
    assert ran == []
    await update(uuid.UUID(int=1))
    assert len(ran) == 1


async def test_a_failed_invalidation_never_raises_and_waits_in_the_outbox(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, keys=["user:{user_id}"])
    async def update(user_id: int) -> str:
        return "done"

    scripted.fail_always(ErrorCode.CONNECTION)
    assert await update(1) == "done"
    assert outbox.pending == 1


async def test_once_one_is_deferred_the_rest_of_the_call_is_deferred_without_a_try(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, keys=["a:{n}", "b:{n}", "c:{n}"])
    async def update(n: int) -> None:
        pass

    scripted.fail(ErrorCode.TIMEOUT)  # a slow Redis: do not make the caller wait 3 times
    await update(1)
    assert scripted.attempts == ["delete"]
    assert outbox.pending == 3


async def test_a_caller_error_is_returned_not_deferred(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    scripted.fail(ErrorCode.VALIDATION)
    result = await outbox.delete("k")
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.VALIDATION
    assert outbox.pending == 0


async def test_a_caller_cancelled_mid_invalidation_leaves_it_in_the_outbox(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, keys=["a:{n}", "b:{n}"])
    async def update(n: int) -> None:
        pass

    scripted.hang()  # the first delete never answers
    call = asyncio.create_task(update(1))
    await settle()
    assert scripted.attempts == ["delete"]
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert outbox.pending == 2  # the write happened: both deletes are still owed
    assert await outbox.replay() == 2


async def test_a_plain_cache_gets_one_shared_default_outbox(scripted: ScriptedCache) -> None:
    @invalidate(scripted, keys=["a"])
    async def first() -> None:
        pass

    @invalidate(scripted, pattern="b*")
    async def second() -> None:
        pass

    shared = outbox_for(scripted)
    try:
        scripted.fail_always(ErrorCode.CONNECTION)
        await first()
        await second()
        assert shared.pending == 2
        assert outbox_for(scripted) is shared
    finally:
        await shared.aclose()


async def fn(user_id: int, *rest: int, **options: str) -> None:
    pass


def not_async(user_id: int) -> None:
    pass


@pytest.mark.parametrize(
    ("options", "function", "setting"),
    [
        ({}, fn, "invalidate"),
        ({"pattern": "a*", "keys": ["a"]}, fn, "invalidate"),
        ({"keys": "user:{user_id}"}, fn, "keys"),
        ({"keys": []}, fn, "keys"),
        ({"keys": [""]}, fn, "keys"),
        ({"keys": ["user:{userid}"]}, fn, "keys"),
        ({"pattern": "user:{}*"}, fn, "pattern"),
        ({"pattern": "user:{0}*"}, fn, "pattern"),
        ({"keys": ["user:{user_id:03d}"]}, fn, "keys"),
        ({"keys": ["user:{user_id!r}"]}, fn, "keys"),
        ({"keys": ["user:{user_id[0]}"]}, fn, "keys"),
        ({"keys": ["user:{user_id._secret}"]}, fn, "keys"),
        ({"keys": ["user:{rest}"]}, fn, "keys"),
        ({"keys": ["user:{options}"]}, fn, "keys"),
        ({"pattern": "user:{user_id"}, fn, "pattern"),
        ({"keys": ["user:{user_id}"]}, not_async, "invalidate"),
    ],
)
async def test_bad_configurations_fail_at_decoration_time(
    outbox: Outbox, options: dict[str, Any], function: Callable[..., Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        invalidate(outbox, **options)(function)
    assert raised.value.setting == setting


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"max_pending": 0}, "max_pending"),
        ({"max_pending": True}, "max_pending"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"on_overflow": "wipe"}, "on_overflow"),
    ],
)
def test_bad_outbox_options_are_refused(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Outbox(MemoryCache(), registry=CollectorRegistry(), **options)
    assert raised.value.setting == setting


# -- the outbox: order, duplicates, overflow ------------------------------------------------


async def test_replays_in_order_keeping_each_entry_until_it_is_applied(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    for key in ("a", "b", "p:1"):
        await scripted.set(key, "v")
    scripted.fail_always(ErrorCode.CONNECTION)
    first = await outbox.delete("a")
    assert isinstance(first, Failure)  # the first try's result, as the cache gave it
    await outbox.delete_pattern("p:*")
    await outbox.delete("b")
    await outbox.delete("a")  # the same invalidation again: kept once, at its first place
    assert outbox.pending == 3

    scripted.heal()
    scripted.fail(ErrorCode.CONNECTION, operations=["delete_pattern"])
    assert await outbox.replay() == 1  # "a", then the pattern fails: stop, keep the rest
    assert await present(scripted, "a", "b", "p:1") == ["b", "p:1"]
    assert outbox.pending == 2
    assert await outbox.replay() == 2
    assert scripted.calls[-2:] == ["delete_pattern", "delete"]  # in order
    assert await present(scripted, "a", "b", "p:1") == []
    assert outbox.pending == 0


class Gate(Layer):
    """Holds every call until the gate is open."""

    name = "gate"

    def __init__(self, inner: CacheProtocol) -> None:
        super().__init__(inner)
        self.open = asyncio.Event()
        self.open.set()

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        await self.open.wait()
        return await call()


async def test_an_entry_deferred_again_during_its_replay_is_applied_again(
    registry: CollectorRegistry,
) -> None:
    gate = Gate(MemoryCache())
    scripted = ScriptedCache(gate)
    async with Outbox(scripted, ping_interval=None, registry=registry) as outbox:
        scripted.fail(ErrorCode.CONNECTION)
        await outbox.delete("k")
        gate.open.clear()
        replay = asyncio.create_task(outbox.replay())
        await settle()  # its delete of "k" is on the way
        scripted.fail(ErrorCode.CONNECTION)
        await outbox.delete("k")  # a newer write's delete of "k" fails meanwhile
        assert outbox.pending == 1  # one entry...
        gate.open.set()
        assert await replay == 2  # ...applied once more: the first pass may predate the write
        assert outbox.pending == 0


async def test_an_overflow_flushes_the_namespace_on_recovery(registry: CollectorRegistry) -> None:
    store = MemoryCache()
    app, neighbour = store.namespaced("app"), store.namespaced("other")
    scripted = ScriptedCache(app)
    for key in ("a", "b", "c", "untouched"):
        await app.set(key, "v")
    await neighbour.set("a", "theirs")
    async with Outbox(scripted, max_pending=2, ping_interval=None, registry=registry) as outbox:
        scripted.fail_always(ErrorCode.CONNECTION)
        with structlog.testing.capture_logs() as logs:
            for key in ("a", "b", "c", "d"):
                await outbox.delete(key)
            assert outbox.overflowed
            assert outbox.pending == 4  # nothing dropped: all four owed, as one flush
            assert sample(registry, OVERFLOWS) == 1
            assert await outbox.replay() == 0  # still down: the flush stays owed
            scripted.heal()
            assert await outbox.replay() == 1
        assert (outbox.pending, outbox.overflowed) == (0, False)
        assert await present(app, "a", "b", "c", "untouched") == []
        assert await neighbour.get("a") == Success("theirs")  # other namespaces: untouched
        assert sample(registry, REPLAYED, operation="flush") == 1
        assert sample(registry, REPLAYED, operation="delete") == 0
        assert sample(registry, PENDING) == 0
        overflowed = [e for e in logs if e["event"] == "resilient_cache.outbox_overflowed"]
        assert overflowed == [
            {
                "event": "resilient_cache.outbox_overflowed",
                "log_level": "error",
                "cache": "default",
                "reason": "full",
                "max_pending": 2,
                "action": "flush",
            }
        ]
        flushed = [e for e in logs if e["event"] == "resilient_cache.overflow_flushed"]
        assert flushed == [
            {
                "event": "resilient_cache.overflow_flushed",
                "log_level": "warning",
                "cache": "default",
                "action": "flush",
                "covered": 4,
            }
        ]


async def test_a_custom_overflow_action_replaces_the_flush(
    scripted: ScriptedCache, registry: CollectorRegistry
) -> None:
    for key in ("user:1", "user:2", "org:1"):
        await scripted.set(key, "v")

    async def users_only(cache: CacheProtocol) -> Result[int, CacheError]:
        return await cache.delete_pattern("user:*")

    async with Outbox(
        scripted, max_pending=1, on_overflow=users_only, ping_interval=None, registry=registry
    ) as outbox:
        scripted.fail_always(ErrorCode.CONNECTION)
        await outbox.delete("user:1")
        await outbox.delete("user:2")
        scripted.heal()
        assert await outbox.replay() == 1
    assert await present(scripted, "user:1", "user:2", "org:1") == ["org:1"]
    assert sample(registry, REPLAYED, operation="on_overflow") == 1


async def test_an_entry_refused_on_replay_is_dropped_never_flushing_the_namespace(
    scripted: ScriptedCache, outbox: Outbox, registry: CollectorRegistry
) -> None:
    await scripted.set("other", "v")  # a session, a rate-limit counter...
    scripted.fail(ErrorCode.CONNECTION)
    await outbox.delete("k")
    scripted.fail(ErrorCode.VALIDATION)  # a stricter layer refuses its replay: never applicable
    with structlog.testing.capture_logs() as logs:
        assert await outbox.replay() == 0
    assert (outbox.pending, outbox.overflowed) == (0, False)
    assert await present(scripted, "other") == ["other"]  # nothing flushed
    assert "flush" not in scripted.calls
    assert sample(registry, DROPPED, reason="rejected") == 1
    assert [e for e in logs if e["event"] == "resilient_cache.invalidation_dropped"] == [
        {
            "event": "resilient_cache.invalidation_dropped",
            "log_level": "error",
            "cache": "default",
            "operation": "delete",
            "reason": "rejected",
            "error_type": "validation",
        }
    ]


async def test_a_key_the_cache_refuses_is_dropped_before_it_is_deferred(
    registry: CollectorRegistry,
) -> None:
    memory = MemoryCache(namespace="app")
    sessions = SessionStore(memory)
    session_id = SessionStore.new_id()
    await sessions.save(session_id, {"user_id": 1})
    scripted = ScriptedCache(memory)
    async with Outbox(scripted, ping_interval=None, registry=registry) as outbox:

        @invalidate(outbox, keys=["user:{user_id}", "search:{query}"])
        async def update(user_id: int, query: str) -> None:
            pass

        scripted.fail(ErrorCode.TIMEOUT)  # one slow moment: the rest would be deferred untried
        with structlog.testing.capture_logs() as logs:
            await update(1, "x" * 2000)  # a 2 KB key: never a valid key, nothing stored there
        assert outbox.pending == 1  # user:1 only
        assert await outbox.replay() == 1
        assert not outbox.overflowed
    assert await sessions.get(session_id) == Success({"user_id": 1})  # the namespace stays
    assert sample(registry, DROPPED, reason="invalid") == 1
    dropped = [e for e in logs if e["event"] == "resilient_cache.invalidation_dropped"]
    assert dropped == [
        {
            "event": "resilient_cache.invalidation_dropped",
            "log_level": "warning",
            "cache": "default",
            "operation": "delete",
            "reason": "invalid",
            "error_type": "validation",
        }
    ]


async def test_outbox_delete_refuses_an_invalid_key_at_once(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)  # would have been deferred
    result = await outbox.delete("k" * 2000)
    assert isinstance(result, Failure) and result.error.code is ErrorCode.VALIDATION
    assert scripted.attempts == []  # no I/O
    assert outbox.pending == 0
    limits = Limits(max_key_bytes=8)
    small = ScriptedCache(MemoryCache(limits=limits))
    async with Outbox(small, ping_interval=None, registry=CollectorRegistry()) as strict:
        assert isinstance(await strict.delete("123456789"), Failure)  # the cache's own limits
        assert await strict.delete("12345678") == Success(False)


class DenyKey(Layer):
    """Refuses one key (an ACL without access to it: NOPERM), as a healthy Redis would."""

    name = "deny"

    def __init__(self, inner: CacheProtocol, denied: str) -> None:
        super().__init__(inner)
        self.denied = denied

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        if key == self.denied:
            return Failure(CacheError.of(ErrorCode.AUTH, "NOPERM", operation=operation, key=key))
        return await call()


async def test_an_entry_that_keeps_failing_does_not_block_the_others_and_is_dropped_at_last(
    registry: CollectorRegistry,
) -> None:
    memory = MemoryCache()
    await memory.set("user:1", "stale")
    scripted = ScriptedCache(DenyKey(memory, "legacy:1"))
    async with Outbox(scripted, ping_interval=None, registry=registry) as outbox:
        scripted.fail_always(ErrorCode.CONNECTION)  # a short outage
        await outbox.delete("legacy:1")
        await outbox.delete("user:1")
        scripted.heal()
        assert await outbox.replay() == 1  # legacy:1 fails by its own fault: the next goes on
        assert await memory.get("user:1") == Success(None)
        assert outbox.pending == 1
        with structlog.testing.capture_logs() as logs:
            for _ in range(MAX_ATTEMPTS - 1):
                assert outbox.pending == 1
                assert await outbox.replay() == 0
        assert outbox.pending == 0  # dropped after MAX_ATTEMPTS, loudly
        assert sample(registry, DROPPED, reason="failing") == 1
    assert logs[-1] == {
        "event": "resilient_cache.invalidation_dropped",
        "log_level": "error",
        "cache": "default",
        "operation": "delete",
        "reason": "failing",
        "error_type": "auth",
        "attempts": MAX_ATTEMPTS,
    }


async def test_an_entry_that_failed_goes_behind_the_others_and_is_retried_later(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    scripted.fail_always(ErrorCode.CONNECTION)
    for key in ("a", "b", "c"):
        await outbox.delete(key)
    scripted.heal()
    scripted.fail(ErrorCode.BACKEND, operations=["delete"])  # "a" fails once, by itself
    assert await outbox.replay() == 2
    assert outbox.pending == 1
    assert await outbox.replay() == 1  # its next replay succeeds
    assert outbox.pending == 0


@pytest.mark.parametrize(
    "code", [ErrorCode.CONNECTION, ErrorCode.TIMEOUT, ErrorCode.CIRCUIT_OPEN, ErrorCode.READONLY]
)
async def test_a_cache_down_failure_stops_the_replay_and_costs_no_attempt(
    scripted: ScriptedCache, outbox: Outbox, code: ErrorCode
) -> None:
    scripted.fail_always(ErrorCode.CONNECTION)
    await outbox.delete("a")
    await outbox.delete("b")
    scripted.fail_always(code)
    for _ in range(MAX_ATTEMPTS + 1):
        assert await outbox.replay() == 0
    assert scripted.attempts.count("delete") == 2 + MAX_ATTEMPTS + 1  # one try per replay
    assert outbox.pending == 2  # nothing dropped while the cache is down
    scripted.heal()
    assert await outbox.replay() == 2


# -- telemetry ------------------------------------------------------------------------------


async def test_metrics_and_events_show_deferred_and_replayed_invalidations(
    scripted: ScriptedCache, outbox: Outbox, registry: CollectorRegistry
) -> None:
    for operation in ("delete", "delete_pattern"):  # every series exists from the start
        assert sample(registry, DEFERRED, operation=operation) == 0
        assert sample(registry, REPLAYED, operation=operation) == 0
    assert sample(registry, PENDING) == 0
    assert sample(registry, OVERFLOWS) == 0

    scripted.fail_always(ErrorCode.CONNECTION)
    with structlog.testing.capture_logs() as logs:
        await outbox.delete("user:42")
        await outbox.delete_pattern("session:42:*")
        assert sample(registry, PENDING) == 2
        scripted.heal()
        assert await outbox.replay() == 2
    assert sample(registry, DEFERRED, operation="delete") == 1
    assert sample(registry, DEFERRED, operation="delete_pattern") == 1
    assert sample(registry, REPLAYED, operation="delete") == 1
    assert sample(registry, REPLAYED, operation="delete_pattern") == 1
    assert sample(registry, PENDING) == 0
    assert logs == [
        {
            "event": "resilient_cache.invalidation_deferred",
            "log_level": "warning",  # the first of an outage
            "cache": "default",
            "operation": "delete",
            "error_type": "connection",
            "pending": 1,
        },
        {
            "event": "resilient_cache.invalidation_deferred",
            "log_level": "debug",  # the next ones: no flood
            "cache": "default",
            "operation": "delete_pattern",
            "error_type": "connection",
            "pending": 2,
        },
        {
            "event": "resilient_cache.invalidations_replayed",
            "log_level": "info",
            "cache": "default",
            "replayed": 2,
            "pending": 0,
        },
    ]
    assert "42" not in repr(logs)  # keys can hold personal data


async def test_keys_are_logged_only_when_asked(scripted: ScriptedCache) -> None:
    async with Outbox(
        scripted, ping_interval=None, registry=CollectorRegistry(), log_keys=True
    ) as outbox:
        scripted.fail(ErrorCode.TIMEOUT)
        with structlog.testing.capture_logs() as logs:
            await outbox.delete("user:42")
    assert logs[0]["key"] == "user:42"


async def test_the_pending_gauge_adds_up_over_outboxes_of_one_name(
    registry: CollectorRegistry,
) -> None:
    first, second = ScriptedCache(), ScriptedCache()
    async with (
        Outbox(first, ping_interval=None, registry=registry) as one,
        Outbox(second, ping_interval=None, registry=registry) as two,
    ):
        first.fail_always(ErrorCode.CONNECTION)
        second.fail_always(ErrorCode.CONNECTION)
        await one.delete("a")
        await two.delete("a")
        await two.delete("b")
        assert sample(registry, PENDING) == 3
        second.heal()
        await two.replay()
        assert sample(registry, PENDING) == 1
    assert sample(registry, PENDING) == 0


# -- health: breaker, ping, later successes; no leaked task -------------------------------


async def test_the_breaker_closing_starts_the_replay(registry: CollectorRegistry) -> None:
    clock = ManualClock()
    scripted = ScriptedCache()
    breaker = CircuitBreakerLayer(
        scripted, fail_max=1, reset_timeout=5, success_threshold=1, clock=clock
    )
    await breaker.set("k", "stale")
    async with Outbox(breaker, ping_interval=None, registry=registry) as outbox:
        scripted.fail_always(ErrorCode.CONNECTION)
        await outbox.delete("k")
        assert breaker.state is BreakerState.OPEN
        scripted.heal()
        clock.advance(5)
        assert await breaker.exists("other") == Success(False)  # traffic: the probe closes it
        assert state(breaker) is BreakerState.CLOSED
        await settle()
        assert outbox.pending == 0
        assert await breaker.get("k") == Success(None)


async def test_a_periodic_ping_replays_without_traffic(
    scripted: ScriptedCache, registry: CollectorRegistry
) -> None:
    sleep = SteppedSleep()
    async with Outbox(scripted, ping_interval=0.5, sleep=sleep, registry=registry) as outbox:
        await scripted.set("k", "stale")
        scripted.fail_always(ErrorCode.CONNECTION)
        await outbox.delete("k")
        await settle()
        assert len(outbox_tasks()) == 1  # started at the first deferral
        await sleep.step()  # the ping fails: still owed
        assert outbox.pending == 1
        scripted.heal()
        await sleep.step()  # the ping answers: replay
        assert outbox.pending == 0
        assert sleep.delays == [0.5, 0.5]
        assert scripted.attempts.count("ping") == 2
        assert outbox_tasks() == []  # nothing owed, no task
        assert await scripted.get("k") == Success(None)


async def test_a_later_successful_invalidation_starts_the_replay(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    await scripted.set("a", "stale")
    scripted.fail(ErrorCode.CONNECTION)
    await outbox.delete("a")
    assert await outbox.delete("b") == Success(False)  # the cache answers again
    await settle()
    assert outbox.pending == 0
    assert await scripted.get("a") == Success(None)


async def test_closing_stops_the_tasks_and_reports_what_is_abandoned(
    scripted: ScriptedCache, registry: CollectorRegistry
) -> None:
    sleep = SteppedSleep()
    outbox = Outbox(scripted, ping_interval=1, sleep=sleep, registry=registry)
    scripted.fail_always(ErrorCode.CONNECTION)
    await outbox.delete("k")
    await settle()
    assert len(outbox_tasks()) == 1
    with structlog.testing.capture_logs() as logs:
        await outbox.aclose()
    assert outbox_tasks() == []
    assert logs == [
        {
            "event": "resilient_cache.invalidations_abandoned",
            "log_level": "error",
            "cache": "default",
            "pending": 1,
            "overflowed": False,
        }
    ]
    assert sample(registry, PENDING) == 0
    await outbox.aclose()  # idempotent


async def test_a_write_cancelled_while_it_runs_still_owes_its_invalidations(
    scripted: ScriptedCache, outbox: Outbox
) -> None:
    @invalidate(outbox, keys=["a:{n}", "b:{n}"])
    async def update(n: int) -> None:
        await asyncio.Event().wait()  # committed, then the caller times out

    call = asyncio.create_task(update(1))
    await settle()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert scripted.attempts == []  # not tried while the caller is cancelled...
    assert outbox.pending == 2  # ...but owed: a late delete is always safe
    assert await outbox.replay() == 2


# -- lifecycle: closed outboxes, event loops, the breaker's listener -------------------------


def test_a_closed_default_outbox_is_replaced_at_the_next_use() -> None:
    cache = ScriptedCache()

    @invalidate(cache, keys=["user:{user_id}"])  # at module level, as in an application
    async def rename(user_id: int) -> None:
        pass

    async def first_lifespan() -> None:
        await rename(1)
        await outbox_for(cache).aclose()  # shutdown, as the docs ask

    async def second_lifespan() -> None:
        await cache.set("user:1", "stale")
        cache.fail(ErrorCode.CONNECTION)
        await rename(1)
        outbox = outbox_for(cache)
        assert not outbox.closed
        assert outbox.pending == 1  # recorded by a live outbox...
        await rename(2)  # ...which a successful invalidation makes replay
        await settle()
        assert outbox.pending == 0
        assert await cache.get("user:1") == Success(None)
        await outbox.aclose()

    asyncio.run(first_lifespan())
    asyncio.run(second_lifespan())


async def test_a_closed_outbox_drops_what_fails_with_an_error(
    scripted: ScriptedCache, registry: CollectorRegistry
) -> None:
    outbox = Outbox(scripted, ping_interval=None, registry=registry)
    await outbox.aclose()
    scripted.fail(ErrorCode.CONNECTION)
    with structlog.testing.capture_logs() as logs:
        await outbox.delete("k")
    assert outbox.pending == 0  # nothing would ever replay it: not kept
    assert sample(registry, DROPPED, reason="closed") == 1
    assert logs == [
        {
            "event": "resilient_cache.invalidation_dropped",
            "log_level": "error",
            "cache": "default",
            "operation": "delete",
            "reason": "closed",
            "error_type": "connection",
        }
    ]


def test_an_outbox_replays_under_several_event_loops() -> None:
    gate = Gate(MemoryCache())
    scripted = ScriptedCache(gate)
    outbox = Outbox(scripted, ping_interval=None, registry=CollectorRegistry())

    async def contended_replays() -> tuple[int, int]:
        scripted.fail(ErrorCode.CONNECTION)
        await outbox.delete("k")
        gate.open = asyncio.Event()  # an Event of this loop
        first = asyncio.create_task(outbox.replay())
        await settle()  # it holds the lock, its delete waits at the gate
        second = asyncio.create_task(outbox.replay())
        await settle()  # it waits for the lock
        gate.open.set()
        applied_first, applied_second = await asyncio.gather(first, second)
        return applied_first, applied_second

    assert asyncio.run(contended_replays()) == (1, 0)
    assert asyncio.run(contended_replays()) == (1, 0)  # a lock of the second loop


async def test_the_breaker_does_not_keep_a_dropped_outbox_alive(
    registry: CollectorRegistry,
) -> None:
    clock = ManualClock()
    scripted = ScriptedCache()
    breaker = CircuitBreakerLayer(
        scripted, fail_max=1, reset_timeout=5, success_threshold=1, clock=clock
    )
    outbox = Outbox(breaker, ping_interval=None, registry=registry)
    scripted.fail(ErrorCode.CONNECTION)
    await outbox.delete("k")
    await outbox.aclose()
    gone = weakref.ref(outbox)
    del outbox
    gc.collect()
    assert gone() is None  # the breaker's listener held it weakly
    clock.advance(5)
    assert await breaker.exists("k") == Success(False)  # the breaker closes: nothing to tell
    assert state(breaker) is BreakerState.CLOSED
    assert outbox_tasks() == []


async def test_a_raising_overflow_action_is_logged_and_stays_owed(
    scripted: ScriptedCache, registry: CollectorRegistry
) -> None:
    async def broken(cache: CacheProtocol) -> Result[int, CacheError]:
        raise RuntimeError("a bug in the custom action")

    async with Outbox(
        scripted, max_pending=1, on_overflow=broken, ping_interval=None, registry=registry
    ) as outbox:
        scripted.fail_always(ErrorCode.CONNECTION)
        await outbox.delete("a")
        await outbox.delete("b")
        scripted.heal()
        with structlog.testing.capture_logs() as logs:
            assert await outbox.replay() == 0  # no exception
        assert outbox.overflowed and outbox.pending == 2  # still owed
    failed = [e for e in logs if e["event"] == "resilient_cache.overflow_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert failed[0]["action"] == "on_overflow"


async def test_a_crashed_background_task_is_logged_through_structlog(
    scripted: ScriptedCache, registry: CollectorRegistry
) -> None:
    async def broken_sleep(seconds: float) -> None:
        raise RuntimeError("a bug")

    async with Outbox(scripted, ping_interval=1, sleep=broken_sleep, registry=registry) as outbox:
        with structlog.testing.capture_logs() as logs:
            scripted.fail(ErrorCode.CONNECTION)
            await outbox.delete("k")
            await settle()
    crashed = [e for e in logs if e["event"] == "resilient_cache.outbox_task_failed"]
    assert len(crashed) == 1
    assert crashed[0]["task"] == "resilient_cache.outbox.watch"
    assert crashed[0]["log_level"] == "error"


# -- a real outage: Redis behind Toxiproxy ---------------------------------------------------


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true within {seconds}s")


@contextlib.asynccontextmanager
async def fresh_client(server: RedisServer) -> AsyncIterator[RedisAdapter]:
    """A client straight to Redis, behind the proxy's back."""
    async with RedisAdapter.from_url(server.url, namespace="inv") as client:
        yield client


async def fast_sleep(seconds: float) -> None:
    await asyncio.sleep(0.005)


@pytest.mark.parametrize("recovery", ["ping", "traffic"])
async def test_an_invalidation_issued_while_redis_is_down_is_applied_after_recovery(
    recovery: str, redis_proxy: Proxy, redis_proxy_url: str, redis_server: RedisServer
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    clock, registry = ManualClock(), CollectorRegistry()
    settings = CacheSettings.model_validate({"redis_url": redis_proxy_url, "namespace": "inv"})
    ping_interval = 1.0 if recovery == "ping" else None
    async with (
        build_cache(settings, clock=clock, registry=registry) as cache,
        Outbox(cache, ping_interval=ping_interval, sleep=fast_sleep, registry=registry) as outbox,
        fresh_client(redis_server) as fresh,
    ):
        breaker = cache.find(CircuitBreakerLayer)
        assert breaker is not None

        @invalidate(outbox, keys=["user:{user_id}"])
        async def rename(user_id: int, name: str) -> str:
            return name  # the database write

        assert await cache.set("user:42", "Ada") == Success(None)
        with redis_proxy.disabled():
            assert await rename(42, "Ada L.") == "Ada L."  # no exception, no delay
            assert outbox.pending == 1
            assert await fresh.get("user:42") == Success("Ada")  # the stale value is there
            while state(breaker) is not BreakerState.OPEN:  # the outage goes on
                assert isinstance(await cache.get("user:7"), Failure)
        clock.advance(breaker.open_time)
        if recovery == "traffic":  # two successful probes close the breaker
            assert await cache.ping() == Success(True)
            assert await cache.ping() == Success(True)
        await wait_until(lambda: outbox.pending == 0)
        assert state(breaker) is BreakerState.CLOSED
        assert await fresh.get("user:42") == Success(None)  # the stale value is gone
        assert await cache.get("user:42") == Success(None)
        assert sample(registry, REPLAYED, operation="delete") == 1
        assert sample(registry, PENDING) == 0
    assert outbox_tasks() == []

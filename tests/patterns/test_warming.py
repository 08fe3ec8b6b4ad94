"""warm(): batches, bounded concurrency and memory, progress, budget, breaker, cancellation.

Unit tests run over MemoryCache and ScriptedCache (time moved by hand where it matters);
the last two run through build_cache against a real redis-server, one of which is killed
mid-warm.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from resilient_cache import (
    CacheError,
    CacheSettings,
    CircuitBreakerLayer,
    ErrorCode,
    Layer,
    Limits,
    MemoryCache,
    Result,
    Success,
    build_cache,
)
from resilient_cache.layers.base import Call
from resilient_cache.patterns.warming import WarmItem, WarmProgress, warm
from resilient_cache.testing import ManualClock, ScriptedCache
from tests.servers import RedisServer

T = TypeVar("T")


def items(n: int, prefix: str = "k") -> Iterator[tuple[str, str]]:
    return ((f"{prefix}:{i}", f"v{i}") for i in range(n))


def only_this_task_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


class Sink(Layer):
    """Answers set_many without storing (so only warm()'s own memory is measured); counts
    the items written and the batches in flight, yielding to the loop inside each call."""

    name = "sink"

    def __init__(self, clock: ManualClock | None = None, step: float = 0.0) -> None:
        super().__init__(MemoryCache())
        self.written = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.clock, self.step = clock, step

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if self.clock is not None:
                self.clock.advance(self.step)
            return await call()
        finally:
            self.in_flight -= 1

    def set_many(self, mapping: dict[str, str], ttl: int | None = None) -> Any:
        size = len(mapping)

        async def store_nothing() -> Result[None, CacheError]:
            self.written += size
            return Success(None)

        return self._around("set_many", None, store_nothing)


async def test_items_are_written_in_batches() -> None:
    cache = ScriptedCache()
    report = await warm(cache, items(1234), batch_size=100, ttl=60)
    assert (report.written, report.failed, report.skipped) == (1234, 0, 0)
    assert report.batches == 13 == cache.calls.count("set_many")
    assert report.stopped_because == "done"
    assert report.last_error is None
    assert await cache.get("k:1233") == Success("v1233")
    assert await cache.ttl("k:0") == Success(60)


async def test_concurrency_and_items_held_are_bounded() -> None:
    sink = Sink()
    worst = 0

    def source() -> Iterator[tuple[str, str]]:
        nonlocal worst
        for i in range(5000):
            worst = max(worst, i - sink.written)  # taken from the source, not yet written
            yield f"k:{i}", "v"

    report = await warm(sink, source(), batch_size=50, concurrency=3)
    assert report.written == 5000 == sink.written
    assert sink.max_in_flight == 3
    assert worst <= 3 * 50


async def test_progress_is_reported_after_every_batch() -> None:
    seen: list[WarmProgress] = []
    report = await warm(MemoryCache(), items(1000), batch_size=100, on_progress=seen.append)
    assert len(seen) == 10
    assert [p.written for p in seen] == list(range(100, 1001, 100))
    assert seen[-1].batches == report.batches == 10
    assert report.rate >= 0


async def test_the_budget_stops_warming_between_batches() -> None:
    clock = ManualClock()
    sink = Sink(clock, step=1.0)  # every batch takes one (manual) second
    report = await warm(sink, items(10_000), batch_size=10, concurrency=1, budget=5, clock=clock)
    assert report.stopped_because == "budget"
    assert report.written == 50
    assert report.seconds == 5


async def test_the_budget_cuts_batches_in_flight_and_leaves_no_task() -> None:
    cache = ScriptedCache()
    cache.hang_always()  # a blackholed Redis
    started = time.monotonic()
    report = await warm(cache, items(10_000), batch_size=10, concurrency=2, budget=0.2)
    assert time.monotonic() - started < 1.0
    assert report.stopped_because == "budget"
    assert (report.written, report.failed) == (0, 20)  # two batches were cut
    assert only_this_task_left()


async def test_circuit_open_stops_at_once() -> None:
    cache = ScriptedCache()
    cache.fail_always(ErrorCode.CIRCUIT_OPEN)
    taken = 0

    def source() -> Iterator[tuple[str, str]]:
        nonlocal taken
        for key, value in items(10_000):
            taken += 1
            yield key, value

    report = await warm(cache, source(), batch_size=10, concurrency=2)
    assert report.stopped_because == "unavailable"
    assert report.last_error is not None
    assert report.last_error.code is ErrorCode.CIRCUIT_OPEN
    assert report.batches <= 2
    assert taken <= 30  # the rest of the source was never read
    assert report.written == 0


async def test_repeated_failures_stop_warming() -> None:
    cache = ScriptedCache()
    cache.fail_always(ErrorCode.CONNECTION)
    report = await warm(cache, items(1000), batch_size=10, concurrency=1, max_failures=3)
    assert report.stopped_because == "unavailable"
    assert (report.batches, report.failed_batches, report.failed) == (3, 3, 30)
    assert report.last_error is not None
    assert report.last_error.code is ErrorCode.CONNECTION


async def test_an_isolated_failure_is_counted_and_warming_goes_on() -> None:
    cache = ScriptedCache()
    cache.fail(ErrorCode.TIMEOUT, times=2)
    report = await warm(cache, items(1000), batch_size=10, concurrency=1)
    assert report.stopped_because == "done"
    assert (report.written, report.failed, report.failed_batches) == (980, 20, 2)


async def test_an_open_breaker_in_the_stack_stops_warming() -> None:
    backend = ScriptedCache()
    backend.fail_always(ErrorCode.CONNECTION)
    stack = CircuitBreakerLayer(backend, fail_max=2, clock=ManualClock())
    report = await warm(stack, items(1000), batch_size=10, concurrency=1, max_failures=10)
    assert report.stopped_because == "unavailable"
    assert report.batches <= 3


async def test_refused_items_are_skipped_not_their_whole_batch() -> None:
    cache = MemoryCache()
    source: list[WarmItem] = [("a", "1"), ("", "empty key"), ("b", 2), ("c", "3")]
    report = await warm(cache, source, batch_size=10)
    assert (report.written, report.skipped, report.failed) == (2, 2, 0)
    assert report.stopped_because == "done"
    assert await cache.get_many(["a", "c"]) == Success({"a": "1", "c": "3"})


async def test_values_can_be_encoded_and_ttls_given_per_item() -> None:
    cache = MemoryCache()
    source: list[WarmItem] = [("user:1", {"name": "Ada"}, 10), ("user:2", [1, 2], None)]
    report = await warm(cache, source, ttl=99, encode=json.dumps)
    assert report.written == 2
    assert report.batches == 2  # one set_many per ttl
    assert await cache.get_json("user:1") == Success({"name": "Ada"})
    assert await cache.ttl("user:1") == Success(10)
    assert await cache.ttl("user:2") == Success(99)


async def test_a_key_repeated_in_a_batch_keeps_its_last_value_whatever_the_ttl() -> None:
    """The docs: a key repeated within one batch is written once, the last value winning;
    also when its repetitions carry different ttls (each ttl is a set_many of its own)."""
    cache = MemoryCache()
    source: list[WarmItem] = [("k", "first", 10), ("other", "x", 20), ("k", "last", 20)]
    report = await warm(cache, source, batch_size=10)
    assert report.written == 2
    assert await cache.get("k") == Success("last")
    assert await cache.ttl("k") == Success(20)


async def test_batches_keep_to_the_caches_batch_limits() -> None:
    """warm() splits what set_many would refuse: never more than max_batch_keys items or
    max_batch_bytes of keys and values in one call, and nothing written one by one."""
    cache = ScriptedCache(MemoryCache(limits=Limits(max_batch_keys=50, max_batch_bytes=5000)))
    source: list[WarmItem] = [(f"k{i}", "v" * 400) for i in range(100)]
    report = await warm(cache, source, batch_size=500)
    assert (report.written, report.failed, report.skipped) == (100, 0, 0)
    assert cache.calls.count("set") == 0  # no batch was refused and retried item by item
    assert report.batches == cache.calls.count("set_many") >= 100 * 405 // 5000


async def test_an_async_source_is_consumed_and_closed() -> None:
    closed = False

    async def source() -> AsyncIterator[tuple[str, str]]:
        nonlocal closed
        try:
            for key, value in items(10_000):
                yield key, value
        finally:
            closed = True

    cache = ScriptedCache()
    cache.fail_always(ErrorCode.CIRCUIT_OPEN)
    report = await warm(cache, source(), batch_size=100)
    assert report.stopped_because == "unavailable"
    assert closed


async def test_a_cancelled_warm_leaves_no_task_behind() -> None:
    cache = ScriptedCache()
    cache.hang_always()
    job = asyncio.create_task(warm(cache, items(10_000), batch_size=10, concurrency=4))
    for _ in range(1000):  # until four batches hang
        if cache.attempts.count("set_many") == 4:
            break
        await asyncio.sleep(0)
    assert cache.attempts.count("set_many") == 4
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert only_this_task_left()


async def test_bad_arguments_are_programmer_errors() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await warm(MemoryCache(), [], batch_size=0)
    with pytest.raises(ValueError, match="budget"):
        await warm(MemoryCache(), [], budget=-1)


def _held_by_a_list(n: int) -> int:
    tracemalloc.start()
    try:
        held = [(f"key:{i}", "x" * 100) for i in range(n)]
        size, _ = tracemalloc.get_traced_memory()
        del held
        return size
    finally:
        tracemalloc.stop()


async def test_100k_items_in_bounded_memory() -> None:
    n = 100_000
    listed = _held_by_a_list(n)
    sink = Sink()
    tracemalloc.start()
    try:
        report = await warm(sink, ((f"key:{i}", "x" * 100) for i in range(n)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"peak {peak / 1e6:.2f} MB while warming {n} items; a list of them: {listed / 1e6:.1f} MB"
    )
    assert report.written == n == sink.written
    assert peak < listed / 10  # at most 4 * 500 items are held, not 100k
    assert peak < 2_000_000


# -- against a real redis-server ------------------------------------------------------------


def _settings(url: str) -> CacheSettings:
    return CacheSettings.model_validate({"redis_url": url, "namespace": "warm"})


@pytest.mark.slow
async def test_100k_items_through_the_stack(redis_server: RedisServer) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    async with build_cache(_settings(redis_server.url), registry=CollectorRegistry()) as cache:
        report = await warm(cache, items(100_000), ttl=300)
        assert report.stopped_because == "done"
        assert (report.written, report.failed) == (100_000, 0)
        sample = [f"k:{i}" for i in range(0, 100_000, 997)]
        got = await cache.get_many(sample)
        assert got == Success({key: "v" + key[2:] for key in sample})
        assert await cache.ttl("k:99999") == Success(300)
    assert redis_server.command("DBSIZE") == ":100000"


@pytest.mark.slow
async def test_warming_stops_cleanly_when_redis_goes_down(private_redis: RedisServer) -> None:
    killed_at: list[float] = []

    def kill_after_five_batches(progress: WarmProgress) -> None:
        if progress.batches == 5:
            private_redis.stop(kill=True)
            killed_at.append(time.monotonic())

    settings = _settings(private_redis.url)
    async with build_cache(settings, registry=CollectorRegistry()) as cache:
        async with asyncio.timeout(30):  # a hang fails the test instead of blocking it
            report = await warm(
                cache, items(1_000_000), batch_size=100, concurrency=2,
                on_progress=kill_after_five_batches,
            )  # fmt: skip
        stopped_after = time.monotonic() - killed_at[0]
    assert report.stopped_because == "unavailable"
    assert 500 <= report.written < 1_000_000
    assert report.last_error is not None
    assert report.last_error.code in {ErrorCode.CONNECTION, ErrorCode.CIRCUIT_OPEN}
    # three failed batches in a row at most, each bounded by the call deadline
    assert stopped_after < 3 * settings.deadline + 1.0
    assert only_this_task_left()

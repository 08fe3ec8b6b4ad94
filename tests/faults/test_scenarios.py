"""Fail-open, proven: the built stack against real faults injected by a real Toxiproxy.

Every scenario goes through ``build_cache`` with the default settings (deadline 0.5 s,
2 attempts, breaker opening after 5 failures, 5 s open time) and asserts:

* no exception reaches the caller, and every call returns within the deadline + SLACK;
* the error codes are the right ones, and the breaker opens at the expected call;
* while open, calls fail fast (< 1 ms) without I/O;
* once the fault is gone, calls succeed again within the open time, with the right values.

The breaker's clock is a ManualClock, so "wait for the open time" costs nothing; the
network faults themselves run in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from resilient_cache import (
    BreakerState,
    CacheError,
    CacheSettings,
    CircuitBreakerLayer,
    ErrorCode,
    Failure,
    Layer,
    RedisAdapter,
    Result,
    Success,
    build_cache,
)
from resilient_cache.testing import LOOPBACK, ManualClock
from resilient_cache.testing.toxiproxy import Proxy
from tests.servers import RedisServer
from tests.toxiproxy_fixtures import proxy_url

DEADLINE = 0.5
SLACK = 0.1  # measured worst case on a loaded 2-core CI machine: ~0.03 s
FAST = 0.001

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    """The built cache, its breaker and adapter, the breaker's clock, and what happened."""

    cache: Layer
    breaker: CircuitBreakerLayer
    adapter: RedisAdapter
    clock: ManualClock
    calls: int = 0
    opened_at_call: list[int] = field(default_factory=list)
    worst: float = 0.0

    async def call(self, op: str = "get", *args: Any) -> Result[Any, CacheError]:
        """One call, timed; it must come back within the deadline, as a Result."""
        self.calls += 1
        started = time.monotonic()
        result: Result[Any, CacheError] = await getattr(self.cache, op)(*args or ("k",))
        elapsed = time.monotonic() - started
        self.worst = max(self.worst, elapsed)
        assert elapsed < DEADLINE + SLACK, f"call {self.calls} took {elapsed:.3f}s"
        assert isinstance(result, Success | Failure)
        return result

    async def assert_fails_fast(self) -> None:
        started = time.perf_counter()
        result = await self.cache.get("k")
        assert time.perf_counter() - started < FAST
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.CIRCUIT_OPEN

    async def assert_heals(self, expected: str = "before") -> None:
        """After the open time the probes succeed, the circuit closes, the value is right."""
        self.clock.advance(self.breaker.open_time)
        assert await self.call() == Success(expected)
        assert await self.call() == Success(expected)
        assert self.breaker.state is BreakerState.CLOSED


@contextlib.asynccontextmanager
async def stack_for(url: str, *, mode: str = "plain") -> AsyncIterator[Stack]:
    """The default stack, its adapter ``plain``, ``coalescing`` reads or ``pipelining``."""
    clock = ManualClock()
    redis = {"coalesce_reads": mode == "coalescing", "pipeline_commands": mode == "pipelining"}
    settings = CacheSettings.model_validate({"redis_url": url, "redis": redis})
    cache = build_cache(settings, clock=clock, registry=CollectorRegistry())
    breaker = cache.find(CircuitBreakerLayer)
    adapter = cache.find(RedisAdapter)
    assert breaker is not None
    assert adapter is not None
    stack = Stack(cache, breaker, adapter, clock)
    breaker.add_listener(
        lambda old, new: (
            stack.opened_at_call.append(stack.calls) if new is BreakerState.OPEN else None
        )
    )
    async with cache:
        yield stack
    assert adapter.pool_stats().in_use == 0  # no connection leaked


@pytest.fixture(params=["plain", "coalescing", "pipelining"])
async def stack(
    request: pytest.FixtureRequest, redis_proxy_url: str, redis_server: RedisServer
) -> AsyncIterator[Stack]:
    assert redis_server.command("FLUSHALL") == "+OK"
    async with stack_for(redis_proxy_url, mode=request.param) as built:
        assert await built.call("set", "k", "before") == Success(None)
        yield built


async def fail_until_open(
    stack: Stack, codes: set[ErrorCode], calls: int = 8, key: str = "k"
) -> None:
    """Call until the breaker opens; every failure before it must have one of ``codes``."""
    for _ in range(calls):
        result = await stack.call("get", key)
        assert isinstance(result, Failure), result
        assert result.error.code in codes | {ErrorCode.CIRCUIT_OPEN}, result.error
        if stack.breaker.state is BreakerState.OPEN:
            return
    raise AssertionError(f"the breaker did not open in {calls} calls")


# -- one fault at a time ------------------------------------------------------------------


async def test_latency_above_the_deadline(stack: Stack, redis_proxy: Proxy) -> None:
    with redis_proxy.latency(1000):
        await fail_until_open(stack, {ErrorCode.TIMEOUT})
        assert stack.opened_at_call == [6]  # the set, then 5 calls cut by the deadline
        await stack.assert_fails_fast()
    await stack.assert_heals()


async def test_latency_just_below_the_deadline_still_succeeds(
    stack: Stack, redis_proxy: Proxy
) -> None:
    with redis_proxy.latency(400):
        for _ in range(3):
            assert await stack.call() == Success("before")
    assert stack.worst >= 0.4
    assert stack.breaker.state is BreakerState.CLOSED


async def test_blackhole(stack: Stack, redis_proxy: Proxy) -> None:
    with redis_proxy.timeout(0):
        await fail_until_open(stack, {ErrorCode.TIMEOUT})
        assert stack.opened_at_call == [6]
        await stack.assert_fails_fast()
    await stack.assert_heals()


async def test_refused_connections(stack: Stack, redis_proxy: Proxy) -> None:
    with redis_proxy.disabled():
        await fail_until_open(stack, {ErrorCode.CONNECTION})
        # two attempts a call: the 5th failure is the first attempt of the 3rd call
        assert stack.opened_at_call == [4]
        await stack.assert_fails_fast()
    await stack.assert_heals()


async def test_connection_reset_by_peer(stack: Stack, redis_proxy: Proxy) -> None:
    with redis_proxy.reset_peer():
        await fail_until_open(stack, {ErrorCode.CONNECTION})
        assert stack.opened_at_call == [4]
        await stack.assert_fails_fast()
    await stack.assert_heals()


async def test_torn_replies_from_limit_data(stack: Stack, redis_proxy: Proxy) -> None:
    big = "x" * 10_000
    assert await stack.call("set", "big", big) == Success(None)
    with redis_proxy.limit_data(1_000):  # a connection closes mid-reply
        await fail_until_open(stack, {ErrorCode.CONNECTION}, key="big")
        await stack.assert_fails_fast()
    stack.clock.advance(stack.breaker.open_time)
    assert await stack.call("get", "big") == Success(big)  # whole, not a torn prefix
    assert await stack.call("get", "k") == Success("before")


async def test_sliced_replies_are_reassembled(stack: Stack, redis_proxy: Proxy) -> None:
    value = "".join(random.choice("abcdef") for _ in range(2_000))
    assert await stack.call("set", "sliced", value) == Success(None)
    with redis_proxy.slicer(average_size=7, size_variation=5, delay_us=100):
        for _ in range(5):
            assert await stack.call("get", "sliced") == Success(value)
    assert stack.breaker.state is BreakerState.CLOSED


async def test_bandwidth_limit(stack: Stack, redis_proxy: Proxy) -> None:
    big = "y" * 200_000
    assert await stack.call("set", "big", big) == Success(None)
    with redis_proxy.bandwidth(100):  # 100 KB/s: the 200 KB value needs 2 s
        assert await stack.call("get", "k") == Success("before")  # small replies pass
        result = await stack.call("get", "big")
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.TIMEOUT
    assert await stack.call("get", "big") == Success(big)


# -- the server itself -------------------------------------------------------------------


async def test_redis_killed_and_restarted(private_redis: RedisServer) -> None:
    async with stack_for(private_redis.url) as stack:
        assert await stack.call("set", "k", "before") == Success(None)
        private_redis.stop(kill=True)
        await fail_until_open(stack, {ErrorCode.CONNECTION})
        assert stack.opened_at_call == [4]  # the set, then two failed attempts a call
        await stack.assert_fails_fast()
        private_redis.start()  # empty: no persistence
        await stack.assert_fails_fast()  # still open until the open time is over
        stack.clock.advance(stack.breaker.open_time)
        assert await stack.call("set", "k", "after") == Success(None)
        await stack.assert_heals("after")


async def test_redis_down_at_start_up(private_redis: RedisServer) -> None:
    private_redis.stop()
    async with stack_for(private_redis.url) as stack:  # starting does not raise
        await fail_until_open(stack, {ErrorCode.CONNECTION})
        assert stack.opened_at_call == [3]
        private_redis.start()
        stack.clock.advance(stack.breaker.open_time)
        assert await stack.call("set", "k", "up") == Success(None)
        await stack.assert_heals("up")


# -- correctness under faults ------------------------------------------------------------


async def test_no_reply_mix_ups_under_latency_and_cancellations(
    stack: Stack, redis_proxy: Proxy
) -> None:
    keys = [f"key:{i}" for i in range(300)]
    assert await stack.cache.set_many({k: f"value of {k}" for k in keys}) == Success(None)
    rng = random.Random(7)
    successes = 0
    with redis_proxy.latency(20, jitter=20):
        for _ in range(3):
            tasks = [asyncio.create_task(stack.cache.get(k)) for k in keys]
            await asyncio.sleep(0.01)
            for task in rng.sample(tasks, 100):
                task.cancel()
            for key, task in zip(keys, tasks, strict=True):
                with contextlib.suppress(asyncio.CancelledError):
                    result = await task
                    if isinstance(result, Success):
                        assert result.value == f"value of {key}"  # its own reply, always
                        successes += 1
    assert successes > 300
    assert stack.adapter.pool_stats().in_use == 0


async def test_increments_are_applied_at_most_once(
    stack: Stack, redis_proxy: Proxy, redis_server: RedisServer
) -> None:
    reported = {"success": 0, "maybe": 0, "not_applied": 0}
    for round_ in range(6):
        slow = round_ % 2 == 1
        toxic: AbstractContextManager[Any] = (
            redis_proxy.latency(1000) if slow else contextlib.nullcontext()
        )
        with toxic:
            for _ in range(5):
                result = await stack.call("increment", "counter")
                match result:
                    case Success(_):
                        reported["success"] += 1
                    case Failure(error) if error.maybe_applied:
                        assert error.code is ErrorCode.TIMEOUT
                        assert not error.retryable
                        reported["maybe"] += 1
                    case Failure(_):
                        reported["not_applied"] += 1
        stack.clock.advance(stack.breaker.open_time)  # let the breaker probe again
    await asyncio.sleep(1.1)  # replies held back by the toxic have reached Redis by now
    raw = aioredis.Redis.from_url(redis_server.url)
    stored = int(await raw.get("counter") or 0)
    await raw.aclose()
    assert reported["success"] > 0
    assert reported["maybe"] > 0
    assert reported["success"] <= stored <= reported["success"] + reported["maybe"]


async def test_half_open_admits_exactly_one_probe_among_100_callers(
    stack: Stack, redis_proxy: Proxy
) -> None:
    with redis_proxy.disabled():
        await fail_until_open(stack, {ErrorCode.CONNECTION})
    stack.clock.advance(stack.breaker.open_time)
    with redis_proxy.latency(100):  # the probe is still in flight while the others arrive
        results = await asyncio.gather(*(stack.cache.get("k") for _ in range(100)))
    admitted = [
        r
        for r in results
        if not (isinstance(r, Failure) and r.error.code is ErrorCode.CIRCUIT_OPEN)
    ]
    assert admitted == [Success("before")]
    assert stack.breaker.state is BreakerState.HALF_OPEN


def test_the_proxy_url_is_loopback(redis_proxy: Proxy) -> None:
    assert proxy_url(redis_proxy).startswith(f"redis://{LOOPBACK}:")

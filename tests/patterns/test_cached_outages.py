"""@cached through build_cache against a real redis-server, and through a real Toxiproxy.

* a stampede of 200 concurrent misses on one key calls the function once;
* while Redis is down and the breaker open, reads return the last known value without
  calling the function, counted as ``fallback`` lookups; past ``max_staleness`` the
  function is called and its value returned, though the cache is still down;
* when Redis stops answering (a blackhole), the stale value comes back within the deadline.

The decorator's clock and the breaker's are ManualClocks: staleness and the open time move
by hand; the network faults themselves are real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry

from resilient_cache import (
    BreakerState,
    CacheSettings,
    CircuitBreakerLayer,
    Layer,
    RedisAdapter,
    build_cache,
)
from resilient_cache.patterns import ServeStale, cached
from resilient_cache.testing import ManualClock
from resilient_cache.testing.toxiproxy import Proxy
from tests.servers import RedisServer

SLACK = 0.3  # seconds beyond the deadline a call may take on a loaded 2-core machine


def settings(url: str, **overrides: Any) -> CacheSettings:
    return CacheSettings.model_validate({"redis_url": url, "namespace": "cached"} | overrides)


def fallbacks(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(
        "resilient_cache_gets_total", {"cache": "default", "result": "fallback"}
    )
    return value or 0.0


async def test_a_stampede_of_200_misses_calls_the_function_once(
    redis_server: RedisServer,
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    calls = 0
    async with build_cache(settings(redis_server.url), registry=CollectorRegistry()) as cache:

        @cached(cache, key="report:{day}", ttl=60)
        async def report(day: str) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.1)  # a slow query; callers keep arriving meanwhile
            return {"day": day, "rows": 1234}

        callers = []
        for _ in range(20):  # 200 callers spread over the computation and its write-back
            callers += [asyncio.create_task(report("2025-01-01")) for _ in range(10)]
            await asyncio.sleep(0.01)
        results = await asyncio.gather(*callers)
        assert calls == 1
        assert results == [{"day": "2025-01-01", "rows": 1234}] * 200
        await report.drain()
        stored = (await cache.get("report:2025-01-01")).unwrap()
        assert stored is not None
        assert stored.startswith("cached:v1:")
        assert stored.endswith(':v:{"day":"2025-01-01","rows":1234}')
        assert (await cache.ttl("report:2025-01-01")).unwrap() in (59, 60)
        assert await asyncio.gather(*(report("2025-01-01") for _ in range(200))) == results
        assert calls == 1
        assert report.in_flight == 0
        adapter = cache.find(RedisAdapter)
        assert adapter is not None
        assert adapter.pool_stats().in_use == 0


def breaker_of(cache: Layer) -> CircuitBreakerLayer:
    breaker = cache.find(CircuitBreakerLayer)
    assert breaker is not None
    return breaker


async def test_stale_values_are_served_while_the_breaker_is_open(
    redis_proxy: Proxy, redis_proxy_url: str, redis_server: RedisServer
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    clock, breaker_clock, registry = ManualClock(), ManualClock(), CollectorRegistry()
    calls: list[int] = []
    url_settings = settings(redis_proxy_url, breaker={"fail_max": 2})
    async with build_cache(url_settings, clock=breaker_clock, registry=registry) as cache:
        breaker = breaker_of(cache)

        @cached(cache, key="user:{user_id}", ttl=60, clock=clock, serve_stale=ServeStale(30))
        async def get_user(user_id: int) -> dict[str, int]:
            calls.append(user_id)
            return {"id": user_id, "version": len(calls)}

        v1 = await get_user(1)
        await get_user.drain()
        assert await get_user(1) == v1  # a hit
        before = fallbacks(registry)

        with redis_proxy.disabled():
            for _ in range(5):
                assert await get_user(1) == v1  # the last known value, no call
            assert breaker.state is BreakerState.OPEN
            assert calls == [1]
            assert fallbacks(registry) - before == 5  # each stale serve is a fallback lookup

            clock.advance(31)  # past max_staleness: computed, though the cache is down
            v2 = await get_user(1)
            assert v2 == {"id": 1, "version": 2}
            await get_user.drain()  # its write-back failed at once: the circuit is open
            assert await get_user(1) == v2  # now the last known value
            assert calls == [1, 1]

        breaker_clock.advance(breaker.open_time)
        # healed: the cache answers again; its entry, written before the outage and still
        # within its TTL, is what it serves (the value computed while down was never stored)
        assert await get_user(1) == v1
        assert calls == [1, 1]


async def test_a_stale_value_comes_back_within_the_deadline_when_redis_stops_answering(
    redis_proxy: Proxy, redis_proxy_url: str, redis_server: RedisServer
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    deadline = 0.2
    calls: list[int] = []
    async with build_cache(
        settings(redis_proxy_url, deadline=deadline), registry=CollectorRegistry()
    ) as cache:

        @cached(cache, key="user:{user_id}", ttl=60, serve_stale=ServeStale(30))
        async def get_user(user_id: int) -> dict[str, int]:
            calls.append(user_id)
            return {"id": user_id, "version": len(calls)}

        v1 = await get_user(1)
        await get_user.drain()
        with redis_proxy.timeout(0):  # a blackhole: requests go out, no reply comes back
            started = time.monotonic()
            assert await get_user(1) == v1
            assert time.monotonic() - started < deadline + SLACK
        assert calls == [1]

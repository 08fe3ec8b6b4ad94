"""Read coalescing against a real redis-server: one MGET for many GETs, answers never mixed."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilient_cache import ErrorCode, Failure, Limits, RedisAdapter, Success
from tests.adapters.test_redis_adapter import block_server
from tests.servers import RedisServer


async def calls(raw: aioredis.Redis, command: str) -> int:
    stats: dict[str, Any] = await raw.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


@pytest.fixture
async def cache(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> AsyncIterator[RedisAdapter]:
    adapter = RedisAdapter.from_url(redis_server.url, namespace="c", coalesce_reads=True)
    await adapter.set_many({f"k{i}": f"v{i}" for i in range(100)})
    await raw_redis.config_resetstat()
    yield adapter
    await adapter.aclose()


async def test_concurrent_gets_share_one_mget(
    cache: RedisAdapter, raw_redis: aioredis.Redis
) -> None:
    results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(50)), cache.get("nope"))
    assert results == [*(Success(f"v{i}") for i in range(50)), Success(None)]
    assert await calls(raw_redis, "mget") == 1
    assert await calls(raw_redis, "get") == 0


async def test_a_lone_get_stays_a_get(cache: RedisAdapter, raw_redis: aioredis.Redis) -> None:
    assert await cache.get("k1") == Success("v1")
    not_json = await cache.get_json("k2")  # a per-caller decoding failure
    assert isinstance(not_json, Failure)
    assert not_json.error.code is ErrorCode.SERIALIZATION
    assert await calls(raw_redis, "get") == 2
    assert await calls(raw_redis, "mget") == 0


async def test_a_failed_batch_is_each_callers_failure(redis_server: RedisServer) -> None:
    cache = RedisAdapter.from_url(redis_server.url, coalesce_reads=True, operation_timeout=0.2)
    await cache.ping()
    sleeper = await block_server(redis_server, 0.5)
    started = time.monotonic()
    results = await asyncio.gather(*(cache.get(f"key:{i}") for i in range(10)))
    assert time.monotonic() - started < 0.2 + 0.1
    for i, result in enumerate(results):
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.TIMEOUT
        assert result.error.key == f"key:{i}"  # told as each caller's own call
        assert result.error.operation == "get"
    await sleeper
    await cache.aclose()


async def test_cancellation_storm_never_mixes_answers(cache: RedisAdapter) -> None:
    rng = random.Random(3)
    seen = 0
    for _ in range(20):
        keys = [f"k{rng.randrange(100)}" for _ in range(60)]
        tasks = [asyncio.create_task(cache.get(k)) for k in keys]
        for task in rng.sample(tasks, 20):
            task.cancel()
        for key, task in zip(keys, tasks, strict=True):
            try:
                result = await task
            except asyncio.CancelledError:
                continue
            assert result == Success("v" + key[1:])
            seen += 1
    assert seen > 0
    assert cache.pool_stats().in_use == 0


async def test_every_caller_keeps_its_own_deadline(cache: RedisAdapter) -> None:
    async def impatient() -> object:
        async with asyncio.timeout(0):  # gives up before the batch is even sent
            return await cache.get("k1")

    patient = asyncio.create_task(cache.get("k2"))
    with pytest.raises(TimeoutError):
        await impatient()
    assert await patient == Success("v2")


async def test_a_failed_batch_counts_once_against_the_breaker() -> None:
    from resilient_cache import BreakerState, CircuitBreakerLayer  # noqa: PLC0415
    from resilient_cache.testing import LOOPBACK, ManualClock, free_port  # noqa: PLC0415

    adapter = RedisAdapter.from_url(f"redis://{LOOPBACK}:{free_port()}/0", coalesce_reads=True)
    breaker = CircuitBreakerLayer(adapter, clock=ManualClock())
    for batch in range(1, 6):
        results = await asyncio.gather(*(breaker.get(f"k{i}") for i in range(10)))
        assert all(isinstance(r, Failure) for r in results)
        # one refused round trip is one failure, however many callers shared it; and the
        # echoes handed to the others neither count nor reset the count
        expected = BreakerState.OPEN if batch == 5 else BreakerState.CLOSED
        assert breaker.state is expected, batch
    await adapter.aclose()


async def test_closing_answers_the_waiting_callers_instead_of_cancelling_them(
    redis_server: RedisServer,
) -> None:
    cache = RedisAdapter.from_url(redis_server.url, coalesce_reads=True)
    await cache.ping()
    sleeper = await block_server(redis_server, 0.3)
    waiting = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.05)
    await cache.aclose()
    result = await waiting
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.CONNECTION
    await sleeper


async def test_a_key_the_acl_refuses_fails_only_its_own_caller(
    private_redis: RedisServer,
) -> None:
    """NOPERM on one key refuses a whole MGET: coalesced with it, a readable key's caller
    must still get its value, and only the refused key's caller an AUTH failure."""
    assert private_redis.command(
        "ACL", "SETUSER", "app", "on", ">pw", "~public:*", "+get", "+mget", "+ping"
    ) == "+OK"  # fmt: skip
    assert private_redis.command("SET", "public:a", "1") == "+OK"
    url = private_redis.url.replace("redis://", "redis://app:pw@")
    cache = RedisAdapter.from_url(url, coalesce_reads=True)
    try:
        alone = await cache.get("public:a")
        assert alone == Success("1")
        public, private = await asyncio.gather(cache.get("public:a"), cache.get("private:b"))
        assert public == Success("1")
        assert isinstance(private, Failure) and private.error.code is ErrorCode.AUTH
        assert private.error.key == "private:b"
    finally:
        await cache.aclose()


async def test_coalesced_batches_keep_to_max_batch_keys(private_redis: RedisServer) -> None:
    """Many callers at once make MGETs of at most max_batch_keys keys, each caller still
    getting its own value (a batch must fit its deadline and never hold the loop long)."""
    for i in range(10):
        assert private_redis.command("SET", f"k{i}", f"v{i}") == "+OK"
    assert private_redis.command("CONFIG", "SET", "slowlog-log-slower-than", "0") == "+OK"
    assert private_redis.command("SLOWLOG", "RESET") == "+OK"
    cache = RedisAdapter.from_url(
        private_redis.url, coalesce_reads=True, limits=Limits(max_batch_keys=3)
    )
    try:
        results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(10)))
        assert results == [Success(f"v{i}") for i in range(10)]
    finally:
        await cache.aclose()
    client = aioredis.Redis.from_url(private_redis.url)
    entries = await client.slowlog_get(128)
    await client.aclose()
    sizes = [len(e["command"].split()) - 1 for e in entries if e["command"].startswith(b"MGET")]
    assert sizes and max(sizes) <= 3, sizes

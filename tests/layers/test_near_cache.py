"""The near cache against a real redis-server: coherence across instances, channel loss.

Each "instance" is an independent stack: its own RedisAdapter (own connections), its own
RedisTrackingSource (own tracking connection) and NearCacheLayer, on the same namespace.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from resilient_cache.adapters.redis_adapter import RedisAdapter
from resilient_cache.adapters.redis_cluster import RedisClusterAdapter
from resilient_cache.adapters.tracking import RedisTrackingSource
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.result import Failure, Success
from resilient_cache.layers.near_cache import NearCacheLayer
from resilient_cache.testing import RedisServer
from resilient_cache.testing.toxiproxy import Proxy

NAMESPACE = "near"
DELAY_BOUND = 0.05
"""Seconds within which a committed write must have dropped the other instance's copy
(measured: well under a millisecond on loopback; the bound leaves room for a loaded CI)."""


class Instance:
    """One application instance: adapter + tracking source + near cache."""

    def __init__(self, url: str, *, reconnect_min: float = 0.02, ping: float = 0.2) -> None:
        self.registry = CollectorRegistry()
        self.adapter = RedisAdapter.from_url(url, namespace=NAMESPACE)
        self.source = RedisTrackingSource.for_adapter(
            self.adapter, ping_interval=ping, reconnect_min=reconnect_min, reconnect_max=0.5
        )
        self.near = NearCacheLayer(self.adapter, self.source, registry=self.registry)
        self.invalidated: dict[str, float] = {}
        self.source.add_listener(self._record)

    def _record(self, keys: Sequence[str] | None) -> None:
        now = time.perf_counter()
        for key in keys or ():
            self.invalidated[key] = now

    def announced(self, key: str, after: float) -> Callable[[], bool]:
        """Whether an invalidation of ``key`` arrived after ``after`` (perf_counter)."""
        return lambda: self.invalidated.get(key, 0) > after

    def hits(self) -> float:
        labels = {"cache": "default", "result": "hit"}
        name = "resilient_cache_near_cache_lookups_total"
        return self.registry.get_sample_value(name, labels) or 0


@pytest.fixture
async def make_instance(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> AsyncIterator[Callable[..., Awaitable[Instance]]]:
    made: list[Instance] = []

    async def make(url: str | None = None, **options: float) -> Instance:
        instance = Instance(url or redis_server.url, **options)
        made.append(instance)
        assert await instance.source.wait_healthy(5), "the tracking channel did not come up"
        return instance

    yield make
    for instance in made:
        await instance.near.aclose()
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert not any("near-cache tracking" in name for name in names), "a task leaked"


async def until(predicate: Callable[[], bool], seconds: float) -> float:
    """Poll ``predicate`` (every 1 ms) for up to ``seconds``; the time it took."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > seconds:
            raise AssertionError(f"not true within {seconds}s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def test_a_write_in_one_instance_invalidates_the_other(
    make_instance: Callable[..., Awaitable[Instance]],
) -> None:
    a, b = await make_instance(), await make_instance()
    delays = []
    for round_ in range(30):
        await b.near.set("k", f"v{round_}")
        assert await a.near.get("k") == Success(f"v{round_}")
        assert await a.near.get("k") == Success(f"v{round_}")  # a hit
        started = time.perf_counter()
        await b.near.set("k", f"w{round_}")  # committed when this returns
        await until(a.announced("k", started), DELAY_BOUND)
        delays.append(a.invalidated["k"] - started)
        assert await a.near.get("k") == Success(f"w{round_}")
    assert a.hits() == 30
    print(
        f"\ninvalidation delay (write sent -> other instance's copy dropped), 30 writes: "
        f"median {statistics.median(delays) * 1e3:.3f} ms, max {max(delays) * 1e3:.3f} ms"
    )


async def test_a_write_by_a_plain_redis_client_invalidates_too(
    make_instance: Callable[..., Awaitable[Instance]], raw_redis: aioredis.Redis
) -> None:
    a = await make_instance()
    await raw_redis.set(f"{NAMESPACE}:k", "before")
    assert await a.near.get("k") == Success("before")
    assert await a.near.get("k") == Success("before")
    started = time.perf_counter()
    await raw_redis.set(f"{NAMESPACE}:k", "after")
    await until(a.announced("k", started), DELAY_BOUND)
    assert await a.near.get("k") == Success("after")
    await raw_redis.delete(f"{NAMESPACE}:k")
    await until(lambda: len(a.near) == 0, DELAY_BOUND)
    assert await a.near.get("k") == Success(None)
    # outside the namespace: not announced, not cached either
    await raw_redis.set("other:k", "x")
    await asyncio.sleep(0.05)
    assert "k" in a.invalidated


async def test_flushall_flushes_the_near_cache(
    make_instance: Callable[..., Awaitable[Instance]], raw_redis: aioredis.Redis
) -> None:
    a = await make_instance()
    await a.near.set("k", "v")
    await a.near.get("k")
    assert len(a.near) == 1
    await raw_redis.flushall()
    await until(lambda: len(a.near) == 0, DELAY_BOUND)
    assert await a.near.get("k") == Success(None)


async def test_killing_the_channel_stops_serving_until_it_recovers(
    make_instance: Callable[..., Awaitable[Instance]], raw_redis: aioredis.Redis
) -> None:
    a = await make_instance(reconnect_min=0.5)
    await a.near.set("k", "v1")
    await a.near.get("k")
    generation = a.source.generation
    killed = await raw_redis.client_kill_filter(_id=str(a.source.client_id))
    assert killed == 1
    await until(lambda: not a.source.healthy, 1.0)
    assert len(a.near) == 0 and not a.near.serving
    # while nobody listens, a write is not announced: the near cache must not serve
    await raw_redis.set(f"{NAMESPACE}:k", "v2")
    hits = a.hits()
    assert await a.near.get("k") == Success("v2")
    assert await a.near.get("k") == Success("v2")
    assert a.hits() == hits and len(a.near) == 0  # both went to Redis, nothing stored
    assert await a.source.wait_healthy(5)
    assert a.source.generation == generation + 1
    assert await a.near.get("k") == Success("v2")
    assert await a.near.get("k") == Success("v2")
    assert a.hits() == hits + 1  # serving again


@pytest.mark.parametrize("fault", ["disabled", "blackhole"])
async def test_through_toxiproxy_never_older_than_a_committed_write(
    make_instance: Callable[..., Awaitable[Instance]],
    raw_redis: aioredis.Redis,
    redis_proxy: Proxy,
    redis_proxy_url: str,
    fault: str,
) -> None:
    a = await make_instance(redis_proxy_url, reconnect_min=0.05, ping=0.2)
    for round_ in range(3):
        committed = f"v{round_}"
        started = time.perf_counter()
        await raw_redis.set(f"{NAMESPACE}:k", committed)
        await until(a.announced("k", started), DELAY_BOUND)
        assert await a.near.get("k") == Success(committed)
        assert len(a.near) == 1
        cut = redis_proxy.disabled() if fault == "disabled" else redis_proxy.timeout(0)
        with cut:
            # a silent cut is noticed within 2 * ping_interval; a closed one at once
            await until(lambda: not a.source.healthy, 1.0)
            committed = f"w{round_}"
            await raw_redis.set(f"{NAMESPACE}:k", committed)  # never announced to `a`
            result = await a.near.get("k")
            assert isinstance(result, Failure) or result == Success(committed)
        assert await a.source.wait_healthy(5)
        for _ in range(3):
            assert await a.near.get("k") == Success(committed)


def test_redis_cluster_is_refused() -> None:
    adapter = RedisClusterAdapter.from_url("redis://127.0.0.1:1", namespace=NAMESPACE)
    with pytest.raises(ConfigurationError, match="Cluster"):
        RedisTrackingSource.for_adapter(adapter)


async def test_hit_latency_against_a_round_trip(
    make_instance: Callable[..., Awaitable[Instance]],
) -> None:
    a = await make_instance()
    await a.near.set("k", "x" * 100)
    await a.near.get("k")
    rounds = 2000

    async def timed(call: Callable[[], Awaitable[object]]) -> float:
        for _ in range(100):  # warm up
            await call()
        started = time.perf_counter()
        for _ in range(rounds):
            await call()
        return (time.perf_counter() - started) / rounds

    near = await timed(lambda: a.near.get("k"))
    network = await timed(lambda: a.adapter.get("k"))
    print(
        f"\nnear-cache hit {near * 1e6:.2f} us, Redis round trip {network * 1e6:.1f} us: "
        f"{network / near:.0f}x faster"
    )
    assert network / near > 10


# -- wiring: build_cache and the least-privilege ACL ---------------------------------------


async def test_build_cache_puts_the_near_cache_in_the_stack(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    from resilient_cache import CacheSettings, build_cache  # noqa: PLC0415

    settings = CacheSettings.model_validate(
        {"redis_url": redis_server.url, "namespace": NAMESPACE,
         "near_cache": {"enabled": True, "ping_interval": 0.2}}
    )  # fmt: skip
    registry = CollectorRegistry()
    async with build_cache(settings, registry=registry) as cache:
        assert cache.layers[:4] == ("metrics", "tracing", "logging", "near_cache")
        near = cache.find(NearCacheLayer)
        assert near is not None
        source = near.source
        assert isinstance(source, RedisTrackingSource)
        assert await source.wait_healthy(5)
        assert await cache.set("k", "v1") == Success(None)
        assert await cache.get("k") == Success("v1")
        assert await cache.get("k") == Success("v1")  # from memory
        hits = registry.get_sample_value(
            "resilient_cache_near_cache_lookups_total", {"cache": "default", "result": "hit"}
        )
        assert hits == 1
        await raw_redis.set(f"{NAMESPACE}:k", "v2")  # another client's write is announced
        await until(lambda: len(near) == 0, DELAY_BOUND)
        assert await cache.get("k") == Success("v2")


async def test_the_near_cache_works_as_the_least_privilege_user(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    from resilient_cache.acl import acl_rules  # noqa: PLC0415

    rules = acl_rules(NAMESPACE, near_cache=True).split()
    await raw_redis.execute_command("ACL", "SETUSER", "near", "reset", "on", ">near-pw", *rules)
    url = redis_server.url.replace("redis://", "redis://near:near-pw@")
    instance = Instance(url)
    try:
        assert await instance.source.wait_healthy(5), "tracking refused under the ACL"
        await instance.near.set("k", "v")
        assert await instance.near.get("k") == Success("v")
        assert await instance.near.get("k") == Success("v")
        await raw_redis.set(f"{NAMESPACE}:k", "w")
        await until(lambda: len(instance.near) == 0, DELAY_BOUND)
    finally:
        await instance.near.aclose()
        await raw_redis.execute_command("ACL", "DELUSER", "near")

"""Shared fixtures: real redis-server processes and a cache factory for the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from typing import Protocol

import pytest
import redis.asyncio as aioredis

from resilient_cache import CacheProtocol, Limits, MemoryCache, RedisAdapter
from resilient_cache.acl import acl_rules
from resilient_cache.testing import ManualClock
from tests.servers import RedisServer, require_binary

# toxiproxy_binary, toxiproxy, redis_proxy, redis_proxy_url: for tests/faults and e2e tests
pytest_plugins = ["pytester", "tests.toxiproxy_fixtures"]

ACL_USER = "contract"
ACL_PASSWORD = "contract-password"


@pytest.fixture(scope="session")
def redis_binary() -> str:
    return require_binary("redis-server", "RESILIENT_CACHE_REDIS_SERVER")


@pytest.fixture(scope="session")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """One redis-server for the session; each test starts from an empty database."""
    server = RedisServer(redis_binary)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def private_redis(redis_binary: str) -> Iterator[RedisServer]:
    """A redis-server of the test's own, free to be killed and restarted."""
    server = RedisServer(redis_binary)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client, to look at the server behind the adapter's back."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class CacheFactory(Protocol):
    def __call__(
        self, *, namespace: str | None = None, limits: Limits | None = None
    ) -> Awaitable[CacheProtocol]: ...


@asynccontextmanager
async def backing_caches(
    request: pytest.FixtureRequest, clock: ManualClock, backend: str
) -> AsyncIterator[CacheFactory]:
    """Build caches of one backend, the ones a contract fixture (or a layer's, which wraps
    each) hands out: ``memory`` caches share one store, like one database; ``redis``,
    ``redis-coalescing``, ``redis-pipelining`` and ``redis-acl`` adapters share the session's
    redis-server, emptied first (``redis-acl``: as a user with only the least-privilege
    ACL)."""
    root = MemoryCache(clock=clock)
    adapters: list[RedisAdapter] = []
    url = ""
    if backend.startswith("redis"):
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
        assert server.command("FLUSHALL") == "+OK"
        if backend == "redis-acl":
            rules = acl_rules(None).split()
            assert server.command("ACL", "SETUSER", ACL_USER, "reset", "on", f">{ACL_PASSWORD}",
                                  *rules) == "+OK"  # fmt: skip
            url = url.replace("redis://", f"redis://{ACL_USER}:{ACL_PASSWORD}@")

    async def build(*, namespace: str | None = None, limits: Limits | None = None) -> CacheProtocol:
        if backend == "memory":
            if limits is not None:
                return MemoryCache(namespace=namespace, clock=clock, limits=limits)
            return root if namespace is None else root.namespaced(namespace)
        adapter = RedisAdapter.from_url(
            url,
            namespace=namespace,
            limits=limits,
            coalesce_reads=backend == "redis-coalescing",
            pipeline_commands=backend == "redis-pipelining",
        )
        adapters.append(adapter)
        return adapter

    try:
        yield build
    finally:
        for adapter in adapters:
            await adapter.aclose()


@pytest.fixture(params=["memory", "redis", "redis-coalescing", "redis-pipelining", "redis-acl"])
async def make_cache(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[CacheFactory]:
    """Build caches of one backend; for Redis they share one fresh database."""
    async with backing_caches(request, clock, request.param) as build:
        yield build


@pytest.fixture
async def cache(make_cache: CacheFactory) -> CacheProtocol:
    return await make_cache()

"""The contract suite (tests/test_contract.py) over NearCacheLayer.

Around MemoryCache (a hand-driven invalidation source) and around RedisAdapter (the real
RESP2 tracking channel). Tests that cannot hold by design are listed with why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import tests.test_contract as contract
from resilient_cache import CacheProtocol, Limits, MemoryCache, RedisAdapter
from resilient_cache.adapters.tracking import RedisTrackingSource
from resilient_cache.layers.near_cache import ManualInvalidations, NearCacheLayer
from resilient_cache.testing import ManualClock
from tests.conftest import CacheFactory
from tests.servers import RedisServer

NOT_FOR_NEAR_CACHE: dict[str, str] = {}

CONTRACT_TESTS = contract.reuse(globals(), NOT_FOR_NEAR_CACHE)


def test_every_contract_test_is_run_or_excused() -> None:
    assert set(NOT_FOR_NEAR_CACHE) <= set(CONTRACT_TESTS)
    assert len(CONTRACT_TESTS) - len(NOT_FOR_NEAR_CACHE) >= 30


@pytest.fixture(params=["near-memory", "near-redis"])
async def make_cache(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[CacheFactory]:
    """Like the conftest ``make_cache``, each cache wrapped in a NearCacheLayer."""
    root = MemoryCache(clock=clock)
    layers: list[NearCacheLayer] = []
    url = ""
    if request.param == "near-redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
        assert server.command("FLUSHALL") == "+OK"

    async def build(*, namespace: str | None = None, limits: Limits | None = None) -> CacheProtocol:
        inner: CacheProtocol
        if url:
            adapter = RedisAdapter.from_url(url, namespace=namespace, limits=limits)
            source = RedisTrackingSource.for_adapter(adapter)
            near = NearCacheLayer(adapter, source, clock=clock)
            assert await source.wait_healthy(5)
        else:
            if limits is not None:
                inner = MemoryCache(namespace=namespace, clock=clock, limits=limits)
            else:
                inner = root if namespace is None else root.namespaced(namespace)
            near = NearCacheLayer(inner, ManualInvalidations(), clock=clock)
        layers.append(near)
        return near

    yield build
    for layer in layers:
        await layer.aclose()

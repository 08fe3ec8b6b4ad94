"""The contract suite (tests/test_contract.py) over NearCacheLayer.

Around MemoryCache (a hand-driven invalidation source) and around RedisAdapter (the real
RESP2 tracking channel). Tests that cannot hold by design are listed with why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import tests.test_contract as contract
from resilient_cache import CacheProtocol, Limits, RedisAdapter
from resilient_cache.adapters.tracking import RedisTrackingSource
from resilient_cache.layers.near_cache import ManualInvalidations, NearCacheLayer
from resilient_cache.testing import ManualClock
from tests.conftest import CacheFactory, backing_caches

NOT_FOR_NEAR_CACHE: dict[str, str] = {}

CONTRACT_TESTS = contract.reuse(globals(), NOT_FOR_NEAR_CACHE)


def test_every_contract_test_is_run_or_excused() -> None:
    assert set(NOT_FOR_NEAR_CACHE) <= set(CONTRACT_TESTS)
    assert len(CONTRACT_TESTS) - len(NOT_FOR_NEAR_CACHE) >= 30


@pytest.fixture(params=["near-memory", "near-redis"])
async def make_cache(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[CacheFactory]:
    """Like the conftest ``make_cache``, each cache wrapped in a NearCacheLayer (on Redis,
    with client tracking; in memory, with a manual invalidation channel)."""
    layers: list[NearCacheLayer] = []
    async with backing_caches(request, clock, request.param.removeprefix("near-")) as inner:

        async def build(
            *, namespace: str | None = None, limits: Limits | None = None
        ) -> CacheProtocol:
            cache = await inner(namespace=namespace, limits=limits)
            if isinstance(cache, RedisAdapter):
                source = RedisTrackingSource.for_adapter(cache)
                near = NearCacheLayer(cache, source, clock=clock)
                assert await source.wait_healthy(5)
            else:
                near = NearCacheLayer(cache, ManualInvalidations(), clock=clock)
            layers.append(near)
            return near

        yield build
        for layer in layers:
            await layer.aclose()

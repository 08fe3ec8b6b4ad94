"""The contract suite (tests/test_contract.py) over CompressionLayer, compressing eagerly.

``threshold=0``: every value is tried, and stored compressed whenever its envelope is
smaller. Every contract test runs here, around MemoryCache and around RedisAdapter, except
those listed in ``NOT_FOR_COMPRESSION`` with why. A new contract test runs here at once;
``test_every_contract_test_is_run_or_excused`` notices one that is neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import tests.test_contract as contract
from resilient_cache import CacheProtocol, Limits, Success
from resilient_cache.layers.compression import Algorithm, CompressionLayer
from resilient_cache.testing import ManualClock
from tests.conftest import CacheFactory, backing_caches

NOT_FOR_COMPRESSION: dict[str, str] = {
    "test_a_batch_of_too_many_bytes_is_rejected_before_sending": (
        "the limit applies to what is sent: 2,500 repeated bytes compress far below it"
    ),
}

CONTRACT_TESTS = contract.reuse(globals(), NOT_FOR_COMPRESSION)


def test_every_contract_test_is_run_or_excused() -> None:
    assert set(NOT_FOR_COMPRESSION) <= set(CONTRACT_TESTS)
    assert len(CONTRACT_TESTS) - len(NOT_FOR_COMPRESSION) >= 30


@pytest.fixture(params=["zstd-memory", "zlib-memory", "zstd-redis"])
async def make_cache(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[CacheFactory]:
    """Like the conftest ``make_cache``, each cache wrapped in a CompressionLayer."""
    name, backend = request.param.split("-")
    algorithm: Algorithm = "zstd" if name == "zstd" else "zlib"
    async with backing_caches(request, clock, backend) as inner:

        async def build(
            *, namespace: str | None = None, limits: Limits | None = None
        ) -> CacheProtocol:
            cache = await inner(namespace=namespace, limits=limits)
            return CompressionLayer(cache, threshold=0, algorithm=algorithm)

        yield build


async def test_the_caches_here_compress(cache: CacheProtocol) -> None:
    assert isinstance(cache, CompressionLayer)
    await cache.set("k", "abc" * 100)
    stored = (await cache.inner.get("k")).unwrap()
    assert stored is not None
    assert stored.startswith(f"z1:{cache.algorithm}:")
    assert len(stored) < 300
    assert await cache.get("k") == Success("abc" * 100)

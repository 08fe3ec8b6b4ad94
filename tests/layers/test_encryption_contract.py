"""The contract suite (tests/test_contract.py) over EncryptionLayer, in its default setup.

Every contract test runs here too, around MemoryCache and around RedisAdapter, except the
few that cannot hold by design, listed in ``NOT_FOR_ENCRYPTION`` with why (each has its
own encryption test in tests/layers/test_encryption.py). A new contract test runs here at once;
``test_every_contract_test_is_run_or_excused`` notices one that is neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import tests.test_contract as contract
from resilient_cache import CacheProtocol, EncryptionLayer, Limits
from resilient_cache.testing import ManualClock
from tests.conftest import CacheFactory, backing_caches

NOT_FOR_ENCRYPTION = {
    # counters are refused (VALIDATION) unless allow_plaintext_counters=True
    "test_increment_creates_the_key_at_zero": "counters refused",
    "test_increment_keeps_the_ttl": "counters refused",
    "test_increment_of_a_non_integer_is_wrong_type_and_keeps_the_value": "counters refused",
    "test_increment_overflow_is_wrong_type_and_keeps_the_value": "counters refused",
    "test_decrement_by_int64_min_is_rejected": "counters refused",
    # the limit applies to the envelope: a 10-byte value does not fit in 10 bytes
    "test_value_larger_than_limit_is_rejected_before_sending": "limit after encryption",
}

CONTRACT_TESTS = contract.reuse(globals(), NOT_FOR_ENCRYPTION)


def test_every_contract_test_is_run_or_excused() -> None:
    assert set(NOT_FOR_ENCRYPTION) <= set(CONTRACT_TESTS)
    assert len(CONTRACT_TESTS) - len(NOT_FOR_ENCRYPTION) >= 30


@pytest.fixture(params=["encrypted-memory", "encrypted-redis"])
async def make_cache(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[CacheFactory]:
    """Like the conftest ``make_cache``, each cache wrapped in an EncryptionLayer."""
    backend = request.param.removeprefix("encrypted-")
    async with backing_caches(request, clock, backend) as inner:

        async def build(
            *, namespace: str | None = None, limits: Limits | None = None
        ) -> CacheProtocol:
            cache = await inner(namespace=namespace, limits=limits)
            return EncryptionLayer(cache, {"k1": bytes(32)}, current="k1", namespace=namespace)

        yield build


async def test_the_caches_here_are_encrypted(cache: CacheProtocol) -> None:
    assert isinstance(cache, EncryptionLayer)
    await cache.set("k", "v")
    stored = (await cache.inner.get("k")).unwrap()
    assert stored is not None
    assert stored.startswith("enc:v1:k1:")

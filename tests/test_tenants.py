"""Tenant isolation: no public call of one namespace reads, writes, lists or deletes another's keys.

Every backend of the contract suite (memory, Redis, Redis with coalescing, Redis as the
least-privilege ACL user); tenant ``A`` is ``"tenant"`` and tenant ``B`` is ``"tenant-b"``,
so that one name is a prefix of the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from resilient_cache import CacheProtocol, Success
from tests.conftest import CacheFactory

B_DATA = {
    "secret": "b-secret",
    "user:1": "b-user",
    "*": "b-star",
    "a*b": "b-glob",
    "[x]": "b-bracket",
    "tenant:k": "b-looks-like-a",
}
B_COUNTER = "hits"

Attempt = Callable[[CacheProtocol], Awaitable[Any]]

# what tenant A tries, with B's keys and keys crafted to reach B's
ATTEMPTS: dict[str, Attempt] = {
    "get": lambda a: a.get("secret"),
    "get B's full key": lambda a: a.get("tenant-b:secret"),
    "get the prefix trick": lambda a: a.get("-b:secret"),
    "get_json": lambda a: a.get_json("user:1"),
    "get_many": lambda a: a.get_many(list(B_DATA)),
    "exists": lambda a: a.exists("secret"),
    "ttl": lambda a: a.ttl("secret"),
    "set": lambda a: a.set("secret", "a-overwrite"),
    "set_json": lambda a: a.set_json("user:1", {"a": 1}),
    "set_many": lambda a: a.set_many({"secret": "a", "*": "a"}),
    "delete": lambda a: a.delete("secret"),
    "delete B's full key": lambda a: a.delete("tenant-b:secret"),
    "expire": lambda a: a.expire("secret", 1),
    "increment": lambda a: a.increment(B_COUNTER),
    "decrement": lambda a: a.decrement(B_COUNTER),
    "delete_pattern *": lambda a: a.delete_pattern("*"),
    "delete_pattern *secret*": lambda a: a.delete_pattern("*secret*"),
    "delete_pattern escaped star": lambda a: a.delete_pattern("\\*"),
    "delete_pattern bracket": lambda a: a.delete_pattern("[a-z]*"),
    "delete_pattern -b:*": lambda a: a.delete_pattern("-b:*"),
    "delete_pattern ../": lambda a: a.delete_pattern("../*"),
    "flush": lambda a: a.flush(),
}


async def b_state(b: CacheProtocol) -> tuple[object, object, object]:
    values = await b.get_many(list(B_DATA))
    counter = await b.get(B_COUNTER)
    ttl = await b.ttl("secret")
    return values, counter, ttl


@pytest.mark.parametrize("name", list(ATTEMPTS))
async def test_tenant_a_cannot_reach_tenant_b(make_cache: CacheFactory, name: str) -> None:
    a = await make_cache(namespace="tenant")
    b = await make_cache(namespace="tenant-b")
    assert await b.set_many(B_DATA) == Success(None)
    assert await b.increment(B_COUNTER, 41) == Success(41)
    before = await b_state(b)

    result = await ATTEMPTS[name](a)

    assert await b_state(b) == before  # nothing of B's changed ...
    seen = repr(result.value if isinstance(result, Success) else result)
    assert not any(value in seen for value in B_DATA.values())  # ... or was seen by A
    assert "41" not in seen or name in ("increment", "decrement")  # A counts its own
    if name in ("increment", "decrement"):
        assert isinstance(result, Success) and result.value in (1, -1)  # A's own counter
    assert isinstance(result, Success), result  # refused by nothing: simply not B's keys


async def test_a_tenants_own_calls_still_work(make_cache: CacheFactory) -> None:
    a = await make_cache(namespace="tenant")
    b = await make_cache(namespace="tenant-b")
    await b.set_many(B_DATA)
    assert await a.set_many({"secret": "a-secret", "*": "a-star"}) == Success(None)
    assert await a.get_many(["secret", "*"]) == Success({"secret": "a-secret", "*": "a-star"})
    assert await a.delete_pattern("\\*") == Success(1)  # its own literal "*" key only
    assert await a.delete_pattern("*") == Success(1)
    assert await b.get_many(list(B_DATA)) == Success(B_DATA)

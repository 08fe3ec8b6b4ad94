"""Property test: MemoryCache and RedisAdapter give the same answers to the same calls.

Hypothesis draws random sequences of operations, including glob patterns with classes,
ranges, escapes and multi-byte characters, and integer-looking strings that Redis does
or does not accept; every answer (value or error code) must agree.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_cache import CacheError, CacheProtocol, Failure, MemoryCache, RedisAdapter, Result
from tests.servers import RedisServer

ALPHABET = "ab*?[]^-\\é"
keys = st.text(ALPHABET, min_size=1, max_size=3)
# tokens of the glob language, plus any raw character (so malformed patterns occur too)
GLOB_TOKENS = ["*", "?", "[ab]", "[^a]", "[a-b]", "[b-a]", "[\\*]", "\\?", "[a-", "[]", "\\"]
patterns = st.lists(
    st.sampled_from(GLOB_TOKENS) | st.text(ALPHABET, min_size=1, max_size=1), min_size=1, max_size=4
).map("".join)
int_like = st.sampled_from(
    ["0", "-0", "01", "+1", " 1", "1 ", "9223372036854775807", "-9223372036854775808"]
)
values = st.one_of(st.integers(-5, 5).map(str), int_like, st.text(ALPHABET, max_size=4))
ttls = st.one_of(st.none(), st.integers(100, 1000))
amounts = st.one_of(st.integers(-3, 3), st.sampled_from([2**63 - 1, -(2**63)]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=6,
)

operations = st.one_of(
    st.tuples(st.just("set"), keys, values, ttls),
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("exists"), keys),
    st.tuples(st.just("increment"), keys, amounts),
    st.tuples(st.just("decrement"), keys, amounts),
    st.tuples(st.just("expire"), keys, st.integers(100, 1000)),
    st.tuples(st.just("ttl"), keys),
    st.tuples(st.just("delete_pattern"), patterns),
    st.tuples(st.just("get_many"), st.lists(keys, max_size=4)),
    st.tuples(st.just("set_many"), st.dictionaries(keys, values, max_size=4), ttls),
    st.tuples(st.just("set_json"), keys, json_values),
    st.tuples(st.just("get_json"), keys),
    st.tuples(st.just("flush")),
)


async def apply(cache: CacheProtocol, op: tuple[Any, ...]) -> Result[Any, CacheError]:
    name, *args = op
    method = getattr(cache, name)
    result: Result[Any, CacheError] = await method(*args)
    return result


def normalize(op: tuple[Any, ...], result: Result[Any, CacheError]) -> tuple[str, Any]:
    if isinstance(result, Failure):
        return ("error", result.error.code)
    if op[0] == "ttl":  # two clocks: compare "has a TTL", not the exact second
        return ("ok", result.value is None)
    return ("ok", result.value)


async def run_both(url: str, namespace: str | None, ops: list[tuple[Any, ...]]) -> None:
    memory = MemoryCache(namespace=namespace)
    redis = RedisAdapter.from_url(url, namespace=namespace)
    try:
        await redis.flush()
        for step, op in enumerate(ops):
            expected = normalize(op, await apply(memory, op))
            actual = normalize(op, await apply(redis, op))
            assert actual == expected, f"step {step}: {op!r}: redis {actual} != memory {expected}"
    finally:
        await redis.aclose()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    namespace=st.sampled_from([None, "t-1.x"]),
    ops=st.lists(operations, min_size=1, max_size=25),
)
def test_memory_and_redis_agree(
    redis_server: RedisServer, namespace: str | None, ops: list[tuple[Any, ...]]
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    asyncio.run(run_both(redis_server.url, namespace, ops))


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, key=keys)
def test_glob_matches_like_redis_scan(redis_server: RedisServer, pattern: str, key: str) -> None:
    """The glob port against Redis itself, one key and one pattern at a time."""

    async def check() -> None:
        memory = MemoryCache()
        redis = RedisAdapter.from_url(redis_server.url)
        try:
            await redis.flush()
            for cache in (memory, redis):
                await cache.set(key, "v")
            assert await memory.delete_pattern(pattern) == await redis.delete_pattern(pattern)
        finally:
            await redis.aclose()

    asyncio.run(check())

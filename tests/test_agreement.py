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


# -- bad input: the same whole error from every implementation -----------------------------

BAD_KEYS: list[object] = ["k", b"a", 0, "", "x" * 2000, None]
BAD_VALUES: list[object] = ["v", b"v", None, 1]
BAD_TTLS: list[object] = [None, 10, 0, -1, 1.5, "1", True]
BAD_AMOUNTS: list[object] = [1, 1.0, True, 2**63, -(2**63), "1", None]


def bad_calls() -> list[tuple[str, tuple[object, ...]]]:
    calls: list[tuple[str, tuple[object, ...]]] = []
    for key in BAD_KEYS:
        calls += [(name, (key,)) for name in ("get", "get_json", "delete", "exists", "ttl")]
        calls += [("set", (key, v, t)) for v in BAD_VALUES for t in BAD_TTLS]
        calls += [("set_json", (key, {"a": 1}, t)) for t in BAD_TTLS]
        calls += [("expire", (key, t)) for t in (10, 0, -1, 1.5, True, None)]
        calls += [(op, (key, a)) for a in BAD_AMOUNTS for op in ("increment", "decrement")]
    calls += [("get_many", (keys_,)) for keys_ in (["a", b"b"], [0], "abc", [""], None)]
    mappings: list[object] = [{"a": b"v"}, {b"a": "v"}, {"": "v"}, {"a": "v"}]
    calls += [("set_many", (m, t)) for m in mappings for t in (None, 0, 1.5)]
    calls += [("delete_pattern", (p,)) for p in ("", b"*", 0, "a[", None)]
    return calls


def whole(result: Result[Any, CacheError]) -> tuple[Any, ...]:
    """A failure as everything a caller sees of it (the server's address aside)."""
    if not isinstance(result, Failure):
        return ("success",)
    e = result.error
    details = {k: v for k, v in e.details.items() if k != "server"}
    return (e.code, e.message, e.operation, e.key, details, e.retryable, e.maybe_applied)


async def test_bad_input_gets_the_same_error_everywhere(redis_server: RedisServer) -> None:
    """One validation order and one message: MemoryCache and RedisAdapter refuse each bad
    call with the same whole CacheError; a key that is not a str is never the error's key."""
    assert redis_server.command("FLUSHALL") == "+OK"
    memory, redis = MemoryCache(), RedisAdapter.from_url(redis_server.url)
    refused = 0
    try:
        for name, args in bad_calls():
            expected = whole(await getattr(memory, name)(*args))
            actual = whole(await getattr(redis, name)(*args))
            if "success" in (expected[0], actual[0]):
                assert expected[0] == actual[0], f"{name}{args!r}: {actual} != {expected}"
                continue
            refused += 1
            assert actual == expected, f"{name}{args!r}:\n redis  {actual}\n memory {expected}"
            assert actual[3] is None or isinstance(actual[3], str)
    finally:
        await redis.aclose()
    assert refused > 300

"""The contract every CacheProtocol implementation honours, run against each of them.

``make_cache`` is parametrized over MemoryCache and RedisAdapter on a real redis-server.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from resilient_cache import (
    CacheError,
    CacheProtocol,
    ConfigurationError,
    ErrorCode,
    Failure,
    Limits,
    Result,
    Success,
)
from tests.conftest import CacheFactory

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def error_of(result: Result[Any, CacheError]) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    return result.error


def assert_code(result: Result[Any, CacheError], code: ErrorCode) -> CacheError:
    error = error_of(result)
    assert error.code is code, error
    return error


def test_every_backend_satisfies_the_protocol(cache: CacheProtocol) -> None:
    assert isinstance(cache, CacheProtocol)


# -- get / set ---------------------------------------------------------------------


async def test_get_missing_key_is_success_none(cache: CacheProtocol) -> None:
    assert await cache.get("nope") == Success(None)


async def test_set_then_get_round_trips_unicode(cache: CacheProtocol) -> None:
    assert await cache.set("k:ü", "välue ☃ 𝄞") == Success(None)
    assert await cache.get("k:ü") == Success("välue ☃ 𝄞")


async def test_set_empty_string_is_a_value_not_a_miss(cache: CacheProtocol) -> None:
    assert await cache.set("empty", "") == Success(None)
    assert await cache.get("empty") == Success("")
    assert await cache.exists("empty") == Success(True)


async def test_set_with_ttl_reports_ttl(cache: CacheProtocol) -> None:
    await cache.set("t", "v", ttl=100)
    assert await cache.ttl("t") in (Success(100), Success(99))


async def test_set_without_ttl_clears_previous_ttl(cache: CacheProtocol) -> None:
    await cache.set("t", "v", ttl=100)
    await cache.set("t", "w")
    assert await cache.ttl("t") == Success(None)
    assert await cache.get("t") == Success("w")


async def test_ttl_accepts_whole_float(cache: CacheProtocol) -> None:
    assert await cache.set("t", "v", ttl=5.0) == Success(None)  # type: ignore[arg-type]
    assert await cache.ttl("t") in (Success(5), Success(4))


async def test_ttl_of_missing_and_persistent_keys_is_none(cache: CacheProtocol) -> None:
    assert await cache.ttl("missing") == Success(None)
    await cache.set("persistent", "v")
    assert await cache.ttl("persistent") == Success(None)


# -- bad input: VALIDATION, nothing written ------------------------------------------

BAD_KEYS: list[Any] = ["", None, 42, b"bytes", ["k"], "\ud800"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
async def test_bad_keys_are_rejected_by_every_method(cache: CacheProtocol, key: Any) -> None:
    calls: list[Callable[[], Awaitable[Result[Any, CacheError]]]] = [
        lambda: cache.get(key),
        lambda: cache.get_json(key),
        lambda: cache.set(key, "v"),
        lambda: cache.set_json(key, 1),
        lambda: cache.delete(key),
        lambda: cache.exists(key),
        lambda: cache.expire(key, 10),
        lambda: cache.increment(key),
        lambda: cache.decrement(key),
        lambda: cache.ttl(key),
        lambda: cache.get_many([key]),
    ]
    if not isinstance(key, list):  # a list cannot be a dict key at all
        calls.append(lambda: cache.set_many({key: "v"}))
    for call in calls:
        error = assert_code(await call(), ErrorCode.VALIDATION)
        assert not error.retryable
        assert not error.trips_breaker
        assert not error.maybe_applied


async def test_key_longer_than_limit_is_rejected(make_cache: CacheFactory) -> None:
    cache = await make_cache(limits=Limits(max_key_bytes=8))
    assert await cache.set("12345678", "v") == Success(None)
    error = assert_code(await cache.set("123456789", "v"), ErrorCode.VALIDATION)
    assert "max_key_bytes=8" in error.message
    assert error.details["limit"] == 8
    # the limit counts UTF-8 bytes: 3 characters of 3 bytes each
    assert_code(await cache.get("☃☃☃"), ErrorCode.VALIDATION)


@pytest.mark.parametrize("value", [None, 1, b"bytes", {"a": 1}, "\udfff"], ids=repr)
async def test_non_str_values_are_rejected(cache: CacheProtocol, value: Any) -> None:
    error = assert_code(await cache.set("k", value), ErrorCode.VALIDATION)
    assert error.key == "k"
    assert await cache.exists("k") == Success(False)


async def test_value_larger_than_limit_is_rejected_before_sending(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache(limits=Limits(max_value_bytes=10))
    assert await cache.set("k", "x" * 10) == Success(None)
    error = assert_code(await cache.set("k", "y" * 11), ErrorCode.VALIDATION)
    assert "max_value_bytes=10" in error.message
    assert "yyy" not in error.message  # never the value
    assert await cache.get("k") == Success("x" * 10)
    assert_code(await cache.set_many({"a": "1", "b": "z" * 11}), ErrorCode.VALIDATION)
    assert await cache.exists("a") == Success(False)


async def test_a_batch_of_too_many_keys_is_rejected_before_sending(
    make_cache: CacheFactory,
) -> None:
    """A get_many/set_many must fit its deadline and never hold the event loop long: past
    max_batch_keys it is a VALIDATION failure and nothing is written."""
    cache = await make_cache(limits=Limits(max_batch_keys=3))
    assert await cache.set_many({"a": "1", "b": "2", "c": "3"}) == Success(None)
    assert (await cache.get_many(["a", "b", "c"])).is_success()
    error = assert_code(await cache.get_many(["d", "e", "f", "g"]), ErrorCode.VALIDATION)
    assert "max_batch_keys=3" in error.message and error.details["limit"] == 3
    assert_code(await cache.set_many(dict.fromkeys("wxyz", "v")), ErrorCode.VALIDATION)
    assert await cache.exists("w") == Success(False)


async def test_a_batch_of_too_many_bytes_is_rejected_before_sending(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache(limits=Limits(max_batch_bytes=4000))
    assert await cache.set_many({"p": "x" * 900, "q": "y" * 900}) == Success(None)
    error = assert_code(
        await cache.set_many({"p": "x" * 2500, "q": "y" * 2500}), ErrorCode.VALIDATION
    )
    assert "max_batch_bytes=4000" in error.message and error.details["limit"] == 4000
    assert await cache.get("p") == Success("x" * 900)  # nothing of it written


def test_the_batch_limits_default_to_what_fits_a_deadline() -> None:
    assert (Limits().max_batch_keys, Limits().max_batch_bytes) == (10_000, 10 * 1024 * 1024)


@pytest.mark.parametrize(
    "ttl", [0, -1, True, False, math.nan, math.inf, 1.5, "10", INT64_MAX], ids=repr
)
async def test_bad_ttls_are_rejected_and_nothing_is_written(cache: CacheProtocol, ttl: Any) -> None:
    assert_code(await cache.set("k", "v", ttl=ttl), ErrorCode.VALIDATION)
    assert_code(await cache.set_json("k", 1, ttl=ttl), ErrorCode.VALIDATION)
    assert_code(await cache.set_many({"k": "v"}, ttl=ttl), ErrorCode.VALIDATION)
    assert await cache.exists("k") == Success(False)
    await cache.set("e", "v")
    assert_code(await cache.expire("e", ttl), ErrorCode.VALIDATION)
    assert await cache.get("e") == Success("v")  # EXPIRE 0 would have deleted it
    assert await cache.ttl("e") == Success(None)


async def test_expire_requires_seconds(cache: CacheProtocol) -> None:
    await cache.set("e", "v")
    assert_code(await cache.expire("e", None), ErrorCode.VALIDATION)  # type: ignore[arg-type]


# -- delete / exists / expire ------------------------------------------------------


async def test_delete_tells_whether_the_key_existed(cache: CacheProtocol) -> None:
    await cache.set("d", "v")
    assert await cache.delete("d") == Success(True)
    assert await cache.delete("d") == Success(False)
    assert await cache.get("d") == Success(None)


async def test_exists(cache: CacheProtocol) -> None:
    assert await cache.exists("x") == Success(False)
    await cache.set("x", "v")
    assert await cache.exists("x") == Success(True)


async def test_expire_on_existing_and_missing_keys(cache: CacheProtocol) -> None:
    await cache.set("e", "v")
    assert await cache.expire("e", 50) == Success(True)
    assert await cache.ttl("e") in (Success(50), Success(49))
    assert await cache.expire("missing", 50) == Success(False)
    assert await cache.exists("missing") == Success(False)


# -- increment / decrement ---------------------------------------------------------


async def test_increment_creates_the_key_at_zero(cache: CacheProtocol) -> None:
    assert await cache.increment("n") == Success(1)
    assert await cache.increment("n", 41) == Success(42)
    assert await cache.decrement("n", 2) == Success(40)
    assert await cache.decrement("m") == Success(-1)
    assert await cache.increment("n", -50) == Success(-10)
    assert await cache.get("n") == Success("-10")


async def test_increment_keeps_the_ttl(cache: CacheProtocol) -> None:
    await cache.set("n", "1", ttl=100)
    assert await cache.increment("n") == Success(2)
    assert await cache.ttl("n") in (Success(100), Success(99))


@pytest.mark.parametrize("stored", ["abc", "1.5", " 1", "+1", "01", "-0", "", str(INT64_MAX + 1)])
async def test_increment_of_a_non_integer_is_wrong_type_and_keeps_the_value(
    cache: CacheProtocol, stored: str
) -> None:
    await cache.set("n", stored)
    error = assert_code(await cache.increment("n"), ErrorCode.WRONG_TYPE)
    assert not error.retryable
    assert_code(await cache.decrement("n"), ErrorCode.WRONG_TYPE)
    assert await cache.get("n") == Success(stored)


async def test_increment_overflow_is_wrong_type_and_keeps_the_value(cache: CacheProtocol) -> None:
    await cache.set("n", str(INT64_MAX))
    error = assert_code(await cache.increment("n"), ErrorCode.WRONG_TYPE)
    assert "overflow" in error.message
    await cache.set("m", str(INT64_MIN))
    assert_code(await cache.decrement("m"), ErrorCode.WRONG_TYPE)
    assert await cache.get("n") == Success(str(INT64_MAX))
    assert await cache.get("m") == Success(str(INT64_MIN))
    assert await cache.increment("m", INT64_MAX) == Success(-1)


@pytest.mark.parametrize("amount", [1.0, "1", True, None, INT64_MAX + 1, INT64_MIN - 1], ids=repr)
async def test_bad_amounts_are_rejected(cache: CacheProtocol, amount: Any) -> None:
    assert_code(await cache.increment("n", amount), ErrorCode.VALIDATION)
    assert_code(await cache.decrement("n", amount), ErrorCode.VALIDATION)
    assert await cache.exists("n") == Success(False)


async def test_decrement_by_int64_min_is_rejected(cache: CacheProtocol) -> None:
    assert await cache.increment("n", INT64_MIN) == Success(INT64_MIN)
    assert_code(await cache.decrement("n", INT64_MIN), ErrorCode.VALIDATION)
    assert await cache.get("n") == Success(str(INT64_MIN))


# -- JSON ----------------------------------------------------------------------------

JSON_VALUES: list[Any] = [
    {"a": [1, 2.5, None, True], "b": {"c": "ü"}},
    [1, "two", {"three": 3}],
    "just a string",
    12345678901234567890,
    -0.5,
    True,
    False,
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
async def test_json_round_trip_of_any_json_value(cache: CacheProtocol, value: Any) -> None:
    assert await cache.set_json("j", value, ttl=60) == Success(None)
    assert await cache.get_json("j") == Success(value)


async def test_json_null_and_missing_both_read_as_none(cache: CacheProtocol) -> None:
    assert await cache.set_json("j", None) == Success(None)
    assert await cache.get("j") == Success("null")
    assert await cache.get_json("j") == Success(None)
    assert await cache.get_json("missing") == Success(None)


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, {"x": -math.inf}, {1, 2}, object(), {"k": b"bytes"}], ids=repr
)
async def test_set_json_of_a_non_json_value_is_serialization(
    cache: CacheProtocol, value: Any
) -> None:
    error = assert_code(await cache.set_json("j", value), ErrorCode.SERIALIZATION)
    assert error.key == "j"
    assert await cache.exists("j") == Success(False)


async def test_set_json_takes_ints_up_to_the_interpreters_digit_limit(
    cache: CacheProtocol,
) -> None:
    """docs/contract.md: an int of up to 4,300 digits; a longer one is SERIALIZATION."""
    digits = sys.get_int_max_str_digits() or 4300
    largest = 10 ** (digits - 1)  # `digits` digits
    assert await cache.set_json("j", [largest]) == Success(None)
    assert await cache.get_json("j") == Success([largest])
    assert_code(await cache.set_json("k", 10**digits), ErrorCode.SERIALIZATION)
    assert await cache.exists("k") == Success(False)


async def test_set_json_of_a_circular_value_is_serialization(cache: CacheProtocol) -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert_code(await cache.set_json("j", loop), ErrorCode.SERIALIZATION)


@pytest.mark.parametrize("stored", ["not json", "{", "NaN", "Infinity", "[1,]", ""])
async def test_get_json_of_a_non_json_value_is_serialization_and_keeps_it(
    cache: CacheProtocol, stored: str
) -> None:
    await cache.set("j", stored)
    assert_code(await cache.get_json("j"), ErrorCode.SERIALIZATION)
    assert await cache.get("j") == Success(stored)


# -- batches -------------------------------------------------------------------------


async def test_get_many_returns_every_requested_key(cache: CacheProtocol) -> None:
    await cache.set_many({"a": "1", "b": "2"})
    assert await cache.get_many(["a", "missing", "b", "a"]) == Success(
        {"a": "1", "missing": None, "b": "2"}
    )
    assert await cache.get_many([]) == Success({})


@pytest.mark.parametrize("keys", ["abc", None, {"a"}, ["a", 1], ["a", ""]], ids=repr)
async def test_get_many_rejects_bad_key_lists(cache: CacheProtocol, keys: Any) -> None:
    assert_code(await cache.get_many(keys), ErrorCode.VALIDATION)


async def test_set_many_applies_ttl_to_every_key(cache: CacheProtocol) -> None:
    assert await cache.set_many({"a": "1", "b": "2", "c": "3"}, ttl=30) == Success(None)
    for key in ("a", "b", "c"):
        assert await cache.ttl(key) in (Success(30), Success(29))
    assert await cache.set_many({}) == Success(None)


async def test_set_many_is_all_or_nothing_on_bad_input(cache: CacheProtocol) -> None:
    error = assert_code(await cache.set_many({"a": "1", "b": 2}), ErrorCode.VALIDATION)  # type: ignore[dict-item]
    assert error.key == "b"
    assert_code(await cache.set_many({"a": "1", "": "2"}), ErrorCode.VALIDATION)
    assert_code(await cache.set_many([("a", "1")]), ErrorCode.VALIDATION)  # type: ignore[arg-type]
    assert await cache.exists("a") == Success(False)


# -- patterns, flush, namespaces ---------------------------------------------------


async def test_delete_pattern_deletes_only_matching_keys(cache: CacheProtocol) -> None:
    await cache.set_many({"user:1": "a", "user:2": "b", "user:10": "c", "session:1": "d"})
    assert await cache.delete_pattern("user:?") == Success(2)
    assert await cache.get_many(["user:1", "user:10", "session:1"]) == Success(
        {"user:1": None, "user:10": "c", "session:1": "d"}
    )
    assert await cache.delete_pattern("nothing:*") == Success(0)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("k[ab]", {"ka", "kb"}),
        ("k[^ab]", {"kc", "k*"}),
        ("k[a-b]", {"ka", "kb"}),
        ("k\\*", {"k*"}),
        ("k*", {"ka", "kb", "kc", "k*", "kab"}),
        ("k?b", {"kab"}),
    ],
)
async def test_delete_pattern_speaks_redis_glob(
    cache: CacheProtocol, pattern: str, expected: set[str]
) -> None:
    keys = ["ka", "kb", "kc", "k*", "kab"]
    await cache.set_many(dict.fromkeys(keys, "v"))
    assert await cache.delete_pattern(pattern) == Success(len(expected))
    remaining = await cache.get_many(keys)
    assert isinstance(remaining, Success)
    assert {k for k, v in remaining.value.items() if v is None} == expected


@pytest.mark.parametrize("pattern", ["", None, 5], ids=repr)
async def test_delete_pattern_rejects_bad_patterns(cache: CacheProtocol, pattern: Any) -> None:
    assert_code(await cache.delete_pattern(pattern), ErrorCode.VALIDATION)


async def test_namespaces_are_invisible_and_isolated(make_cache: CacheFactory) -> None:
    tenant_a = await make_cache(namespace="tenant-a")
    tenant_b = await make_cache(namespace="tenant-b")
    await tenant_a.set("k", "a")
    await tenant_b.set("k", "b")
    assert await tenant_a.get("k") == Success("a")
    assert await tenant_b.get("k") == Success("b")
    assert await tenant_a.get_many(["k"]) == Success({"k": "a"})
    assert await tenant_a.delete_pattern("*") == Success(1)
    assert await tenant_b.get("k") == Success("b")
    await tenant_a.set("x", "1")
    assert await tenant_a.flush() == Success(None)
    assert await tenant_b.exists("k") == Success(True)


@pytest.mark.parametrize(
    "namespace",
    ["", "a:b", "a*", "a?", "a[b]", "a\\b", "-a", "a b", "a\n", "x" * 65, 5],
    ids=repr,
)
async def test_namespaces_that_could_overlap_are_refused(
    make_cache: CacheFactory, namespace: Any
) -> None:
    with pytest.raises(ConfigurationError) as info:
        await make_cache(namespace=namespace)
    assert info.value.setting == "namespace"


async def test_the_namespace_prefix_is_visible_without_a_namespace(
    make_cache: CacheFactory,
) -> None:
    plain = await make_cache()
    tenant = await make_cache(namespace="tenant")
    await tenant.set("k", "v")
    assert await plain.get("tenant:k") == Success("v")


async def test_flush_without_namespace_empties_the_database(make_cache: CacheFactory) -> None:
    plain = await make_cache()
    tenant = await make_cache(namespace="tenant")
    await plain.set("k", "v")
    await tenant.set("k", "v")
    assert await plain.flush() == Success(None)
    assert await plain.exists("k") == Success(False)
    assert await tenant.exists("k") == Success(False)


async def test_ping(cache: CacheProtocol) -> None:
    assert await cache.ping() == Success(True)


# -- reuse by other modules --------------------------------------------------------------


def reuse(module: dict[str, Any], excused: Mapping[str, str] | None = None) -> list[str]:
    """Run this contract in another test module (a layer, a topology) with its own
    ``make_cache``: every ``test_*`` function here is placed in ``module`` (its globals),
    except the ``excused`` ones, each with the reason it cannot hold there.

    Returns every contract test's name; assert on it that the excused ones exist and that
    enough ran, so that a new contract test is never silently left out.
    """
    names = sorted(name for name, value in globals().items() if name.startswith("test_")
                   and callable(value))  # fmt: skip
    for name in names:
        if name not in (excused or {}):
            module[name] = globals()[name]
    return names

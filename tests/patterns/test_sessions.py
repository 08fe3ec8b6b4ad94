"""SessionStore and TokenCache: keys, TTL rules (never a negative token TTL), Results only."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry

from resilient_cache import (
    CacheError,
    CacheSettings,
    ConfigurationError,
    ErrorCode,
    Failure,
    JsonInput,
    KeyHasher,
    MemoryCache,
    Result,
    Success,
    build_cache,
)
from resilient_cache.domain.validation import MAX_TTL_SECONDS
from resilient_cache.patterns.sessions import SessionStore, TokenCache
from resilient_cache.testing import LOOPBACK, ManualClock, ScriptedCache, free_port
from tests.conftest import CacheFactory
from tests.servers import RedisServer

SID = "Yx3hQd0b8oPz_Vk2-wX9sLmN4rT6uJ1c"  # the shape of secrets.token_urlsafe(24)
DATA: dict[str, JsonInput] = {"user_id": 42, "roles": ["admin"], "csrf": "c5rf-t0ken"}


def error_of(result: Result[Any, CacheError]) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    return result.error


# -- SessionStore ---------------------------------------------------------------------------


async def test_a_session_round_trips_as_json_under_its_key_for_30_minutes(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache()
    sessions = SessionStore(cache)
    assert sessions.ttl == 1800
    assert await sessions.get(SID) == Success(None)
    assert await sessions.save(SID, DATA) == Success(None)
    assert await sessions.get(SID) == Success(DATA)
    stored = await cache.get(f"session:{SID}")  # documented, a JSON object
    assert isinstance(stored, Success) and stored.value is not None
    assert json.loads(stored.value) == DATA
    assert await cache.ttl(f"session:{SID}") in (Success(1800), Success(1799))
    assert await sessions.delete(SID) == Success(True)
    assert await sessions.delete(SID) == Success(False)
    assert await sessions.get(SID) == Success(None)


async def test_touch_restarts_the_ttl_and_an_untouched_session_expires(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock)
    sessions = SessionStore(cache, ttl=600)
    await sessions.save(SID, DATA)
    clock.advance(500)
    assert await sessions.get(SID) == Success(DATA)  # reading does not extend it
    assert await cache.ttl(f"session:{SID}") == Success(100)
    assert await sessions.touch(SID) == Success(True)
    assert await cache.ttl(f"session:{SID}") == Success(600)
    clock.advance(599)
    assert await sessions.get(SID) == Success(DATA)
    clock.advance(1)
    assert await sessions.get(SID) == Success(None)
    assert await sessions.touch(SID) == Success(False)  # nothing to extend


async def test_saving_again_replaces_the_data_and_restarts_the_ttl(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock)
    sessions = SessionStore(cache, ttl=600)
    await sessions.save(SID, DATA)
    clock.advance(500)
    await sessions.save(SID, {"user_id": 42})
    assert await sessions.get(SID) == Success({"user_id": 42})
    assert await cache.ttl(f"session:{SID}") == Success(600)


@pytest.mark.parametrize(
    "session_id",
    ["", "short", "x" * 257, "has spaces in it, sixteen+", "session*glob*chars*", "a:b" * 8, 42],
)
async def test_a_bad_session_id_is_refused_without_being_repeated(session_id: Any) -> None:
    cache = MemoryCache()
    sessions = SessionStore(cache)
    for result in (
        await sessions.get(session_id),
        await sessions.save(session_id, DATA),
        await sessions.touch(session_id),
        await sessions.delete(session_id),
    ):
        error = error_of(result)
        assert error.code is ErrorCode.VALIDATION
        assert error.key is None
        if session_id:
            assert str(session_id) not in f"{error!r} {error}"
    assert await cache.delete_pattern("*") == Success(0)  # nothing was stored


def test_new_ids_are_valid_and_unique() -> None:
    ids = {SessionStore.new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(session_id) == 43 for session_id in ids)  # 256 bits, URL-safe base64


async def test_ids_can_stay_out_of_key_names(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    hasher = KeyHasher(b"a-secret-of-32-bytes-for-tests!!")
    cache = build_cache(CacheSettings(redis_url=redis_server.url), registry=CollectorRegistry())
    sessions = SessionStore(cache, key_hasher=hasher)
    assert await sessions.save(SID, DATA) == Success(None)
    assert await sessions.get(SID) == Success(DATA)
    assert await raw_redis.keys("*") == [f"session:{hasher(SID)}".encode()]
    assert await sessions.touch(SID) == Success(True)
    assert await sessions.delete(SID) == Success(True)
    await cache.aclose()


async def test_stored_data_that_is_not_an_object_is_a_serialization_failure() -> None:
    cache = MemoryCache()
    await cache.set_json(f"session:{SID}", ["not", "a", "session"])
    error = error_of(await SessionStore(cache).get(SID))
    assert error.code is ErrorCode.SERIALIZATION


async def test_data_must_be_a_json_object() -> None:
    sessions = SessionStore(MemoryCache())
    not_a_mapping: Any = ["a", "list"]
    assert error_of(await sessions.save(SID, not_a_mapping)).code is ErrorCode.VALIDATION
    not_json: Any = {"when": object()}
    assert error_of(await sessions.save(SID, not_json)).code is ErrorCode.SERIALIZATION


@pytest.mark.parametrize("ttl", [0, -1, True, 1.5, MAX_TTL_SECONDS + 1])
def test_a_bad_session_ttl_is_a_configuration_error(ttl: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        SessionStore(MemoryCache(), ttl=ttl)
    assert raised.value.setting == "ttl"


async def test_a_cache_failure_is_a_failure_never_an_exception_nor_a_log_of_the_data() -> None:
    url = f"redis://{LOOPBACK}:{free_port()}/0"
    cache = build_cache(CacheSettings(redis_url=url), registry=CollectorRegistry())
    sessions = SessionStore(cache)
    outage = {ErrorCode.CONNECTION, ErrorCode.CIRCUIT_OPEN}  # the breaker opens on the way
    with structlog.testing.capture_logs() as logs:
        assert error_of(await sessions.save(SID, DATA)).code in outage
        assert error_of(await sessions.get(SID)).code in outage
        assert error_of(await sessions.touch(SID)).code in outage
        assert error_of(await sessions.delete(SID)).code in outage
    assert logs  # the failures were logged ...
    assert SID not in str(logs)  # ... without the session id (a credential) ...
    assert "c5rf-t0ken" not in str(logs)  # ... or its data
    await cache.aclose()


# -- TokenCache -----------------------------------------------------------------------------


async def test_a_token_is_cached_until_the_refresh_margin_before_it_expires(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache()
    tokens = TokenCache(cache)
    assert tokens.refresh_margin == 300
    assert await tokens.save("google", "42", "ya29.token", expires_in=3600) == Success(True)
    assert await tokens.get("google", "42") == Success("ya29.token")
    assert await cache.get("provider:token:google:42") == Success("ya29.token")  # documented
    assert await cache.ttl("provider:token:google:42") in (Success(3300), Success(3299))
    assert await tokens.get("github", "42") == Success(None)
    assert await tokens.delete("google", 42) == Success(True)  # an int user id is the same key
    assert await tokens.get("google", "42") == Success(None)


@pytest.mark.parametrize(
    ("expires_in", "ttl"),
    [
        (3600, 3300),
        (3600.9, 3300),  # rounded down: never past the margin
        (301, 1),
        (300.5, None),  # less than a second: not worth caching
        (300, None),
        (120, None),
        (0, None),
        (-60, None),
        (10**12, MAX_TTL_SECONDS),
    ],
)
def test_the_ttl_is_expires_in_minus_the_margin_never_below_one_second(
    expires_in: float, ttl: int | None
) -> None:
    assert TokenCache(MemoryCache()).ttl_for(expires_in) == ttl


async def test_a_token_expiring_within_the_margin_is_not_stored_and_replaces_the_old_one(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache()
    tokens = TokenCache(cache)
    assert await tokens.save("google", "42", "old", expires_in=3600) == Success(True)
    assert await tokens.save("google", "42", "new", expires_in=200) == Success(False)
    assert await tokens.get("google", "42") == Success(None)  # never "old", never "new"
    assert await tokens.save("google", "43", "t", expires_in=0) == Success(False)
    assert await tokens.save("google", "44", "t", expires_in=-5) == Success(False)
    assert await cache.exists("provider:token:google:43") == Success(False)
    assert await cache.exists("provider:token:google:44") == Success(False)


async def test_a_cached_token_is_gone_when_the_margin_starts(clock: ManualClock) -> None:
    tokens = TokenCache(MemoryCache(clock=clock), refresh_margin=60)
    await tokens.save("okta", "7", "t", expires_in=600)
    clock.advance(539)
    assert await tokens.get("okta", "7") == Success("t")
    clock.advance(1)  # 60 s before the token expires
    assert await tokens.get("okta", "7") == Success(None)


async def test_a_margin_of_zero_caches_for_the_whole_lifetime() -> None:
    cache = MemoryCache()
    tokens = TokenCache(cache, refresh_margin=0)
    assert await tokens.save("okta", "7", "t", expires_in=1) == Success(True)
    assert await cache.ttl("provider:token:okta:7") == Success(1)


async def test_provider_and_user_parts_cannot_forge_another_key() -> None:
    cache = MemoryCache()
    tokens = TokenCache(cache)
    await tokens.save("google:42", "x", "t", expires_in=3600)
    assert await cache.exists("provider:token:google%3A42:x") == Success(True)
    assert await tokens.get("google", "42:x") == Success(None)


@pytest.mark.parametrize(
    ("provider", "user_id", "expires_in"),
    [("", "42", 3600), ("google", "", 3600), ("google", True, 3600), ("google", "42", "3600"),
     ("google", "42", None), ("google", "42", True), ("google", "42", float("nan"))],
)  # fmt: skip
async def test_bad_arguments_are_validation_failures(
    provider: Any, user_id: Any, expires_in: Any
) -> None:
    cache = MemoryCache()
    error = error_of(await TokenCache(cache).save(provider, user_id, "t", expires_in=expires_in))
    assert error.code is ErrorCode.VALIDATION
    assert await cache.delete_pattern("*") == Success(0)


@pytest.mark.parametrize("margin", [-1, True, 2.5, MAX_TTL_SECONDS + 1])
def test_a_bad_margin_is_a_configuration_error(margin: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        TokenCache(MemoryCache(), refresh_margin=margin)
    assert raised.value.setting == "refresh_margin"


async def test_token_cache_failures_are_results() -> None:
    scripted = ScriptedCache()
    tokens = TokenCache(scripted)
    scripted.fail_always(ErrorCode.TIMEOUT)
    assert error_of(await tokens.save("g", "1", "t", expires_in=3600)).code is ErrorCode.TIMEOUT
    assert error_of(await tokens.save("g", "1", "t", expires_in=10)).code is ErrorCode.TIMEOUT
    assert error_of(await tokens.get("g", "1")).code is ErrorCode.TIMEOUT
    assert error_of(await tokens.delete("g", "1")).code is ErrorCode.TIMEOUT
    assert scripted.attempts == ["set", "delete", "get", "delete"]

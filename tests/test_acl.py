"""The documented least-privilege ACL on a real redis-server; AUTH errors; credential rotation.

(The whole contract suite also runs as a user with exactly the documented commands: the
``redis-acl`` backend of the ``make_cache`` fixture.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis import exceptions as rx
from redis.credentials import CredentialProvider

from resilient_cache import (
    CacheError,
    CacheSettings,
    ConfigurationError,
    ErrorCode,
    Failure,
    RedisAdapter,
    Result,
    Success,
    build_cache,
)
from resilient_cache.acl import LIBRARY_COMMANDS, acl_rules
from resilient_cache.domain.scripts import CacheScript
from resilient_cache.patterns.ratelimit import RateLimiter
from tests.servers import LOOPBACK, RedisServer

USER, PASSWORD = "cache", "s3cret-cache-password"


def error_of(result: Result[Any, CacheError]) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    return result.error


def as_user(server: RedisServer, user: str = USER, password: str = PASSWORD) -> str:
    return f"redis://{user}:{password}@{LOOPBACK}:{server.port}/0"


@pytest.fixture
async def admin(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """The default user, to set the ACL up and look at the server; the cache user made."""
    client = aioredis.Redis.from_url(private_redis.url)
    await client.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}",
                                 *acl_rules("app").split())  # fmt: skip
    await client.execute_command("ACL", "LOG", "RESET")
    yield client
    await client.aclose()


async def denied(admin: aioredis.Redis) -> list[str]:
    """What the server refused the cache user since the last reset (``ACL LOG``)."""
    entries: list[dict[bytes | str, Any]] = await admin.execute_command("ACL", "LOG")
    objects = []
    for entry in entries:
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
        value = fields["object"]
        name = value.decode() if isinstance(value, bytes) else str(value)
        objects += [name] * int(fields["count"])  # repeated refusals are counted in one entry
    return objects


def test_the_rules_are_the_documented_ones() -> None:
    rules = acl_rules("app")
    assert rules.startswith("resetkeys ~app:* resetchannels -@all ")
    assert rules.split()[4:] == [f"+{command}" for command in LIBRARY_COMMANDS]
    assert acl_rules(None).split()[1] == "~*"
    for forbidden in ("flushdb", "flushall", "keys", "script", "function", "config", "acl", "@all"):
        assert f"+{forbidden}" not in rules.split()
    with pytest.raises(ConfigurationError):
        acl_rules("a*")


async def test_every_method_works_under_the_acl_and_nothing_is_refused(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    await admin.set("other-app:k", "theirs")
    cache = RedisAdapter.from_url(as_user(private_redis), namespace="app", client_name="shop")
    assert await cache.ping() == Success(True)
    assert await cache.set("a", "1", ttl=60) == Success(None)
    assert await cache.set_json("j", {"x": 1}) == Success(None)
    assert await cache.get("a") == Success("1")
    assert await cache.get_json("j") == Success({"x": 1})
    assert await cache.exists("a") == Success(True)
    assert await cache.expire("a", 30) == Success(True)
    assert isinstance(await cache.ttl("a"), Success)
    assert await cache.increment("n", 5) == Success(5)
    assert await cache.decrement("n") == Success(4)
    assert await cache.set_many({"m1": "x", "m2": "y"}, ttl=60) == Success(None)
    assert await cache.set_many({"m3": "z"}) == Success(None)
    assert await cache.get_many(["m1", "m2", "m3"]) == Success({"m1": "x", "m2": "y", "m3": "z"})
    assert await cache.delete("m3") == Success(True)
    assert await cache.delete_pattern("m*") == Success(2)
    assert await cache.flush() == Success(None)
    assert await cache.exists("j") == Success(False)
    for sliding in (False, True):  # run_script: EVALSHA, then EVAL once Redis forgot it
        limiter = RateLimiter(cache, limit=1, window=60, sliding=sliding)
        assert (await limiter.check(f"rate_limit:{sliding}")).allowed
        await admin.script_flush()
        refused = await limiter.check(f"rate_limit:{sliding}")
        assert not refused.allowed and not refused.degraded
    await cache.aclose()
    # the library never tried anything the ACL refuses (FLUSHDB, KEYS, ...) ...
    # (CLIENT SETINFO included: redis-py would send it on Redis 7.2+ and Valkey)
    assert await denied(admin) == []
    # ... and the other application's key survived the namespace's flush
    assert await admin.get("other-app:k") == b"theirs"


async def test_the_acl_refuses_what_the_library_never_sends(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(as_user(private_redis))
    for command in (("FLUSHDB",), ("FLUSHALL",), ("KEYS", "*"), ("GET", "other-app:k")):
        with pytest.raises(rx.NoPermissionError):
            await client.execute_command(*command)
    await client.aclose()


async def test_select_is_allowed_for_the_caches_database_alone(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(as_user(private_redis))
    with pytest.raises(rx.NoPermissionError):  # database 0: no SELECT at all
        await client.execute_command("SELECT", "1")
    await admin.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}",
                                *acl_rules("app", db=2).split())  # fmt: skip
    assert await client.execute_command("SELECT", "2") in (b"OK", "OK", True)
    with pytest.raises(rx.NoPermissionError):
        await client.execute_command("SELECT", "3")
    await client.aclose()
    on_db2 = RedisAdapter.from_url(as_user(private_redis).replace("/0", "/2"), namespace="app")
    assert await on_db2.set("k", "v") == Success(None)
    assert await admin.execute_command("SELECT", "0") in (b"OK", "OK", True)
    await on_db2.aclose()


async def test_what_redis_cannot_confine_is_as_documented(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    """acl.py and docs/security.md say exactly this; if a Redis version confines more, this
    test fails and the words must change."""
    await admin.set("other-app:secret-name", "theirs")
    client = aioredis.Redis.from_url(as_user(private_redis))
    _, names = await client.scan(0, match="*", count=1000)  # SCAN lists every key name ...
    assert b"other-app:secret-name" in names
    with pytest.raises(rx.NoPermissionError):  # ... but the value stays out of reach
        await client.get("other-app:secret-name")
    await admin.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}",
                                *acl_rules("app", scan=False, near_cache=True).split())  # fmt: skip
    with pytest.raises(rx.NoPermissionError):  # scan=False: not even the names
        await client.scan(0)
    # tracking with no prefix, or another application's, is accepted (names leak live)
    assert await client.execute_command("CLIENT", "TRACKING", "on", "BCAST") in (b"OK", "OK", True)
    await client.aclose()
    cache = RedisAdapter.from_url(as_user(private_redis), namespace="app")
    assert error_of(await cache.flush()).code is ErrorCode.AUTH  # the price of scan=False
    assert error_of(await cache.delete_pattern("a*")).code is ErrorCode.AUTH
    assert await cache.set("k", "v") == Success(None)
    await cache.aclose()


async def test_a_script_reaches_no_key_outside_the_namespace(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    await admin.set("other-app:k", "theirs")
    peek = CacheScript(
        name="peek",
        source="return redis.call('SET', 'other-app:k', 'mine')",  # a key it was not given
        keys=1,
        twin=lambda store, keys, args: None,
    )
    cache = RedisAdapter.from_url(as_user(private_redis), namespace="app")
    error = error_of(await cache.run_script(peek, ["k"]))
    assert error.code is ErrorCode.AUTH, error
    assert not error.retryable
    await cache.aclose()
    assert await admin.get("other-app:k") == b"theirs"
    assert await denied(admin) == ["other-app:k"]  # refused by Redis, inside the script


async def test_another_namespace_is_refused_and_not_retried(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    registry = CollectorRegistry()
    settings = CacheSettings(redis_url=as_user(private_redis), namespace="other-app")
    cache = build_cache(settings, registry=registry)
    error = error_of(await cache.get("k"))
    assert error.code is ErrorCode.AUTH
    assert "permissions" in error.message.lower()  # NOPERM: says what is wrong
    assert not error.retryable
    retries = registry.get_sample_value(
        "resilient_cache_retries_total",
        {"cache": "default", "operation": "get", "error_type": "auth"},
    )
    assert not retries
    assert await denied(admin) == ["other-app:k"]  # one attempt, no retry
    await cache.aclose()


async def test_a_wrong_password_is_an_auth_failure_not_retried(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    registry = CollectorRegistry()
    url = as_user(private_redis, password="wrong-password")
    cache = build_cache(CacheSettings(redis_url=url, namespace="app"), registry=registry)
    error = error_of(await cache.get("k"))
    assert error.code is ErrorCode.AUTH
    assert "password" in error.message.lower()
    assert "wrong-password" not in repr(error)
    assert not error.retryable and not error.trips_breaker
    auth_failures = [e for e in await denied(admin) if e in ("AUTH", "HELLO")]
    assert len(auth_failures) == 1  # one attempt, no retry
    await cache.aclose()


class RotatingCredentials(CredentialProvider):
    """Hands out whatever the password currently is, as a secret store would."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.asked = 0

    def get_credentials(self) -> tuple[str, str]:
        self.asked += 1
        return USER, self.password


async def test_a_credential_provider_picks_up_a_rotated_password(
    private_redis: RedisServer, admin: aioredis.Redis
) -> None:
    credentials = RotatingCredentials(PASSWORD)
    url = f"redis://{LOOPBACK}:{private_redis.port}/0"
    cache = RedisAdapter.from_url(url, namespace="app", credential_provider=credentials)
    assert await cache.set("k", "v") == Success(None)
    # rotation: the server gets the new password, old connections are dropped
    await admin.execute_command("ACL", "SETUSER", USER, "resetpass", ">rotated-password")
    await admin.client_kill_filter(_type="normal", skipme=True)
    credentials.password = "rotated-password"
    assert await cache.get("k") == Success("v")  # reconnected with the new password
    assert credentials.asked >= 2
    await cache.aclose()


def test_a_credential_provider_excludes_other_credentials() -> None:
    provider = RotatingCredentials(PASSWORD)
    with pytest.raises(ConfigurationError, match="credential_provider"):
        RedisAdapter.from_url(f"redis://u:p@{LOOPBACK}:1/0", credential_provider=provider)
    with pytest.raises(ConfigurationError, match="credential_provider"):
        RedisAdapter.from_url(f"redis://{LOOPBACK}:1/0", password="p", credential_provider=provider)
    with pytest.raises(ConfigurationError, match="credential_provider"):
        RedisAdapter.from_url(f"redis://{LOOPBACK}:1/0", credential_provider=object())
    adapter = RedisAdapter.from_url(f"redis://{LOOPBACK}:1/0", credential_provider=provider)
    assert PASSWORD not in repr(adapter)

"""RedisAdapter against real redis-server processes: faults, bounds, and what is sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection

from resilient_cache import (
    CacheError,
    ConfigurationError,
    ErrorCode,
    Failure,
    Limits,
    RedisAdapter,
    RedisClusterAdapter,
    Result,
    Success,
    redact_url,
)
from tests.servers import LOOPBACK, RedisServer, free_port

# What a bounded call may take beyond its operation_timeout on a loaded CI machine.
SLACK = 0.25


def error_of(result: Result[Any, CacheError]) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    return result.error


async def command_calls(raw: aioredis.Redis, command: str) -> int:
    stats: dict[str, Any] = await raw.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


@pytest.fixture
async def adapter(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> AsyncIterator[RedisAdapter]:
    cache = RedisAdapter.from_url(redis_server.url)
    yield cache
    await cache.aclose()


async def connections_received(raw: aioredis.Redis) -> int:
    stats: dict[str, Any] = await raw.info("stats")
    return int(stats["total_connections_received"])


async def block_server(server: RedisServer, seconds: float) -> asyncio.Task[bytes]:
    """Make the server unresponsive for ``seconds``: DEBUG SLEEP on a connection of its own.

    Returns once the command is on the wire; await the task for the server to wake up.
    """
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    writer.write(f"DEBUG SLEEP {seconds}\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.02)  # the server reads it at once: it is idle

    async def wake() -> bytes:
        reply = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return reply

    return asyncio.create_task(wake())


async def network_attempts(raw: aioredis.Redis, command: str) -> int:
    """How many times ``command`` ran plus how many connections were opened.

    Call it before and after a fault from :func:`block_server`; the difference counts
    one extra for block_server's own connection.
    """
    return await command_calls(raw, command) + await connections_received(raw)


# -- one network attempt per call ------------------------------------------------------


async def test_redis_py_retry_is_off_one_attempt_per_call(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    cache = RedisAdapter.from_url(redis_server.url, socket_timeout=0.05)
    await cache.ping()
    await raw_redis.config_resetstat()
    before = await network_attempts(raw_redis, "get")
    sleeper = await block_server(redis_server, 0.5)
    result = await cache.get("k")
    await sleeper
    assert error_of(result).code is ErrorCode.TIMEOUT
    await asyncio.sleep(0.05)  # let the server drain what the client wrote
    assert await network_attempts(raw_redis, "get") - before - 1 == 1
    await cache.aclose()


async def test_control_plain_redis_py_makes_several_attempts(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    """Shows that the counter above can tell: redis-py retrying a timeout resends it."""
    plain = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.05, retry_on_timeout=True)
    await plain.ping()
    await raw_redis.config_resetstat()
    before = await network_attempts(raw_redis, "get")
    sleeper = await block_server(redis_server, 0.5)
    with contextlib.suppress(Exception):
        await plain.get("k")
    await sleeper
    await asyncio.sleep(0.05)
    assert await network_attempts(raw_redis, "get") - before - 1 > 1
    await plain.aclose()


async def test_a_wrapped_client_has_its_retry_turned_off(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.05)
    cache = RedisAdapter(client)
    await cache.ping()
    await raw_redis.config_resetstat()
    before = await network_attempts(raw_redis, "get")
    sleeper = await block_server(redis_server, 0.5)
    assert error_of(await cache.get("k")).code is ErrorCode.TIMEOUT
    await sleeper
    await asyncio.sleep(0.05)
    assert await network_attempts(raw_redis, "get") - before - 1 == 1
    await cache.aclose()  # does not close a client it does not own
    assert await client.ping() is True
    await client.aclose()


# -- bounded failures --------------------------------------------------------------------


async def test_down_server_fails_fast_with_connection() -> None:
    cache = RedisAdapter.from_url(f"redis://{LOOPBACK}:{free_port()}/0")
    started = time.monotonic()
    error = error_of(await cache.get("k"))
    assert time.monotonic() - started < 0.5 + SLACK
    assert error.code is ErrorCode.CONNECTION
    assert error.retryable and error.trips_breaker and not error.maybe_applied
    assert error.operation == "get" and error.key == "k"
    assert not isinstance(error.cause, ConnectionRefusedError | None)
    increment = error_of(await cache.increment("n"))
    assert increment.retryable and not increment.maybe_applied  # never sent: safe to retry
    assert isinstance(await cache.connect(), Failure)
    await cache.aclose()


async def test_slow_server_times_out_within_the_operation_timeout(
    adapter: RedisAdapter, redis_server: RedisServer
) -> None:
    await asyncio.gather(*(adapter.ping() for _ in range(3)))  # three live connections
    sleeper = await block_server(redis_server, 1.0)
    started = time.monotonic()
    results = await asyncio.gather(adapter.get("k"), adapter.set("k", "v"), adapter.increment("n"))
    elapsed = time.monotonic() - started
    await sleeper
    assert elapsed < 0.5 + SLACK
    get, set_, incr = (error_of(r) for r in results)
    assert {get.code, set_.code, incr.code} == {ErrorCode.TIMEOUT}
    assert get.retryable and set_.maybe_applied
    # the INCRBY may have been applied: the error must say so and forbid a retry
    assert incr.maybe_applied and not incr.retryable


async def test_an_exhausted_pool_waits_no_longer_than_the_operation_timeout(
    redis_server: RedisServer,
) -> None:
    cache = RedisAdapter.from_url(redis_server.url, max_connections=1, socket_timeout=2.0)
    await cache.ping()
    sleeper = await block_server(redis_server, 1.0)
    started = time.monotonic()
    results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(5)))
    assert time.monotonic() - started < 0.5 + SLACK
    assert all(error_of(r).code in (ErrorCode.TIMEOUT, ErrorCode.CONNECTION) for r in results)
    await sleeper
    assert await cache.get("k0") == Success(None)  # and it heals
    assert cache.pool_stats().in_use == 0
    await cache.aclose()


async def test_cancellation_propagates_and_never_mixes_up_replies(
    adapter: RedisAdapter, redis_server: RedisServer
) -> None:
    await adapter.set_many({f"k{i}": f"v{i}" for i in range(50)})
    sleeper = await block_server(redis_server, 0.2)
    task = asyncio.create_task(adapter.get("k1"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sleeper
    # a cancellation storm: every reply that arrives must belong to its own request
    for round_ in range(20):
        tasks = [asyncio.create_task(adapter.get(f"k{i}")) for i in range(50)]
        await asyncio.sleep(0)
        for i, t in enumerate(tasks):
            if (i + round_) % 3 == 0:
                t.cancel()
        for i, t in enumerate(tasks):
            try:
                result = await t
            except asyncio.CancelledError:
                continue
            assert result == Success(f"v{i}")
    stats = adapter.pool_stats()
    assert stats.in_use == 0  # every connection went back to the pool
    assert stats.idle <= stats.max_connections == 50


# -- down, killed, restarted -------------------------------------------------------------


async def test_down_at_start_up_then_heals_without_restart(private_redis: RedisServer) -> None:
    private_redis.stop()
    cache = RedisAdapter.from_url(private_redis.url)
    async with cache:  # connecting to a down Redis does not raise
        assert error_of(await cache.set("k", "v")).code is ErrorCode.CONNECTION
        private_redis.start()
        assert await cache.set("k", "v") == Success(None)
        assert await cache.get("k") == Success("v")


async def test_server_killed_and_restarted_under_a_live_adapter(private_redis: RedisServer) -> None:
    cache = RedisAdapter.from_url(private_redis.url)
    for i in range(5):  # several pooled connections
        assert await cache.set(f"k{i}", "v") == Success(None)
    await asyncio.gather(*(cache.get(f"k{i}") for i in range(5)))
    private_redis.stop(kill=True)
    for _ in range(3):
        error = error_of(await cache.get("k0"))
        assert error.code in (ErrorCode.CONNECTION, ErrorCode.TIMEOUT)
    private_redis.start()  # empty again: no persistence
    # connections killed with the server are replaced before use: no call fails
    outcomes = [await cache.set("back", "yes") for _ in range(3)]
    assert outcomes == [Success(None)] * 3, outcomes
    assert await cache.get("back") == Success("yes")
    assert cache.pool_stats().in_use == 0
    await cache.aclose()


# -- server-side errors map to codes -----------------------------------------------------


async def test_wrong_type_and_undecodable_values(
    adapter: RedisAdapter, raw_redis: aioredis.Redis
) -> None:
    await raw_redis.lpush("list", "x")
    assert error_of(await adapter.get("list")).code is ErrorCode.WRONG_TYPE
    assert error_of(await adapter.increment("list")).code is ErrorCode.WRONG_TYPE
    await raw_redis.set("bin", b"\xff\xfe\x00")
    error = error_of(await adapter.get("bin"))
    assert error.code is ErrorCode.SERIALIZATION
    assert error_of(await adapter.get_many(["bin"])).code is ErrorCode.SERIALIZATION
    assert await raw_redis.get("bin") == b"\xff\xfe\x00"


async def test_out_of_memory_is_reported_and_set_many_stays_all_or_nothing(
    adapter: RedisAdapter, raw_redis: aioredis.Redis
) -> None:
    await raw_redis.config_set("maxmemory-policy", "noeviction")
    await raw_redis.config_set("maxmemory", 1)
    try:
        error = error_of(await adapter.set("k", "v"))
        assert error.code is ErrorCode.OUT_OF_MEMORY
        assert not error.retryable and not error.maybe_applied
        oom = error_of(await adapter.set_many({"a": "1", "b": "2"}, ttl=10))
        assert oom.code is ErrorCode.OUT_OF_MEMORY
        assert (
            error_of(await adapter.set_many({"a": "1", "b": "2"})).code is ErrorCode.OUT_OF_MEMORY
        )
    finally:
        await raw_redis.config_set("maxmemory", 0)
    assert await raw_redis.exists("a", "b", "k") == 0
    assert await adapter.get("a") == Success(None)  # the connection is still in step


async def test_readonly_replica_is_readonly(private_redis: RedisServer) -> None:
    raw = aioredis.Redis.from_url(private_redis.url)
    await raw.set("k", "v")
    await raw.execute_command("REPLICAOF", LOOPBACK, str(free_port()))  # a master that is gone
    cache = RedisAdapter.from_url(private_redis.url)
    error = error_of(await cache.set("k", "w"))
    assert error.code is ErrorCode.READONLY
    assert error.retryable and not error.trips_breaker
    assert await cache.get("k") == Success("v")
    await cache.aclose()
    await raw.aclose()


async def test_passwords_never_leak(redis_binary: str) -> None:
    server = RedisServer(redis_binary, "--requirepass", "s3cret-pw")
    try:
        server.start()
        port = server.port
        good = RedisAdapter.from_url(f"redis://:s3cret-pw@{LOOPBACK}:{port}/0")
        assert await good.set("k", "v") == Success(None)
        assert "s3cret-pw" not in repr(good)
        await good.aclose()

        bad = RedisAdapter.from_url(f"redis://default:wr0ng-pw@{LOOPBACK}:{port}/0")
        error = error_of(await bad.get("k"))
        assert error.code is ErrorCode.AUTH
        assert not error.retryable and not error.trips_breaker
        for text in (repr(bad), repr(error), str(error), error.message, str(error.details)):
            assert "wr0ng-pw" not in text
        await bad.aclose()

        missing = RedisAdapter.from_url(f"redis://{LOOPBACK}:{port}/0")
        assert error_of(await missing.get("k")).code is ErrorCode.AUTH  # NOAUTH
        await missing.aclose()

        option = RedisAdapter.from_url(f"redis://{LOOPBACK}:{port}/0", password="s3cret-pw")
        assert await option.get("k") == Success("v")
        await option.aclose()

        acl = aioredis.Redis.from_url(f"redis://:s3cret-pw@{LOOPBACK}:{port}/0")
        await acl.acl_setuser(
            "app", enabled=True, passwords=["+app-pw"], keys=["app:*"], commands=["+@all"]
        )
        await acl.aclose()
        user = RedisAdapter.from_url(f"redis://app:app-pw@{LOOPBACK}:{port}/0", namespace="app")
        assert await user.set("k", "mine") == Success(None)
        await user.aclose()
        outsider = RedisAdapter.from_url(
            f"redis://{LOOPBACK}:{port}/0", username="app", password="app-pw"
        )
        denied = error_of(await outsider.set("other", "v"))  # outside the user's key pattern
        assert denied.code is ErrorCode.AUTH
        assert "app-pw" not in denied.message
        await outsider.aclose()
    finally:
        server.cleanup()


def test_redact_url() -> None:
    assert redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("redis://:pw@host/0") == "redis://:***@host/0"
    assert (
        redact_url("unix:///run/r.sock?db=2&password=pw") == "unix:///run/r.sock?db=2&password=***"
    )
    assert redact_url("unix:///run/r.sock") == "unix:///run/r.sock"
    assert redact_url("redis://host:1") == "redis://host:1"
    assert redact_url("localhost:6379") == "localhost:6379"  # shown as typed
    # unencoded '#', '/', '?' in a password confuse URL parsers: still hidden
    assert redact_url("redis://app:4711#xK9@cache:6379/0") == "redis://app:***@cache:6379/0"
    assert redact_url("redis://:se/cret@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://:abc?def@h/0") == "redis://:***@h/0"


# -- what goes over the wire -------------------------------------------------------------


async def test_batches_are_one_round_trip(adapter: RedisAdapter, raw_redis: aioredis.Redis) -> None:
    await raw_redis.config_resetstat()
    await adapter.set_many({f"k{i}": "v" for i in range(20)})
    await adapter.set_many({f"t{i}": "v" for i in range(20)}, ttl=30)
    result = await adapter.get_many([f"k{i}" for i in range(20)])
    assert isinstance(result, Success) and set(result.value.values()) == {"v"}
    assert await command_calls(raw_redis, "mset") == 1
    assert await command_calls(raw_redis, "exec") == 1
    assert await command_calls(raw_redis, "mget") == 1
    assert await command_calls(raw_redis, "get") == 0
    assert 25 <= await raw_redis.ttl("t19") <= 30


@pytest.mark.slow
async def test_delete_pattern_on_100k_keys_scans_in_batches_without_blocking(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    await raw_redis.execute_command("DEBUG", "POPULATE", 100_000, "app:user")
    await raw_redis.execute_command("DEBUG", "POPULATE", 1_000, "app:session")
    await raw_redis.config_resetstat()
    cache = RedisAdapter.from_url(redis_server.url, namespace="app")

    worst = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal worst
        probe_client = aioredis.Redis.from_url(redis_server.url)
        while not done.is_set():
            started = time.monotonic()
            await probe_client.ping()
            worst = max(worst, time.monotonic() - started)
            await asyncio.sleep(0.005)
        await probe_client.aclose()

    prober = asyncio.create_task(probe())
    result = await cache.delete_pattern("user:*")
    done.set()
    await prober
    assert result == Success(100_000)
    assert await raw_redis.dbsize() == 1_000
    assert await command_calls(raw_redis, "keys") == 0
    assert await command_calls(raw_redis, "del") == 0
    assert 0 < await command_calls(raw_redis, "unlink") <= 1_000  # batches, not one per key
    assert worst < 0.1, f"server blocked for {worst:.3f}s"
    await cache.aclose()


async def test_flush_never_flushes_and_keeps_other_databases(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    await raw_redis.set("db0-key", "v")
    cache = RedisAdapter.from_url(redis_server.url.removesuffix("/0") + "/1")
    await cache.set("db1-key", "v")
    await raw_redis.config_resetstat()
    assert await cache.flush() == Success(None)
    assert await cache.exists("db1-key") == Success(False)
    assert await raw_redis.get("db0-key") == b"v"
    assert await command_calls(raw_redis, "flushall") == 0
    assert await command_calls(raw_redis, "flushdb") == 0  # SCAN + UNLINK: fine under an ACL
    assert await command_calls(raw_redis, "keys") == 0
    await cache.aclose()


async def test_unix_socket_urls(redis_server: RedisServer, raw_redis: aioredis.Redis) -> None:
    cache = RedisAdapter.from_url(f"unix://{redis_server.socket_path}?db=2", namespace="n")
    assert await cache.set("k", "v") == Success(None)
    await raw_redis.execute_command("SELECT", 2)
    raw2 = aioredis.Redis.from_url(redis_server.url.removesuffix("/0") + "/2")
    assert await raw2.get("n:k") == b"v"
    await raw2.aclose()
    await cache.aclose()


async def test_client_name_and_expiry_are_real(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    cache = RedisAdapter.from_url(redis_server.url, client_name="checkout-cache")
    await cache.set("short", "v", ttl=1)
    clients = await raw_redis.client_list()
    assert any(c["name"] == "checkout-cache" for c in clients)
    deadline = time.monotonic() + 3  # Redis's own clock: poll, do not guess
    while await cache.exists("short") == Success(True):
        assert time.monotonic() < deadline, "key did not expire"
        await asyncio.sleep(0.05)
    assert await cache.get("short") == Success(None)
    await cache.aclose()


# -- configuration errors at start-up ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"socket_timeout": 0}, "socket_timeout"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"operation_timeout": float("inf")}, "operation_timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"pool_timeout": "1"}, "pool_timeout"),
        ({"db": -1}, "db"),
        ({"sockettimeout": 1}, "sockettimeout"),
    ],
)
def test_bad_options_raise_configuration_error_naming_the_setting(
    kwargs: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisAdapter.from_url("redis://127.0.0.1:1/0", **kwargs)
    assert info.value.setting == setting
    assert setting in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://u:pw@host/0",
        "localhost:6379",
        "redis://:pw@host/notadb",
        "rediss://:pw@host/0?ssl_cert_reqs=none",  # would switch verification off
        "redis://:pw@host/0?socket_timeout=30",  # would override the options
        "redis://:pw@host:notaport/0",
        "redis://:pw@host/0?bogus=1",  # would fail every call later
        "redis://app:pw#xK9@cache:6379/0",  # parsed as host 'app', port 'pw'
        "redis://:pw/se@cache:6379/0",
    ],
)
def test_bad_urls_raise_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisAdapter.from_url(url)
    assert info.value.setting == "url"
    assert "pw@" not in str(info.value)


def test_tls_options_on_a_plain_url_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisAdapter.from_url("redis://127.0.0.1:1/0", ssl_ca_certs="/etc/ca.pem")
    assert info.value.setting == "ssl_ca_certs"


def test_url_query_may_carry_db_and_credentials() -> None:
    cache = RedisAdapter.from_url("redis://127.0.0.1:1?db=3&username=u&password=pw")
    assert repr(cache) == "RedisAdapter('127.0.0.1:1/3', namespace=None)"


def test_bad_namespace_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        RedisAdapter.from_url("redis://127.0.0.1:1/0", namespace="")


def test_tls_urls_verify_certificates_by_default() -> None:
    cache = RedisAdapter.from_url("rediss://:pw@cache.example:6380/0")
    assert cache._connection_class is SSLConnection
    assert cache._connection_kwargs["ssl_cert_reqs"] == "required"
    assert cache._connection_kwargs["ssl_check_hostname"] is True
    assert "pw" not in repr(cache)


async def test_a_saturated_pool_does_not_trip_the_breaker(redis_server: RedisServer) -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from resilient_cache import (  # noqa: PLC0415
        BreakerState,
        CacheSettings,
        CircuitBreakerLayer,
        build_cache,
    )

    settings = CacheSettings.model_validate(
        {"redis_url": redis_server.url, "deadline": 0.2, "redis": {"max_connections": 1}}
    )
    cache = build_cache(settings, registry=CollectorRegistry())
    breaker = cache.find(CircuitBreakerLayer)
    assert breaker is not None
    await cache.ping()
    sleeper = await block_server(redis_server, 0.6)
    # one call holds the only connection (a real timeout: counted); nine wait for it and hit
    # their deadline while waiting (the client is saturated, not Redis: not counted)
    results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(10)))
    await sleeper
    assert all(isinstance(r, Failure) and r.error.code is ErrorCode.TIMEOUT for r in results)
    assert breaker.state is BreakerState.CLOSED
    await cache.aclose()


async def test_a_standalone_pool_wait_timeout_does_not_trip(redis_server: RedisServer) -> None:
    cache = RedisAdapter.from_url(redis_server.url, max_connections=1, operation_timeout=0.2)
    await cache.ping()
    sleeper = await block_server(redis_server, 0.5)
    first, second = await asyncio.gather(cache.get("a"), cache.get("b"))
    await sleeper
    waited = next(e for e in (error_of(first), error_of(second)) if "pool" in e.message)
    assert waited.code is ErrorCode.TIMEOUT
    assert not waited.trips_breaker
    await cache.aclose()


# -- the adapter's own pool -------------------------------------------------------------


async def test_connections_closed_by_the_server_are_replaced_before_use(
    adapter: RedisAdapter, raw_redis: aioredis.Redis
) -> None:
    await asyncio.gather(*(adapter.set(f"k{i}", "v") for i in range(5)))  # several connections
    assert adapter.pool_stats().idle >= 2
    killed = await raw_redis.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 2
    await asyncio.sleep(0.05)  # the event loop sees the EOFs
    # every pooled connection is dead; not one call fails: each is reconnected before use
    results = await asyncio.gather(*(adapter.get(f"k{i}") for i in range(5)))
    assert results == [Success("v")] * 5


async def test_pool_timeout_bounds_the_wait_for_a_connection(
    redis_server: RedisServer,
) -> None:
    cache = RedisAdapter.from_url(redis_server.url, max_connections=1, pool_timeout=0.05)
    await cache.ping()
    sleeper = await block_server(redis_server, 0.5)
    first = asyncio.create_task(cache.get("k"))  # holds the only connection
    await asyncio.sleep(0.01)
    started = time.monotonic()
    error = error_of(await cache.get("k"))
    assert time.monotonic() - started < 0.05 + SLACK
    assert error.code is ErrorCode.CONNECTION
    assert "pool_timeout=0.05" in error.message
    assert not error.trips_breaker  # the client is saturated, not Redis
    await first
    await sleeper
    assert cache.pool_stats().in_use == 0
    await cache.aclose()


async def test_a_closed_adapter_reconnects_when_used_again(adapter: RedisAdapter) -> None:
    assert await adapter.set("k", "v") == Success(None)
    await adapter.aclose()
    assert await adapter.get("k") == Success("v")


@pytest.mark.parametrize(
    "build",
    [RedisAdapter.from_url, RedisClusterAdapter.from_url],
    ids=["standalone", "cluster"],
)
def test_a_malformed_ipv6_url_is_a_configuration_error(build: Callable[[str], object]) -> None:
    """urlsplit raises a plain ValueError on '[::1:6379'; ConfigurationError is the one
    exception the library raises, and it names the setting without the password."""
    with pytest.raises(ConfigurationError) as info:
        build("redis://:pw@[::1:6379/0")
    assert info.value.setting == "url"
    assert "pw" not in str(info.value)


async def test_a_connection_the_server_closed_after_a_protocol_error_is_not_reused(
    private_redis: RedisServer,
) -> None:
    """A value above the server's proto-max-bulk-len (Limits raised above it) is refused
    with a protocol error and the server closes that connection: the next, unrelated call
    must not get the closed connection back (it failed with CONNECTION 26 times in 30)."""
    assert private_redis.command("CONFIG", "SET", "proto-max-bulk-len", "1mb") == "+OK"
    limits = Limits(max_value_bytes=4 * 1024 * 1024)
    cache = RedisAdapter.from_url(private_redis.url, limits=limits, max_connections=1)
    try:
        for _ in range(10):
            refused = await cache.set("big", "x" * (2 * 1024 * 1024))
            assert isinstance(refused, Failure), refused
            assert await cache.get("k") == Success(None)
    finally:
        await cache.aclose()

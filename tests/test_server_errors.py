"""The error mapping against the real replies of the run's server (`make test-servers` runs
it on Redis 6.2 and Valkey 8.0 too): each server words its errors its own way, and inside a
script Redis 6.2 wraps the reply's code in text. The mapping reads the code, not the wording.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilient_cache import CacheError, ErrorCode, Failure, RedisAdapter, Result, Success
from resilient_cache.acl import acl_rules
from resilient_cache.domain.scripts import CacheScript
from resilient_cache.testing import server_version
from tests.servers import LOOPBACK, RedisServer, free_port

USER, PASSWORD = "cache", "s3cret-cache-password"


def script(source: str, keys: int = 0) -> CacheScript:
    return CacheScript(name="probe", source=source, keys=keys, twin=lambda *_: None)


def error_of(result: Result[Any, CacheError]) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    return result.error


@pytest.fixture
async def admin(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """The default user; the cache user may touch ``app:mine*`` alone and has no INCRBY."""
    client = aioredis.Redis.from_url(private_redis.url)
    rules = acl_rules("app").replace("~app:*", "~app:mine*").split()
    await client.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}",
                                 *rules, "-incrby")  # fmt: skip
    yield client
    await client.aclose()


@pytest.fixture
async def cache(private_redis: RedisServer, admin: aioredis.Redis) -> AsyncIterator[RedisAdapter]:
    url = f"redis://{USER}:{PASSWORD}@{LOOPBACK}:{private_redis.port}/0"
    adapter = RedisAdapter.from_url(url, namespace="app", operation_timeout=5.0)
    yield adapter
    await adapter.aclose()


Case = Callable[[RedisAdapter, aioredis.Redis], Awaitable[Result[Any, CacheError]]]


async def key_outside_the_acl(cache: RedisAdapter, _: aioredis.Redis) -> Result[Any, CacheError]:
    return await cache.get("theirs")


async def command_outside_the_acl(cache: RedisAdapter, _: aioredis.Redis) -> Result[Any, Any]:
    return await cache.increment("mine:n")


async def script_key_outside_the_acl(cache: RedisAdapter, _: aioredis.Redis) -> Result[Any, Any]:
    # Valkey 8.0: 'ACL failure in script: No permissions to access a key ...' (an ERR reply)
    return await cache.run_script(script("return redis.call('GET', 'app:theirs')"), [])


async def script_command_outside_the_acl(
    cache: RedisAdapter, _: aioredis.Redis
) -> Result[Any, Any]:
    return await cache.run_script(script("return redis.call('INCRBY', KEYS[1], 1)", 1), ["mine"])


async def wrong_type(cache: RedisAdapter, admin: aioredis.Redis) -> Result[Any, Any]:
    await admin.lpush("app:mine-list", "x")
    return await cache.get("mine-list")


async def wrong_type_in_script(cache: RedisAdapter, admin: aioredis.Redis) -> Result[Any, Any]:
    await admin.lpush("app:mine-list", "x")
    return await cache.run_script(script("return redis.call('GET', KEYS[1])", 1), ["mine-list"])


async def not_an_integer_in_script(cache: RedisAdapter, _: aioredis.Redis) -> Result[Any, Any]:
    source = "redis.call('SET', KEYS[1], 'x') return redis.call('DECRBY', KEYS[1], 1)"
    return await cache.run_script(script(source, 1), ["mine-x"])


async def out_of_memory(cache: RedisAdapter, admin: aioredis.Redis) -> Result[Any, Any]:
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", 1)
    return await cache.set("mine", "v")


async def out_of_memory_in_script(cache: RedisAdapter, admin: aioredis.Redis) -> Result[Any, Any]:
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", 1)
    return await cache.run_script(script("return redis.call('SET', KEYS[1], 'v')", 1), ["mine"])


async def read_only(cache: RedisAdapter, admin: aioredis.Redis) -> Result[Any, Any]:
    await admin.replicaof(LOOPBACK, free_port())  # a replica of nobody: writes refused
    return await cache.set("mine", "v")


async def read_only_in_script(cache: RedisAdapter, admin: aioredis.Redis) -> Result[Any, Any]:
    await admin.replicaof(LOOPBACK, free_port())
    return await cache.run_script(script("return redis.call('SET', KEYS[1], 'v')", 1), ["mine"])


CASES: dict[Case, ErrorCode] = {
    key_outside_the_acl: ErrorCode.AUTH,
    command_outside_the_acl: ErrorCode.AUTH,
    script_key_outside_the_acl: ErrorCode.AUTH,
    script_command_outside_the_acl: ErrorCode.AUTH,
    wrong_type: ErrorCode.WRONG_TYPE,
    wrong_type_in_script: ErrorCode.WRONG_TYPE,
    not_an_integer_in_script: ErrorCode.WRONG_TYPE,
    out_of_memory: ErrorCode.OUT_OF_MEMORY,
    out_of_memory_in_script: ErrorCode.OUT_OF_MEMORY,
    read_only: ErrorCode.READONLY,
    read_only_in_script: ErrorCode.READONLY,
}


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
async def test_each_reply_maps_to_its_code_on_this_server(
    case: Case, cache: RedisAdapter, admin: aioredis.Redis, redis_binary: str
) -> None:
    error = error_of(await case(cache, admin))
    version = ".".join(map(str, server_version(redis_binary)))
    assert error.code is CASES[case], f"{redis_binary} {version}: {error.message!r}"


def commands_seen(server: RedisServer) -> set[str]:
    """The commands the server has counted (``INFO commandstats``), asked over a raw socket
    (a redis-py client would send its own handshake)."""
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data or len(data) < int(data[1 : data.index(b"\r\n")]) + 5:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            data += chunk
    return set(re.findall(r"^cmdstat_([a-z|_]+):", data.decode(), flags=re.MULTILINE))


async def test_the_handshake_sends_no_client_command(private_redis: RedisServer) -> None:
    """No CLIENT SETINFO (Redis 7.2+, Valkey) nor CLIENT MAINT_NOTIFICATIONS (redis-py 8;
    counted as failed calls by Redis 6.2): a least-privilege ACL logs each as refused."""
    adapter = RedisAdapter.from_url(private_redis.url, namespace="app")
    assert await adapter.set("k", "v") == Success(None)
    assert await adapter.get("k") == Success("v")
    await adapter.aclose()
    seen = commands_seen(private_redis)
    assert {"get", "set"} <= seen  # the counts are there...
    assert not {name for name in seen if name.startswith("client")}, seen  # ...and no CLIENT

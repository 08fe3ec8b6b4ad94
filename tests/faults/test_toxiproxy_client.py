"""The Toxiproxy client and fixtures, against a real toxiproxy-server and redis-server.

A plain redis-py client (no retries) goes through the test's proxy, so each test sees the
raw effect of one fault: these are the building blocks of the resilience tests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resilient_cache.testing import LOOPBACK
from resilient_cache.testing.toxiproxy import Proxy, Toxiproxy, ToxiproxyError, ToxiproxyServer

Connect = Callable[..., aioredis.Redis]


@pytest.fixture
async def connect(redis_proxy_url: str) -> AsyncIterator[Connect]:
    """Make redis-py clients to the proxy, without retries; all closed after the test."""
    clients: list[aioredis.Redis] = []

    def make(*, socket_timeout: float = 2.0) -> aioredis.Redis:
        client = aioredis.Redis.from_url(
            redis_proxy_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_ping_through_the_proxy(
    connect: Connect, redis_proxy: Proxy, redis_proxy_url: str
) -> None:
    assert redis_proxy.listen_host == LOOPBACK
    assert redis_proxy_url == f"redis://{LOOPBACK}:{redis_proxy.listen_port}/0"
    assert redis_proxy.enabled
    assert await connect().ping() is True


async def test_latency_delays_replies(connect: Connect, redis_proxy: Proxy) -> None:
    client = connect()
    assert await client.ping() is True  # connected before the fault
    with redis_proxy.latency(300) as toxic:
        assert toxic.attributes == {"latency": 300, "jitter": 0}
        start = time.monotonic()
        assert await client.ping() is True
        assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    assert await client.ping() is True
    assert time.monotonic() - start < 0.3


async def test_disabled_refuses_connections_until_the_block_ends(
    connect: Connect, redis_proxy: Proxy
) -> None:
    with redis_proxy.disabled():
        assert not redis_proxy.enabled
        with pytest.raises(RedisConnectionError):
            await connect().ping()
    assert redis_proxy.enabled
    assert await connect().ping() is True


async def test_timeout_zero_is_a_blackhole(connect: Connect, redis_proxy: Proxy) -> None:
    client = connect(socket_timeout=0.2)
    assert await client.ping() is True
    with redis_proxy.timeout(0):
        start = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.ping()
        assert time.monotonic() - start >= 0.2
    assert await connect().ping() is True


async def test_reset_peer_is_a_connection_error(connect: Connect, redis_proxy: Proxy) -> None:
    with redis_proxy.reset_peer(), pytest.raises(RedisConnectionError):
        await connect().ping()
    assert await connect().ping() is True


async def test_limit_data_cuts_the_connection(connect: Connect, redis_proxy: Proxy) -> None:
    client = connect()
    assert await client.ping() is True  # the handshake is through; the limit counts from here
    with redis_proxy.limit_data(3), pytest.raises(RedisConnectionError):
        await client.ping()  # "+PONG\r\n" is 7 bytes


async def test_slicer_keeps_the_data_intact(connect: Connect, redis_proxy: Proxy) -> None:
    client = connect()
    value = b"x" * 20_000
    await client.set(f"{redis_proxy.name}:key", value)
    with redis_proxy.slicer(100, 50, 10):
        assert await client.get(f"{redis_proxy.name}:key") == value
    await client.delete(f"{redis_proxy.name}:key")


async def test_toxic_context_removes_its_toxic(redis_proxy: Proxy) -> None:
    with redis_proxy.toxic("latency", name="slow", stream="upstream", latency=50) as toxic:
        assert toxic.name == "slow"
        assert [(t.name, t.type, t.stream) for t in redis_proxy.toxics()] == [
            ("slow", "latency", "upstream")
        ]
    assert redis_proxy.toxics() == []


async def test_removed_on_exit_even_when_the_block_fails(redis_proxy: Proxy) -> None:
    with pytest.raises(RuntimeError, match="boom"), redis_proxy.bandwidth(10):
        raise RuntimeError("boom")
    assert redis_proxy.toxics() == []


async def test_convenience_toxics_send_the_right_attributes(redis_proxy: Proxy) -> None:
    """The server drops attributes it does not know: its echo proves the names are right."""
    cases = [
        (redis_proxy.latency(7, 3), "latency", {"latency": 7, "jitter": 3}),
        (redis_proxy.timeout(8), "timeout", {"timeout": 8}),
        (redis_proxy.reset_peer(9), "reset_peer", {"timeout": 9}),
        (redis_proxy.limit_data(10), "limit_data", {"bytes": 10}),
        (
            redis_proxy.slicer(11, 4, 13),
            "slicer",
            {"average_size": 11, "size_variation": 4, "delay": 13},
        ),
        (redis_proxy.bandwidth(14), "bandwidth", {"rate": 14}),
        (redis_proxy.slow_close(15), "slow_close", {"delay": 15}),
    ]
    for fault, kind, attributes in cases:
        with fault as toxic:
            assert (toxic.type, toxic.stream, toxic.toxicity) == (kind, "downstream", 1.0)
            assert toxic.attributes == attributes
            assert redis_proxy.toxics() == [toxic]
    with redis_proxy.latency(1, stream="upstream", jitter=0) as toxic:
        assert toxic.stream == "upstream"


async def test_reset_clears_everything(
    connect: Connect, toxiproxy: Toxiproxy, redis_proxy: Proxy
) -> None:
    redis_proxy.add_toxic("timeout", timeout=0)
    redis_proxy.add_toxic("latency", stream="upstream", latency=1000)
    redis_proxy.disable()
    toxiproxy.reset()
    proxy = toxiproxy.get_proxy(redis_proxy.name)
    assert proxy.enabled
    assert proxy.toxics() == []
    assert proxy.listen == redis_proxy.listen  # enabled again on the same port
    assert await connect(socket_timeout=0.5).ping() is True


async def test_api_errors_raise_toxiproxy_error(toxiproxy: Toxiproxy, redis_proxy: Proxy) -> None:
    with pytest.raises(ToxiproxyError, match="409") as info:
        toxiproxy.create_proxy(redis_proxy.name, f"{LOOPBACK}:0", redis_proxy.upstream)
    assert info.value.status == 409
    assert "already exists" in info.value.body
    with pytest.raises(ToxiproxyError) as missing:
        redis_proxy.remove_toxic("no-such-toxic")
    assert missing.value.status == 404
    assert set(toxiproxy.proxies()) == {redis_proxy.name}


async def test_server_is_private_and_stops_by_pid(toxiproxy_binary: str) -> None:
    with ToxiproxyServer(toxiproxy_binary) as server:
        assert server.url == f"http://{LOOPBACK}:{server.port}"
        assert server.client.version()
        assert server.client.proxies() == {}
        proc = server.proc
    assert proc is not None
    assert proc.returncode is not None
    assert not server.dir.exists()
    with pytest.raises(ToxiproxyError) as info:
        server.client.version()
    assert info.value.status is None

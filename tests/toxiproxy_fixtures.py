"""Fixtures for fault-injection tests: a private toxiproxy-server and a proxy per test.

``redis_proxy`` sits between the test and the session ``redis_server``; a test breaks the
connection with the proxy's faults (``with redis_proxy.latency(300): ...``) and reaches Redis
through ``redis_proxy_url``. After each test every fault is undone and the proxy deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from resilient_cache.testing import LOOPBACK
from resilient_cache.testing.toxiproxy import Proxy, Toxiproxy, ToxiproxyServer
from tests.servers import RedisServer, require_binary


@pytest.fixture(scope="session")
def toxiproxy_binary() -> str:
    return require_binary("toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER")


@pytest.fixture(scope="session")
def toxiproxy(toxiproxy_binary: str) -> Iterator[Toxiproxy]:
    """A client of one toxiproxy-server for the session (free loopback port, stopped by PID)."""
    with ToxiproxyServer(toxiproxy_binary) as server:
        yield server.client


def proxy_url(proxy: Proxy, db: int = 0) -> str:
    """The ``redis://`` URL that reaches Redis through ``proxy``."""
    return f"redis://{proxy.listen_host}:{proxy.listen_port}/{db}"


@pytest.fixture
def redis_proxy(
    request: pytest.FixtureRequest, toxiproxy: Toxiproxy, redis_server: RedisServer
) -> Iterator[Proxy]:
    """A proxy of the test's own in front of the session redis-server.

    It listens on a loopback port that the server picks free (``127.0.0.1:0``).
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:100]
    proxy = toxiproxy.create_proxy(name, f"{LOOPBACK}:0", f"{LOOPBACK}:{redis_server.port}")
    yield proxy
    toxiproxy.reset()
    proxy.delete()


@pytest.fixture
def redis_proxy_url(redis_proxy: Proxy) -> str:
    """``redis://127.0.0.1:<proxy port>/0``: Redis, through the test's proxy."""
    return proxy_url(redis_proxy)

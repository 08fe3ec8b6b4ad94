"""pytest fixtures for a service's own tests: prove its fail-open paths against real faults.

Installed with the package as a pytest plugin (the ``pytest11`` entry point
``resilient_cache``), so the fixtures are there in any test suite of a project that depends
on resilient-cache; nothing starts until a test asks for a fixture.

* ``redis_server``: a private ``redis-server`` for the session, on a free loopback port
  (``redis_server.url``), emptied before each test that asks for it.
* ``toxiproxy``: a private ``toxiproxy-server`` for the session (its API client).
* ``redis_proxy``: a Toxiproxy proxy of the test's own in front of ``redis_server``; break
  the connection with its faults (``with redis_proxy.latency(300): ...``); every fault is
  undone after the test. ``redis_proxy_url`` is the ``redis://`` URL through it.
* ``manual_clock``: a :class:`~resilient_cache.testing.ManualClock` (move time by hand).

The servers come from ``PATH`` or the ``RESILIENT_CACHE_REDIS_SERVER`` and
``RESILIENT_CACHE_TOXIPROXY_SERVER`` variables; without one, the tests that need it are
skipped, or fail when ``CI=true`` (a missing server in CI is an error, not a pass).
See docs/resilience.md, "Testing your own service".
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from resilient_cache.testing import LOOPBACK, ManualClock, RedisServer, find_server
from resilient_cache.testing.toxiproxy import Proxy, Toxiproxy, ToxiproxyServer

__all__ = [
    "manual_clock",
    "redis_proxy",
    "redis_proxy_url",
    "redis_server",
    "server_binary",
    "toxiproxy",
]


def server_binary(name: str, env_var: str) -> str:
    """The path of a server executable (``env_var``, else ``PATH``); skip the test without
    one, or fail it when ``CI=true``."""
    path = find_server(name, env_var)
    if path is None:
        message = f"{name} not found: install it or set {env_var}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def _resilient_cache_redis() -> Iterator[RedisServer]:
    with RedisServer(server_binary("redis-server", "RESILIENT_CACHE_REDIS_SERVER")) as server:
        yield server


@pytest.fixture
def redis_server(_resilient_cache_redis: RedisServer) -> RedisServer:
    """A private redis-server (one for the session), empty at the start of the test."""
    _resilient_cache_redis.command("FLUSHALL")
    return _resilient_cache_redis


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[Toxiproxy]:
    """The API client of a private toxiproxy-server (one for the session)."""
    binary = server_binary("toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER")
    with ToxiproxyServer(binary) as server:
        yield server.client


@pytest.fixture
def redis_proxy(
    request: pytest.FixtureRequest, toxiproxy: Toxiproxy, redis_server: RedisServer
) -> Iterator[Proxy]:
    """A proxy of the test's own in front of ``redis_server``; its faults end with the test."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:100]
    proxy = toxiproxy.create_proxy(name, f"{LOOPBACK}:0", f"{LOOPBACK}:{redis_server.port}")
    yield proxy
    for toxic in proxy.toxics():
        proxy.remove_toxic(toxic.name)
    proxy.delete()


@pytest.fixture
def redis_proxy_url(redis_proxy: Proxy) -> str:
    """``redis://127.0.0.1:<port>/0``: ``redis_server``, through the test's proxy."""
    return f"redis://{redis_proxy.listen_host}:{redis_proxy.listen_port}/0"


@pytest.fixture
def manual_clock() -> ManualClock:
    """A monotonic clock that moves only when the test says (``manual_clock.advance(5)``)."""
    return ManualClock()

"""redis-py's handshake, as each adapter builds its connections: no ``CLIENT SETINFO`` (a
least-privilege ACL refuses it, an ``ACL LOG`` entry per connection) and no ``CLIENT
MAINT_NOTIFICATIONS``. Built, never connected: no server needed (tests/test_server_errors.py
checks what reaches a real one)."""

from __future__ import annotations

from typing import Any

import pytest

from resilient_cache import RedisAdapter, RedisClusterAdapter
from resilient_cache.adapters._handshake import announces


def quiet(connection: Any) -> None:
    assert not announces(connection), connection
    config = getattr(connection, "maint_notifications_config", None)
    assert config is None or config.enabled is False, config


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/nothing.sock"]
)
async def test_the_adapter_s_connections_do_not_announce_themselves(url: str) -> None:
    adapter = RedisAdapter.from_url(url)
    quiet(adapter._connection_class(**adapter._connection_kwargs))
    await adapter.aclose()


async def test_the_sentinel_adapter_s_connections_do_not_either() -> None:
    adapter = RedisAdapter.from_sentinel(["127.0.0.1:1"], "svc")
    quiet(adapter._connection_class(**adapter._connection_kwargs))  # to the master
    master = adapter._connection_kwargs["sentinel_master"]
    for client in master._clients:  # to the sentinels
        pool = client.connection_pool
        quiet(pool.connection_class(**pool.connection_kwargs))
    await adapter.aclose()


async def test_the_cluster_adapter_s_connections_do_not_either() -> None:
    adapter = RedisClusterAdapter.from_nodes(["127.0.0.1:1"])
    client: Any = adapter._client
    for node in client.nodes_manager.startup_nodes.values():
        quiet(node.connection_class(**node.connection_kwargs))
    await adapter.aclose()

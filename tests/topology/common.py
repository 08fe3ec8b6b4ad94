"""What the cluster and sentinel deployments share: raw queries, waiting, ports, logs."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilient_cache.testing import LOOPBACK

T = TypeVar("T")

Address = tuple[str, int]
"""``(host, port)``, what redis-py's ``startup_nodes``/``Sentinel([...])`` take."""

CLUSTER_SLOTS: Final = 16384
MAX_PORT: Final = 65535
CLUSTER_BUS_OFFSET: Final = 10000  # the bus port when ``cluster-port`` is not set
POLL: Final = 0.05
FAST_SYNC: Final = ("--repl-diskless-sync-delay", "0")
"""A replica's full sync starts at once (Redis 7 waits 5 s for more replicas by default)."""


class TopologyError(RuntimeError):
    """A deployment did not reach the expected state in time (the message shows why)."""


# --- raw access to one server -------------------------------------------------------------


def query(port: int, *args: str, timeout: float = 1.0) -> Any:
    """Send one command to ``127.0.0.1:port`` and return the raw reply (strings decoded).

    One connection, no retry, no redis-py response callback (``execute_command("CLUSTER",
    "INFO")`` is looked up as ``CLUSTER``, which has none), so the reply is what the server
    said. Raises redis-py's errors (``ConnectionError`` when nothing listens).
    """
    client = redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
    )
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def try_query(port: int, *args: str, timeout: float = 1.0) -> Any | None:
    """:func:`query`, or ``None`` if the server does not answer or answers an error."""
    try:
        return query(port, *args, timeout=timeout)
    except (redis.RedisError, OSError):
        return None


def pairs(reply: Any) -> dict[str, str]:
    """A ``SENTINEL MASTER``-like reply as a dict: a map (RESP3, redis-py 8's default) or a
    flat ``[k1, v1, k2, v2...]`` array (RESP2)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply or [])
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    diagnostics: Callable[[], str],
) -> T:
    """Poll ``condition`` until it returns something other than ``None``/``False``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TopologyError(f"{what}: not reached in {timeout:.0f}s\n{diagnostics()}")
        time.sleep(POLL)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def tail(path: os.PathLike[str] | str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as file:
            return "".join(file.readlines()[-lines:])
    except OSError:
        return ""

"""A call whose caller cancelled it raises ``CancelledError``, even when redis-py swallows the
cancellation: with a ``socket_timeout``, redis-py's connection returned replies (or its own
TimeoutError) to cancelled callers, about 30 times a second in this storm, healthy or frozen
server alike. Found by the fault campaign (tests/torture); the cluster's twin of this test is
in test_cluster.py."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Iterator

import pytest

from resilient_cache import CacheProtocol, RedisAdapter
from tests.servers import RedisServer


@pytest.fixture
def own_server(redis_binary: str) -> Iterator[RedisServer]:
    with RedisServer(redis_binary) as server:
        yield server


async def cancellation_storm(adapter: CacheProtocol, seconds: float, delay: float) -> int:
    """Eight callers at a time cancel their own ``get`` after up to ``delay`` seconds; how
    many cancelled calls returned a result instead of raising ``CancelledError``."""
    rng = random.Random(3)
    swallowed = 0

    async def one() -> None:
        nonlocal swallowed
        task = asyncio.ensure_future(adapter.get(f"k{rng.randrange(20)}"))
        done, _ = await asyncio.wait({task}, timeout=rng.uniform(0, delay))
        asked = not done and task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        swallowed += asked

    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await asyncio.gather(*(one() for _ in range(8)))
    return swallowed


@pytest.mark.parametrize("frozen", [False, True], ids=["healthy", "frozen"])
async def test_a_cancelled_call_never_returns_a_result(
    own_server: RedisServer, frozen: bool
) -> None:
    adapter = RedisAdapter.from_url(own_server.url, socket_timeout=0.05)
    assert own_server.proc is not None
    try:
        if frozen:
            os.kill(own_server.proc.pid, signal.SIGSTOP)
        try:
            assert await cancellation_storm(adapter, 2.0, 0.08) == 0
        finally:
            if frozen:
                os.kill(own_server.proc.pid, signal.SIGCONT)
    finally:
        await adapter.aclose()

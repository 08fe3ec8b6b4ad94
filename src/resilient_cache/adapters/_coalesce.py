"""Read coalescing: concurrent GETs of one event-loop iteration share one MGET round trip.

Under concurrency a Python Redis client is bound by its per-command CPU cost, not by Redis:
fifty coroutines each sending GET pay fifty round trips of client work. Gathered into one
MGET they pay one, plus a few microseconds a key. Each caller still gets its own answer
(replies are matched by position, never shared), its own deadline (it waits on a future of
its own, which its cancellation leaves behind), and on a failed round trip its own Failure.

The batch is sent from a task with a clean context, so that no caller's deadline is taken
for the batch's: the adapter's ``operation_timeout`` bounds the round trip itself.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from resilient_cache.domain.errors import CacheError, ErrorCode

Fetch = Callable[[Sequence[bytes]], Awaitable[Sequence[Any] | CacheError]]
"""Reads the given keys in one round trip: their replies in order, or why not."""


class ReadCoalescer:
    """Batches the GETs issued within one event-loop iteration into a single fetch."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._keys: list[bytes] = []
        self._waiters: list[asyncio.Future[Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: bytes) -> Any:
        """The reply to ``GET key`` (bytes or ``None``), or a :class:`CacheError`."""
        loop = asyncio.get_running_loop()
        if not self._waiters:
            loop.call_soon(self._flush, context=contextvars.Context())
        waiter: asyncio.Future[Any] = loop.create_future()
        self._keys.append(key)
        self._waiters.append(waiter)
        return await waiter

    def _flush(self) -> None:
        keys, waiters = self._keys, self._waiters
        self._keys, self._waiters = [], []
        task = asyncio.get_running_loop().create_task(self._send(keys, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, keys: list[bytes], waiters: list[asyncio.Future[Any]]) -> None:
        if all(waiter.done() for waiter in waiters):  # every caller gave up already
            return
        try:
            replies = await self._fetch(keys)
        except BaseException:  # closed while in flight: tell the callers, do not cancel them
            closed = CacheError.of(ErrorCode.CONNECTION, "the cache was closed", operation="get")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(closed)
            raise
        if isinstance(replies, CacheError):
            # One round trip failed, once: only one caller's error counts against a circuit
            # breaker; the others carry the same news without counting it again.
            echo = replace(replies, trips_breaker=False)
            waiting = [waiter for waiter in waiters if not waiter.done()]
            for position, waiter in enumerate(waiting):
                waiter.set_result(replies if position == 0 else echo)
            return
        for waiter, reply in zip(waiters, replies, strict=True):
            if not waiter.done():
                waiter.set_result(reply)

    async def aclose(self) -> None:
        """Cancel batches still in flight; their callers get a CONNECTION failure."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

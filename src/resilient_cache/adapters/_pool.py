"""A lean, fair, bounded pool of connections for one event loop.

redis-py's pools take an ``asyncio.Lock`` (the blocking pool also an ``asyncio.Condition``)
and await several observability hooks on every checkout and return; at 50 concurrent
coroutines that bookkeeping costs more CPU than the command itself. In one event loop none
of it is needed: taking and returning a connection are plain list operations that cannot
interleave, so only a caller that finds every connection busy ever awaits anything.

* **Fast path:** :meth:`Pool.take` is synchronous: the most recently returned idle
  connection (its socket is warm), or a new one while fewer than ``max_size`` exist.
* **Fair queue:** when every connection is busy, :meth:`Pool.wait` queues the caller
  (FIFO); :meth:`Pool.give_back` hands a returned connection straight to the first
  caller still waiting, so a newcomer cannot overtake the queue.
* **Cancellation-safe:** a waiter cut by its deadline leaves the queue; one that is cut
  just after a connection was handed to it passes the connection on.

The pool holds connection objects and never looks inside them: connecting, checking and
closing them is the adapter's business.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from resilient_cache.domain.deadline import QUEUED, connection_state

C = TypeVar("C")


class PoolClosedError(RuntimeError):
    """The pool was closed while the caller waited for a connection."""


class Pool(Generic[C]):
    """Up to ``max_size`` connections made by ``factory``, lent out one caller at a time."""

    def __init__(self, factory: Callable[[], C], max_size: int) -> None:
        self._factory = factory
        self.max_size = max_size
        self._idle: list[C] = []
        self._all: list[C] = []
        self._waiters: deque[asyncio.Future[C]] = deque()

    @property
    def idle(self) -> int:
        """Connections waiting in the pool."""
        return len(self._idle)

    @property
    def in_use(self) -> int:
        """Connections lent out."""
        return len(self._all) - len(self._idle)

    def take(self) -> C | None:
        """A connection at once, or ``None`` when every one is busy (then :meth:`wait`)."""
        if self._idle:
            return self._idle.pop()
        if len(self._all) < self.max_size:
            conn = self._factory()
            self._all.append(conn)
            return conn
        return None

    async def wait(self) -> C:
        """Queue for the next connection given back; the caller's deadline bounds it.

        Sets :data:`connection_state` to ``QUEUED`` while queued (left so if the caller
        is cut short: it never reached Redis).

        Raises:
            PoolClosedError: the pool was closed meanwhile.
        """
        waiter: asyncio.Future[C] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        connection_state.set(QUEUED)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give_back(waiter.result())  # handed over as we were cut: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        connection_state.set(None)
        return conn

    def give_back(self, conn: C) -> None:
        """Return a lent connection: to the first caller still waiting, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def close(self) -> tuple[C, ...]:
        """Fail every waiter; return every connection, for the owner to disconnect.

        The pool stays usable, as redis-py's does after ``aclose()``: its connections
        are objects that reconnect when next used.
        """
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosedError("the connection pool was closed"))
        return tuple(self._all)

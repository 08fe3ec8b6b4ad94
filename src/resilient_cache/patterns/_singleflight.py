"""In-process single-flight: one run of some work per key at a time, its outcome shared.

The first caller for a key starts a *flight*: the work runs in a task of its own, and every
caller, the first included, waits for its outcome through ``asyncio.shield``. So:

* concurrent callers for one key run the work once and all get its value, or its exception;
* a caller that is cancelled stops waiting, and only that: the work goes on for the others,
  and when every caller has gone it still runs to the end (its value is cached: the next
  caller finds it);
* a flight can have a follow-up (``then``): it runs after the value is published, while the
  flight is still registered, so a caller who arrives meanwhile joins the finished flight
  instead of starting the work again (the follow-up is the cache write, and a new run
  before the write lands would be the stampede we are preventing);
* the flight leaves the map when its task ends, however it ends (value, exception,
  cancellation): nothing leaks;
* :meth:`SingleFlight.forget` (or ``forget_if``) unregisters a flight early and marks it
  ``forgotten``, so its follow-up can stand down (an invalidation happened while it ran).

Flights belong to one event loop. A flight of another loop (a decorator defined at import
time, used under several ``asyncio.run``) is ignored and replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Flight", "SingleFlight"]

T = TypeVar("T")


class Flight(Generic[T]):
    """One run of the work for one key: its outcome, and whether it was forgotten."""

    __slots__ = ("forgotten", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[T] = loop.create_future()
        self.forgotten = False

    async def wait(self) -> T:
        """The work's value (or its exception); cancelling the waiter never cancels the work."""
        return await asyncio.shield(self.future)


class SingleFlight(Generic[T]):
    """Flights by key. See the module docstring."""

    __slots__ = ("_flights", "_tasks")

    def __init__(self) -> None:
        self._flights: dict[str, Flight[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> Flight[T] | None:
        """The flight in progress for ``key`` on the running loop, if any."""
        flight = self._flights.get(key)
        if flight is None or flight.loop is not asyncio.get_running_loop():
            return None
        return flight

    def join(
        self,
        key: str,
        work: Callable[[Flight[T]], Awaitable[T]],
        then: Callable[[T, Flight[T]], Awaitable[None]] | None = None,
    ) -> Flight[T]:
        """The flight for ``key``: the one in progress, or a new one running ``work``.

        ``work`` is only called when a new flight starts; ``then`` runs after it succeeds.
        """
        flight = self.get(key)
        if flight is None:
            loop = asyncio.get_running_loop()
            flight = self._flights[key] = Flight(loop)
            task = loop.create_task(self._fly(key, flight, work, then))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return flight

    def forget(self, key: str) -> None:
        """Unregister the flight for ``key`` (if any) and mark it forgotten.

        Its callers still get its outcome; the next caller starts a new flight.
        """
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.forgotten = True

    def forget_if(self, matches: Callable[[str], bool]) -> None:
        """:meth:`forget` every flight whose key ``matches``."""
        for key in [key for key in self._flights if matches(key)]:
            self.forget(key)

    async def drain(self) -> bool:
        """Wait until every flight (follow-ups included) of the running loop has ended.

        Returns whether there was anything to wait for.
        """
        loop = asyncio.get_running_loop()
        waited = False
        while pending := [task for task in self._tasks if task.get_loop() is loop]:
            await asyncio.wait(pending)
            waited = True
        return waited

    async def _fly(
        self,
        key: str,
        flight: Flight[T],
        work: Callable[[Flight[T]], Awaitable[T]],
        then: Callable[[T, Flight[T]], Awaitable[None]] | None,
    ) -> None:
        future = flight.future
        try:
            try:
                value = await work(flight)
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" noise if nobody waits
                return
            future.set_result(value)
            if then is not None:
                await then(value, flight)
        finally:
            if not future.done():  # the task itself was cancelled (loop shutting down)
                future.cancel()
            if self._flights.get(key) is flight:
                del self._flights[key]

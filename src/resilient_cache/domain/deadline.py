"""The current call's deadline, shared by the layers and the adapter through a context variable.

RetryLayer sets it for the duration of a call. Inner parts read it to tell a cancellation
by the deadline (a timeout) from the caller's own, and to skip timers of their own that the
deadline makes redundant.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextvars import ContextVar
from typing import Final

call_deadline: ContextVar[float | None] = ContextVar("resilient_cache_call_deadline", default=None)
"""The event-loop time at which the current call's deadline expires, if one is set."""


def deadline_expired() -> bool:
    """Tell whether the current call's deadline has passed."""
    deadline_at = call_deadline.get()
    return deadline_at is not None and asyncio.get_running_loop().time() >= deadline_at


QUEUED: Final = float("-inf")
"""The :data:`connection_state` of a call queued for a pooled connection (every one busy)."""

connection_state: ContextVar[float | None] = ContextVar(
    "resilient_cache_connection_state", default=None
)
"""Where the current call stands with its connection, set by the adapter:

* ``None``: it has none yet and is not queued (connecting, or not started);
* :data:`QUEUED`: it waits for a free pooled connection;
* a loop time: when it got its connection.

A call cut by its deadline while queued, or moments after getting a connection it queued
for, says nothing about Redis's health (the client was saturated, not the server), so the
circuit breaker does not count it.
"""


# -- a cheap per-call deadline ----------------------------------------------------------

_PENDING: Final = 0
_EXPIRED: Final = 1
_DONE: Final = 2


class Expiry:
    """One call's deadline, from :meth:`DeadlineTimer.start`. Use it exactly like this::

    expiry = timer.start(loop, deadline_at)
    try:
        ...  # the call
    except asyncio.CancelledError:
        if not expiry.cut():
            raise  # somebody else's cancellation
        ...  # the deadline passed: a TIMEOUT
    finally:
        expiry.finish()
    """

    __slots__ = ("_at", "_cancelling", "_state", "_task")

    def __init__(self, task: asyncio.Task[object], at: float) -> None:
        self._task: asyncio.Task[object] | None = task
        self._at = at
        self._cancelling = task.cancelling()
        self._state = _PENDING

    def cut(self) -> bool:
        """After a ``CancelledError``: whether this deadline caused it (then absorbed).

        The same rule as :func:`asyncio.timeout`: the deadline's own cancellation is
        taken back; a cancellation of the task by anyone else still propagates.
        """
        if self._state != _EXPIRED or self._task is None:
            return False
        self._state = _DONE
        return self._task.uncancel() <= self._cancelling

    def finish(self) -> None:
        """The call is over: stop watching it."""
        if self._state == _EXPIRED and self._task is not None:
            self._task.uncancel()  # expired as the call finished: no cancellation is owed
        self._state = _DONE
        self._task = None

    def _expire(self) -> None:
        if self._state == _PENDING and self._task is not None:
            self._state = _EXPIRED
            self._task.cancel()


class DeadlineTimer:
    """Cancels calls that outlive their deadline, with one event-loop timer per owner.

    ``asyncio.timeout`` schedules and cancels a timer of its own for every call (a heap
    push, a handle, two coroutine calls: about 3.5 us, a tenth of a whole Redis round trip
    in CPU). An owner whose calls all get the same duration registers them in order of
    expiry, so a FIFO queue and ONE timer, set for the oldest deadline still pending,
    do the same work: starting and finishing a call cost two attribute writes and an
    append. A call's deadline is honoured exactly, not rounded to a period.

    One timer object serves one event loop; used from another loop it starts afresh.
    Durations must not decrease from one call to the next for an exact bound: give each
    duration its own timer.
    """

    __slots__ = ("_handle", "_loop", "_queue")

    def __init__(self) -> None:
        self._queue: deque[Expiry] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop, at: float) -> Expiry:
        """Watch the current task until ``at`` (an event-loop time)."""
        task: asyncio.Task[object] | None = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs to run inside an asyncio task")
        if loop is not self._loop:
            self._loop, self._queue, self._handle = loop, deque(), None
        expiry = Expiry(task, at)
        queue = self._queue
        while queue and queue[0]._state == _DONE:  # calls mostly end in order
            queue.popleft()
        queue.append(expiry)
        if self._handle is None:
            self._handle = loop.call_at(at, self._sweep)
        return expiry

    def _sweep(self) -> None:
        self._handle = None
        loop, queue = self._loop, self._queue
        if loop is None:
            return
        now = loop.time()
        while queue and (queue[0]._state == _DONE or queue[0]._at <= now):
            queue.popleft()._expire()
        if queue:
            self._handle = loop.call_at(queue[0]._at, self._sweep)

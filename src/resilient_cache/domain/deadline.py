"""The current call's deadline, shared by the layers and the adapter through a context variable.

RetryLayer sets it for the duration of a call. Inner parts read it to tell a cancellation
by the deadline (a timeout) from the caller's own, and to skip timers of their own that the
deadline makes redundant.
"""

from __future__ import annotations

import asyncio
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

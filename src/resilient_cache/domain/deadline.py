"""The current call's deadline, shared by the layers and the adapter through a context variable.

RetryLayer sets it for the duration of a call. Inner parts read it to tell a cancellation
by the deadline (a timeout) from the caller's own, and to skip timers of their own that the
deadline makes redundant.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

call_deadline: ContextVar[float | None] = ContextVar("resilient_cache_call_deadline", default=None)
"""The event-loop time at which the current call's deadline expires, if one is set."""


def deadline_expired() -> bool:
    """Tell whether the current call's deadline has passed."""
    deadline_at = call_deadline.get()
    return deadline_at is not None and asyncio.get_running_loop().time() >= deadline_at


waiting_for_connection: ContextVar[bool] = ContextVar(
    "resilient_cache_waiting_for_connection", default=False
)
"""Set by the adapter while the current call waits for a free pooled connection.

A call cut by its deadline during that wait says nothing about Redis's health (the client
is saturated, not the server), so the circuit breaker does not count it.
"""


connection_since: ContextVar[float | None] = ContextVar(
    "resilient_cache_connection_since", default=None
)
"""Event-loop time at which the current call got its connection (None: not yet).

A call that queued for most of its deadline, got a connection and was cut moments later
gave Redis no fair chance: the circuit breaker does not count such a cut either.
"""

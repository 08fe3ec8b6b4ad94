"""Helpers for testing code that uses resilient-cache, without sleeping or mocking.

* :class:`ManualClock`: a monotonic clock you move by hand; pass it as
  ``MemoryCache(clock=...)`` to test expiry in microseconds.
* :class:`~resilient_cache.MemoryCache`: a real in-process cache with Redis semantics,
  the fake to use in unit tests of code that takes a ``CacheProtocol``.
"""

from __future__ import annotations

from resilient_cache.adapters.memory import MemoryCache

__all__ = ["ManualClock", "MemoryCache"]


class ManualClock:
    """A monotonic clock that only moves when told to.

    >>> clock = ManualClock()
    >>> clock.advance(1.5)
    >>> clock()
    1001.5
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (a monotonic clock never goes back)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += seconds

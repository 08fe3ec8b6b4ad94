"""The stale copy: the last known answer per key, bounded, with the time it was known good.

An LRU of at most ``max_entries`` keys. Each entry holds the serialized payload (``None``
for a cached "not found") and when it was last seen valid: read from the cache or computed.
:meth:`StaleCopy.recall` returns it only while it is at most ``max_staleness`` seconds old,
and drops it once older. Payloads are kept serialized: a caller that mutates the value it
was given cannot change what the copy will serve later.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

__all__ = ["Known", "StaleCopy"]


class Known(NamedTuple):
    """A remembered answer: ``payload`` (``None``: "not found") and when it was known good."""

    payload: str | None
    seen_at: float


class StaleCopy:
    """Last known answers by key. Not thread-safe: one event loop's callers at a time."""

    __slots__ = ("_entries", "max_entries", "max_staleness")

    def __init__(self, max_entries: int, max_staleness: float) -> None:
        self.max_entries = max_entries
        self.max_staleness = max_staleness
        self._entries: OrderedDict[str, Known] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: str, payload: str | None, now: float) -> None:
        """Record ``payload`` as the answer for ``key``, good as of ``now``."""
        self._entries[key] = Known(payload, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def recall(self, key: str, now: float) -> Known | None:
        """The answer for ``key`` if it was known good at most ``max_staleness`` ago."""
        known = self._entries.get(key)
        if known is None:
            return None
        if now - known.seen_at > self.max_staleness:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return known

    def forget(self, key: str) -> None:
        """Drop the answer for ``key``: it must never be served again."""
        self._entries.pop(key, None)

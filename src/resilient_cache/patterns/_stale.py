"""The stale copy: the last known answer per key, bounded, with the time it was known good.

An LRU bounded twice: at most ``max_entries`` keys, and at most ``max_bytes`` of memory
(keys and payloads as ``sys.getsizeof`` counts them: what the process actually holds). A
payload larger than ``max_value_bytes`` is not kept at all (one huge value would evict
everything else), and the key's older answer is dropped with it: the copy never serves an
answer older than the last one seen.

Each entry holds the serialized payload (``None`` for a cached "not found") and when it was
last seen valid: read from the cache or computed. :meth:`StaleCopy.recall` returns it only
while it is at most ``max_staleness`` seconds old, and drops it once older. Payloads are
kept serialized: a caller that mutates the value it was given cannot change what the copy
will serve later.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["Known", "StaleCopy"]


class Known(NamedTuple):
    """A remembered answer: ``payload`` (``None``: "not found") and when it was known good."""

    payload: str | None
    seen_at: float
    size: int


def _size(key: str, payload: str | None) -> int:
    return sys.getsizeof(key) + (0 if payload is None else sys.getsizeof(payload))


class StaleCopy:
    """Last known answers by key. Not thread-safe: one event loop's callers at a time."""

    __slots__ = (
        "_bytes",
        "_entries",
        "max_bytes",
        "max_entries",
        "max_staleness",
        "max_value_bytes",
    )

    def __init__(
        self,
        max_entries: int,
        max_staleness: float,
        *,
        max_bytes: int,
        max_value_bytes: int,
    ) -> None:
        self.max_entries = max_entries
        self.max_staleness = max_staleness
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self._entries: OrderedDict[str, Known] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes held (keys and payloads, as ``sys.getsizeof`` counts them)."""
        return self._bytes

    def remember(self, key: str, payload: str | None, now: float) -> None:
        """Record ``payload`` as the answer for ``key``, good as of ``now``.

        A payload over ``max_value_bytes`` is not kept, and the older answer is forgotten.
        """
        self.forget(key)
        if payload is not None and sys.getsizeof(payload) > self.max_value_bytes:
            return
        known = Known(payload, now, _size(key, payload))
        self._entries[key] = known
        self._bytes += known.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def recall(self, key: str, now: float) -> Known | None:
        """The answer for ``key`` if it was known good at most ``max_staleness`` ago."""
        known = self._entries.get(key)
        if known is None:
            return None
        if now - known.seen_at > self.max_staleness:
            self.forget(key)
            return None
        self._entries.move_to_end(key)
        return known

    def forget(self, key: str) -> None:
        """Drop the answer for ``key``: it must never be served again."""
        known = self._entries.pop(key, None)
        if known is not None:
            self._bytes -= known.size

    def forget_if(self, matches: Callable[[str], bool]) -> None:
        """Drop the answer of every key for which ``matches(key)`` is true."""
        for key in [key for key in self._entries if matches(key)]:
            self.forget(key)

    def clear(self) -> None:
        """Drop every answer."""
        self._entries.clear()
        self._bytes = 0

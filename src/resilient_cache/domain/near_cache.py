"""The near cache's port: a channel that says which keys changed elsewhere, and a fake.

(Not to be confused with ``patterns/invalidation.py``, where the application deletes
entries after writing to its source of truth.)

Pure Python: the Redis implementation is
:class:`~resilient_cache.adapters.tracking.RedisTrackingSource`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["InvalidationListener", "InvalidationSource", "ManualInvalidations"]

InvalidationListener = Callable[[Sequence[str] | None], None]
"""Told the keys (namespace removed) that changed, or ``None``: forget everything."""


@runtime_checkable
class InvalidationSource(Protocol):
    """What the near cache needs from an invalidation channel."""

    @property
    def healthy(self) -> bool:
        """Whether invalidations are being received right now."""
        ...

    @property
    def generation(self) -> int:
        """Goes up each time the channel is (re)established."""
        ...

    def add_listener(self, listener: Callable[[Sequence[str] | None], None]) -> None:
        """Call ``listener(keys)`` on each invalidation; ``None``: forget everything."""
        ...

    def start(self) -> None:
        """Start receiving (idempotent; called on the first read)."""
        ...

    async def aclose(self) -> None:
        """Stop receiving."""
        ...


class ManualInvalidations:
    """An :class:`InvalidationSource` driven by hand: for tests and examples.

    >>> source = ManualInvalidations()
    >>> source.invalidate("user:1")  # as if another instance wrote it
    >>> source.lose()  # the channel is lost: the near cache flushes and stops serving
    >>> source.restore()  # a new generation: serving again, from an empty near cache
    """

    def __init__(self, *, healthy: bool = True) -> None:
        self._listeners: list[Callable[[Sequence[str] | None], None]] = []
        self._healthy = healthy
        self.generation = 1
        self.started = False
        self.closed = False

    @property
    def healthy(self) -> bool:
        """Whether the (pretend) channel is up."""
        return self._healthy

    def add_listener(self, listener: Callable[[Sequence[str] | None], None]) -> None:
        """See :meth:`InvalidationSource.add_listener`."""
        self._listeners.append(listener)

    def start(self) -> None:
        """See :meth:`InvalidationSource.start`."""
        self.started = True

    async def aclose(self) -> None:
        """See :meth:`InvalidationSource.aclose`."""
        self.closed = True

    def invalidate(self, *keys: str) -> None:
        """Announce that ``keys`` changed (no key: everything, like ``FLUSHALL``)."""
        for listener in self._listeners:
            listener(list(keys) if keys else None)

    def lose(self) -> None:
        """The channel is lost."""
        self._healthy = False
        self.invalidate()

    def restore(self) -> None:
        """The channel is re-established, in a new generation."""
        self.generation += 1
        self._healthy = True

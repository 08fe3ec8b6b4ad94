"""One invalidation the outbox owes (``Invalidation``), and what replays decide with.

An invalidation is a ``delete`` of a key or a ``delete_pattern`` of a Redis glob. It knows
how to apply itself to a cache, whether the cache would refuse it (checked without I/O
against the cache's ``Limits``), and how to tell the ``@cached`` functions of the cache
what it covers (``_registry.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from resilient_cache.domain.errors import CacheError
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Result
from resilient_cache.domain.validation import Limits, check_pattern, encode_key
from resilient_cache.patterns import _registry

__all__ = ["MAX_ATTEMPTS", "Invalidation", "OverflowAction"]

OverflowAction: TypeAlias = Callable[[CacheProtocol], Awaitable[Result[object, CacheError]]]
"""A custom wholesale invalidation, e.g. ``lambda cache: cache.delete_pattern("user:*")``."""

MAX_ATTEMPTS: Final = 5
"""Replays an entry may fail with its own failure (``auth``: NOPERM on that key,
``backend``...) before it is dropped. Replays run only when the cache answers (a ping, a
successful invalidation, the breaker closing), so a cache that is down costs no attempt."""


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One invalidation: ``delete`` of a key or ``delete_pattern`` of a glob."""

    operation: Literal["delete", "delete_pattern"]
    target: str

    def apply(self, cache: CacheProtocol) -> Awaitable[Result[object, CacheError]]:
        if self.operation == "delete":
            return cache.delete(self.target)
        return cache.delete_pattern(self.target)

    def problem(self, limits: Limits) -> CacheError | None:
        """Why the cache would refuse it (``VALIDATION``), checked without I/O."""
        if self.operation == "delete":
            checked = encode_key(self.operation, self.target, limits)
        else:
            checked = check_pattern(self.operation, self.target)
        return checked if isinstance(checked, CacheError) else None

    def forget(self, cache: CacheProtocol) -> None:
        """Tell the ``@cached`` functions of ``cache``'s stack what this invalidates."""
        if self.operation == "delete":
            _registry.forget_key(cache, self.target)
        else:
            _registry.forget_pattern(cache, self.target)

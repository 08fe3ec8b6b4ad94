"""The port: :class:`CacheProtocol`, the one interface every adapter and layer satisfies.

The contract (see ``docs/contract.md`` for the full table):

* no method raises for a backend fault, a bad argument or bad data: it returns a
  ``Failure`` whose :class:`~resilient_cache.ErrorCode` says what went wrong;
  ``asyncio.CancelledError`` always propagates;
* keys and values are ``str``; a namespace, when configured, is invisible to callers;
* ``ttl``/``seconds`` are whole, positive numbers of seconds (``None`` = no expiry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeAlias, TypedDict, runtime_checkable

from resilient_cache.domain.errors import CacheError
from resilient_cache.domain.result import Result

JsonValue: TypeAlias = dict[str, "JsonValue"] | list["JsonValue"] | str | int | float | bool | None
"""A decoded JSON document, as ``get_json`` returns it."""

JsonInput: TypeAlias = (
    Mapping[str, "JsonInput"] | Sequence["JsonInput"] | str | int | float | bool | None
)
"""Anything ``set_json`` accepts: JSON values, with read-only containers allowed so that
a ``dict[str, int]`` or a ``tuple`` type-checks."""


class CacheEntry(TypedDict):
    """One stored entry, as :class:`~resilient_cache.MemoryCache` keeps it."""

    key: str
    value: str
    ttl: int | None
    created_at: float
    expires_at: float | None


@runtime_checkable
class CacheProtocol(Protocol):
    """What a service needs from a cache. Every method returns a ``Result``."""

    async def get(self, key: str) -> Result[str | None, CacheError]:
        """Return the value, or ``Success(None)`` when the key is missing."""
        ...

    async def get_json(self, key: str) -> Result[JsonValue, CacheError]:
        """Return the decoded JSON value, ``Success(None)`` when missing.

        A stored value that is not JSON is a ``SERIALIZATION`` failure and stays intact.
        (A stored JSON ``null`` also reads as ``Success(None)``.)
        """
        ...

    async def set(self, key: str, value: str, ttl: int | None = None) -> Result[None, CacheError]:
        """Store ``value``; ``ttl`` seconds until expiry, ``None`` for no expiry."""
        ...

    async def set_json(
        self, key: str, value: JsonInput, ttl: int | None = None
    ) -> Result[None, CacheError]:
        """Store any JSON value (NaN/Infinity and non-JSON types: ``SERIALIZATION``)."""
        ...

    async def delete(self, key: str) -> Result[bool, CacheError]:
        """Remove the key; ``Success(True)`` if it existed, ``Success(False)`` if not."""
        ...

    async def exists(self, key: str) -> Result[bool, CacheError]:
        """Tell whether the key exists."""
        ...

    async def expire(self, key: str, seconds: int) -> Result[bool, CacheError]:
        """Set a TTL on an existing key; ``Success(False)`` if the key is missing."""
        ...

    async def increment(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Add ``amount`` atomically (missing key counts as 0) and return the new value."""
        ...

    async def decrement(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Subtract ``amount`` atomically (missing key counts as 0); return the new value."""
        ...

    async def ttl(self, key: str) -> Result[int | None, CacheError]:
        """Seconds until expiry, rounded up; ``None`` if missing or without expiry."""
        ...

    async def flush(self) -> Result[None, CacheError]:
        """Remove this cache's keys: the namespace's only, or the whole database.

        Never FLUSHALL. Without a namespace this empties the configured database.
        """
        ...

    async def ping(self) -> Result[bool, CacheError]:
        """Health check: ``Success(True)`` when the backend answers."""
        ...

    async def delete_pattern(self, pattern: str) -> Result[int, CacheError]:
        """Delete the keys matching a Redis glob pattern; return how many were deleted."""
        ...

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """Return every requested key (``None`` for missing ones) in one round trip."""
        ...

    async def set_many(
        self, mapping: dict[str, str], ttl: int | None = None
    ) -> Result[None, CacheError]:
        """Store every pair, all or nothing, in one round trip, each with ``ttl``."""
        ...

"""Layer: the shape every layer shares. It wraps ONE inner cache and is a cache itself.

A layer implements one method, :meth:`Layer._around`, which receives the operation's name,
its key (``None`` for batch and whole-cache operations) and a thunk that performs the call
on the inner cache. The fifteen protocol methods below only route through it, so a layer
reads as its policy and nothing else.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from resilient_cache.domain.deadline import call_deadline, deadline_expired
from resilient_cache.domain.errors import CacheError
from resilient_cache.domain.protocol import CacheProtocol, JsonInput, JsonValue
from resilient_cache.domain.result import Result

T = TypeVar("T")
K = TypeVar("K")

__all__ = ["Call", "Layer", "call_deadline", "deadline_expired", "notify"]

_log = logging.getLogger("resilient_cache")


def notify(listeners: Iterable[Callable[..., object]], *args: object) -> None:
    """Call each listener; one that raises is logged and skipped, never breaks the call."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception:
            _log.exception("resilient_cache listener %r failed", listener)


Call = Callable[[], Awaitable[Result[T, CacheError]]]
"""A thunk performing one protocol call on the inner cache."""


class Layer(ABC):
    """Base of the resilience and telemetry layers. Subclasses implement :meth:`_around`."""

    name: str = "layer"
    """Short name shown in :attr:`layers` (e.g. ``"retry"``)."""

    def __init__(self, inner: CacheProtocol) -> None:
        self._inner = inner

    @property
    def inner(self) -> CacheProtocol:
        """The cache this layer wraps."""
        return self._inner

    @property
    def layers(self) -> tuple[str, ...]:
        """Names from the outermost layer to the backend: ``("retry", ..., "RedisAdapter")``."""
        inner_layers: tuple[str, ...] | None = getattr(self._inner, "layers", None)
        return (self.name, *(inner_layers or (type(self._inner).__name__,)))

    def find(self, kind: type[K]) -> K | None:
        """The first layer (or the backend) of type ``kind`` from here inwards, if any.

        >>> breaker = cache.find(CircuitBreakerLayer)  # doctest: +SKIP
        """
        node: object = self
        while True:
            if isinstance(node, kind):
                return node
            if not isinstance(node, Layer):
                return None
            node = node.inner

    @abstractmethod
    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        """Run ``call`` (the inner cache's method) under this layer's policy."""

    # -- lifecycle: forwarded to the backend ----------------------------------------

    async def aclose(self) -> None:
        """Close the stack (the backend's pool, if it has one)."""
        close: Callable[[], Awaitable[Any]] | None = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> Self:
        enter: Callable[[], Awaitable[Any]] | None = getattr(self._inner, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"

    # -- CacheProtocol: every method goes through _around ---------------------------

    async def get(self, key: str) -> Result[str | None, CacheError]:
        """See :meth:`CacheProtocol.get`."""
        return await self._around("get", key, lambda: self._inner.get(key))

    async def get_json(self, key: str) -> Result[JsonValue, CacheError]:
        """See :meth:`CacheProtocol.get_json`."""
        return await self._around("get_json", key, lambda: self._inner.get_json(key))

    async def set(self, key: str, value: str, ttl: int | None = None) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.set`."""
        return await self._around("set", key, lambda: self._inner.set(key, value, ttl))

    async def set_json(
        self, key: str, value: JsonInput, ttl: int | None = None
    ) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.set_json`."""
        return await self._around("set_json", key, lambda: self._inner.set_json(key, value, ttl))

    async def delete(self, key: str) -> Result[bool, CacheError]:
        """See :meth:`CacheProtocol.delete`."""
        return await self._around("delete", key, lambda: self._inner.delete(key))

    async def exists(self, key: str) -> Result[bool, CacheError]:
        """See :meth:`CacheProtocol.exists`."""
        return await self._around("exists", key, lambda: self._inner.exists(key))

    async def expire(self, key: str, seconds: int) -> Result[bool, CacheError]:
        """See :meth:`CacheProtocol.expire`."""
        return await self._around("expire", key, lambda: self._inner.expire(key, seconds))

    async def increment(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """See :meth:`CacheProtocol.increment`."""
        return await self._around("increment", key, lambda: self._inner.increment(key, amount))

    async def decrement(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """See :meth:`CacheProtocol.decrement`."""
        return await self._around("decrement", key, lambda: self._inner.decrement(key, amount))

    async def ttl(self, key: str) -> Result[int | None, CacheError]:
        """See :meth:`CacheProtocol.ttl`."""
        return await self._around("ttl", key, lambda: self._inner.ttl(key))

    async def flush(self) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.flush`."""
        return await self._around("flush", None, self._inner.flush)

    async def ping(self) -> Result[bool, CacheError]:
        """See :meth:`CacheProtocol.ping`."""
        return await self._around("ping", None, self._inner.ping)

    async def delete_pattern(self, pattern: str) -> Result[int, CacheError]:
        """See :meth:`CacheProtocol.delete_pattern`."""
        return await self._around(
            "delete_pattern", None, lambda: self._inner.delete_pattern(pattern)
        )

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """See :meth:`CacheProtocol.get_many`."""
        return await self._around("get_many", None, lambda: self._inner.get_many(keys))

    async def set_many(
        self, mapping: dict[str, str], ttl: int | None = None
    ) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.set_many`."""
        return await self._around("set_many", None, lambda: self._inner.set_many(mapping, ttl))

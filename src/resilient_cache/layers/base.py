"""Layer: the shape every layer shares. It wraps ONE inner cache and is a cache itself.

A layer implements one method, :meth:`Layer._around`, which receives the operation's name,
its key (``None`` for batch and whole-cache operations) and a thunk that performs the call
on the inner cache. The fifteen protocol methods below, and ``run_script`` (the script
capability, :mod:`resilient_cache.domain.scripts`), only route through it, so a layer
reads as its policy and nothing else. They are plain methods returning ``_around``'s
coroutine, awaited by the caller like any ``async def``: one coroutine frame per layer and
call instead of two (under concurrency every live frame costs cache misses).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from resilient_cache.domain.deadline import call_deadline, deadline_expired
from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol, JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result
from resilient_cache.domain.scripts import (
    OPERATION,
    CacheScript,
    ScriptArg,
    ScriptReply,
    ScriptRunner,
)
from resilient_cache.domain.validation import DEFAULT_LIMITS, Limits

T = TypeVar("T")
K = TypeVar("K")

__all__ = ["Call", "Layer", "backend_of", "call_deadline", "deadline_expired", "limits_of"]

_log = logging.getLogger("resilient_cache")


Call = Callable[[], Awaitable[Result[T, CacheError]]]
"""A thunk performing one protocol call on the inner cache."""

Pending = Coroutine[Any, Any, Result[T, CacheError]]
"""What a layer's protocol method returns: the coroutine to await for its ``Result``."""


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
    # (``def`` returning the coroutine of ``_around``, not ``async def``: see the module doc)

    def get(self, key: str) -> Pending[str | None]:
        """See :meth:`CacheProtocol.get`."""
        return self._around("get", key, lambda: self._inner.get(key))

    def get_json(self, key: str) -> Pending[JsonValue]:
        """See :meth:`CacheProtocol.get_json`."""
        return self._around("get_json", key, lambda: self._inner.get_json(key))

    def set(self, key: str, value: str, ttl: int | None = None) -> Pending[None]:
        """See :meth:`CacheProtocol.set`."""
        return self._around("set", key, lambda: self._inner.set(key, value, ttl))

    def set_json(self, key: str, value: JsonInput, ttl: int | None = None) -> Pending[None]:
        """See :meth:`CacheProtocol.set_json`."""
        return self._around("set_json", key, lambda: self._inner.set_json(key, value, ttl))

    def delete(self, key: str) -> Pending[bool]:
        """See :meth:`CacheProtocol.delete`."""
        return self._around("delete", key, lambda: self._inner.delete(key))

    def exists(self, key: str) -> Pending[bool]:
        """See :meth:`CacheProtocol.exists`."""
        return self._around("exists", key, lambda: self._inner.exists(key))

    def expire(self, key: str, seconds: int) -> Pending[bool]:
        """See :meth:`CacheProtocol.expire`."""
        return self._around("expire", key, lambda: self._inner.expire(key, seconds))

    def increment(self, key: str, amount: int = 1) -> Pending[int]:
        """See :meth:`CacheProtocol.increment`."""
        return self._around("increment", key, lambda: self._inner.increment(key, amount))

    def decrement(self, key: str, amount: int = 1) -> Pending[int]:
        """See :meth:`CacheProtocol.decrement`."""
        return self._around("decrement", key, lambda: self._inner.decrement(key, amount))

    def ttl(self, key: str) -> Pending[int | None]:
        """See :meth:`CacheProtocol.ttl`."""
        return self._around("ttl", key, lambda: self._inner.ttl(key))

    def flush(self) -> Pending[None]:
        """See :meth:`CacheProtocol.flush`."""
        return self._around("flush", None, self._inner.flush)

    def ping(self) -> Pending[bool]:
        """See :meth:`CacheProtocol.ping`."""
        return self._around("ping", None, self._inner.ping)

    def delete_pattern(self, pattern: str) -> Pending[int]:
        """See :meth:`CacheProtocol.delete_pattern`."""
        return self._around("delete_pattern", None, lambda: self._inner.delete_pattern(pattern))

    def get_many(self, keys: list[str]) -> Pending[dict[str, str | None]]:
        """See :meth:`CacheProtocol.get_many`."""
        return self._around("get_many", None, lambda: self._inner.get_many(keys))

    def set_many(self, mapping: dict[str, str], ttl: int | None = None) -> Pending[None]:
        """See :meth:`CacheProtocol.set_many`."""
        return self._around("set_many", None, lambda: self._inner.set_many(mapping, ttl))

    # -- the script capability (not part of CacheProtocol) ---------------------------

    def run_script(
        self, script: CacheScript, keys: Sequence[str], args: Sequence[ScriptArg] = ()
    ) -> Pending[ScriptReply]:
        """See :meth:`ScriptRunner.run_script` (``VALIDATION`` if the inner one cannot)."""
        inner = self._inner
        key = keys[0] if isinstance(keys, list | tuple) and keys else None
        key = key if isinstance(key, str) else None
        if isinstance(inner, ScriptRunner):
            return self._around(OPERATION, key, lambda: inner.run_script(script, keys, args))
        return self._around(OPERATION, key, lambda: _cannot_run_scripts(inner, key))


async def _cannot_run_scripts(inner: object, key: str | None) -> Result[ScriptReply, CacheError]:
    return Failure(
        CacheError.of(
            ErrorCode.VALIDATION,
            f"{type(inner).__name__} cannot run scripts (RedisAdapter and MemoryCache can)",
            operation=OPERATION,
            key=key,
        )
    )


def backend_of(cache: CacheProtocol) -> CacheProtocol:
    """The innermost cache of ``cache``'s stack (``cache`` itself when it is no layer)."""
    node = cache
    while isinstance(node, Layer):
        node = node.inner
    return node


def limits_of(cache: CacheProtocol) -> Limits:
    """The size limits ``cache``'s backend checks (the defaults when it does not say)."""
    limits = getattr(backend_of(cache), "limits", None)
    return limits if isinstance(limits, Limits) else DEFAULT_LIMITS

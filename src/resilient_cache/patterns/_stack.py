"""What the patterns need to know about a cache stack: its backend, limits and namespace.

A stack is layers around one backend (``build_cache()``: metrics, logs, retry, breaker,
then a ``RedisAdapter``). The patterns look through the layers (``Layer.inner``) to the
backend to learn:

* its identity, shared by every layer of the stack: the in-process state of ``@cached``
  and the outbox of ``@invalidate`` find each other through it (``_registry.py``);
* its :class:`~resilient_cache.Limits`, so that a key the cache would refuse is refused
  before it is deferred (default limits for a backend that does not say);
* whether it has a namespace, so that an outbox never flushes a whole shared database
  by default.
"""

from __future__ import annotations

from typing import Final

from resilient_cache.adapters.memory import MemoryCache
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.layers.base import backend_of

__all__ = ["check_flush_is_scoped", "flush_is_scoped"]

_UNKNOWN: Final = object()


def _namespace_of(backend: object) -> object:
    """The backend's namespace, ``None`` for none, ``_UNKNOWN`` when it does not say."""
    return getattr(backend, "namespace", _UNKNOWN)


def flush_is_scoped(cache: CacheProtocol) -> bool:
    """Whether ``cache.flush()`` empties only this cache's own keys: a namespace, a
    ``MemoryCache``, or a backend that does not say (trusted; the docs warn)."""
    backend = backend_of(cache)
    return isinstance(backend, MemoryCache) or _namespace_of(backend) is not None


def check_flush_is_scoped(cache: CacheProtocol, setting: str) -> None:
    """Refuse a ``flush()`` overflow action that would empty a whole shared database.

    A server adapter (``RedisAdapter``, ``RedisClusterAdapter``) without a namespace
    flushes every key of its database, other applications' included. A ``MemoryCache``
    holds this process's data only, and a backend that does not tell its namespace is
    trusted (the docs warn).

    Raises:
        ConfigurationError: naming ``setting``, with the two ways out.
    """
    if flush_is_scoped(cache):
        return
    backend = backend_of(cache)
    raise ConfigurationError(
        setting,
        f"{type(backend).__name__} has no namespace, so the outbox's overflow action "
        "flush() would delete EVERY key of its database, other applications' included; "
        "give the cache a namespace (CACHE_NAMESPACE), or build an Outbox with an "
        "on_overflow= callable (on_overflow=lambda cache: cache.flush() accepts emptying "
        "the database)",
    )

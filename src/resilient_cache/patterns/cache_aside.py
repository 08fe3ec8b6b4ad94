"""Cache-aside helpers: read through the cache, fall back to the loader, never fail on it.

Any ``Failure`` from the cache is treated as a miss: the loader runs and its value is
returned, and the write-back is best effort. Errors raised by the loader itself propagate:
they are the caller's, not the cache's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from resilient_cache.domain.protocol import CacheProtocol, JsonInput, JsonValue
from resilient_cache.domain.result import Success


async def get_or_set(
    cache: CacheProtocol,
    key: str,
    loader: Callable[[], Awaitable[str]],
    *,
    ttl: int | None = None,
) -> str:
    """Return the cached value of ``key``, or load it, cache it and return it.

    >>> async def load_user() -> str: ...
    >>> name = await get_or_set(cache, "user:42:name", load_user, ttl=300)  # doctest: +SKIP
    """
    match await cache.get(key):
        case Success(str() as value):
            return value
    value = await loader()
    await cache.set(key, value, ttl)  # best effort: a failure here is a miss next time
    return value


async def get_or_set_json(
    cache: CacheProtocol,
    key: str,
    loader: Callable[[], Awaitable[JsonInput]],
    *,
    ttl: int | None = None,
) -> JsonValue | JsonInput:
    """Like :func:`get_or_set` for JSON values. A stored JSON ``null`` counts as a miss.

    A cached value comes back decoded (``dict``/``list``/...); a loaded one comes back as the
    loader returned it.
    """
    match await cache.get_json(key):
        case Success(value) if value is not None:
            return value
    loaded = await loader()
    await cache.set_json(key, loaded, ttl)
    return loaded

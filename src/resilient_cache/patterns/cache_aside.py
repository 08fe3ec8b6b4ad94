"""Cache-aside helpers: read through the cache, fall back to the loader, never fail on it.

Any ``Failure`` from the cache is treated as a miss: the loader runs and its value is
returned, and the write-back is best effort. Errors raised by the loader itself propagate:
they are the caller's, not the cache's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from resilient_cache.domain.protocol import CacheProtocol, JsonInput
from resilient_cache.domain.result import Success

J = TypeVar("J", bound=JsonInput)


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
    loader: Callable[[], Awaitable[J]],
    *,
    ttl: int | None = None,
) -> J:
    """Like :func:`get_or_set` for JSON values. A stored JSON ``null`` counts as a miss.

    Typed as the loader's value: ``get_or_set_json(cache, "n", load_count)`` with a loader
    returning ``int`` is an ``int``. A cached value comes back as JSON decodes it, which is
    the loader's type for ``dict``, ``list``, ``str``, ``int``, ``float`` and ``bool``; for a
    subclass of one of them it is not (a tuple or a ``NamedTuple`` comes back from the cache as
    a list, a ``StrEnum`` or ``IntEnum`` member as a plain ``str`` or ``int``): give such a
    loader's value a plain type.

    >>> async def load_count() -> int: ...
    >>> count = await get_or_set_json(cache, "visits", load_count)  # doctest: +SKIP
    """
    match await cache.get_json(key):
        case Success(value) if value is not None:
            return cast(J, value)  # the caller's type, stored by this function
    loaded = await loader()
    await cache.set_json(key, loaded, ttl)
    return loaded

"""``@invalidate``: delete cached keys after a write, through an outbox that outlives outages.

::

    @invalidate(cache, keys=["user:{user_id}"])
    async def rename(user_id: int, name: str) -> None: ...

The keys (or one Redis glob ``pattern``) are filled from the call's arguments and checked
against the cache's limits before the function runs; once it has returned they are deleted
through an :class:`~resilient_cache.patterns.Outbox` (``_outbox.py``), which first tells the
``@cached`` functions of the same cache what is invalidated (no write-back of an older value
in flight, no stale copy), and keeps what fails for a replay on recovery.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Literal, ParamSpec, TypeVar
from weakref import WeakValueDictionary

from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.patterns._keys import KeyTemplate
from resilient_cache.patterns._outbox import Invalidation, Outbox, OverflowAction

__all__ = ["Outbox", "OverflowAction", "invalidate", "outbox_for"]

P = ParamSpec("P")
R = TypeVar("R")


_DEFAULT_OUTBOXES: WeakValueDictionary[int, Outbox] = WeakValueDictionary()


def outbox_for(cache: CacheProtocol) -> Outbox:
    """The default :class:`Outbox` of ``cache``, shared by every ``@invalidate(cache)``.

    Made on first use with the default options; it lives while something uses it. Close it
    at shutdown: ``await outbox_for(cache).aclose()``; the next use after that makes a new
    one (a second lifespan, a test), so a closed outbox is never handed out.

    Without a namespace on a Redis adapter, its overflow action is ``"drop"``: a
    ``flush()`` would empty the whole database (see :class:`Outbox`).
    """
    outbox = _DEFAULT_OUTBOXES.get(id(cache))
    if outbox is None or outbox.closed:  # while it lives it holds the cache: the id is safe
        outbox = _DEFAULT_OUTBOXES[id(cache)] = Outbox(cache)
    return outbox


def _resolver(target: CacheProtocol | Outbox) -> Callable[[], Outbox]:
    """The outbox to use, looked up on each call.

    An ``Outbox`` given by the caller is used as is. For a cache it is ``outbox_for(cache)``
    at the time of the call, so that a default outbox closed at a shutdown is replaced at
    the next use instead of swallowing what fails; the one in use is held, so that it lives
    while the decorated function does.
    """
    if isinstance(target, Outbox):
        return lambda: target
    if not isinstance(target, CacheProtocol):
        raise ConfigurationError(
            "invalidate", f"must be given a CacheProtocol or an Outbox, got {type(target)}"
        )
    held: list[Outbox] = []

    def current() -> Outbox:
        outbox = outbox_for(target)
        if not held or held[0] is not outbox:
            held[:] = [outbox]
        return outbox

    return current


def invalidate(
    target: CacheProtocol | Outbox,
    *,
    pattern: str | None = None,
    keys: Sequence[str] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Invalidate cached keys after the decorated async function succeeds.

    ``pattern`` (one Redis glob) or ``keys``: templates such as ``"user:{user_id}:*"`` or
    ``"org:{user.org_id}"``, filled from the arguments (defaults applied) like ``@cached``'s
    keys, before the function runs. The invalidation runs once the function has returned,
    never when it raises, and is owed anyway when the caller is cancelled while it runs
    (the write may have committed); the return value is passed back unchanged. A failed
    invalidation never reaches the caller: it goes to the outbox (``target`` itself, or
    :func:`outbox_for` of a cache at the time of the call) and is replayed on recovery.

    Raises:
        ConfigurationError: at decoration time: neither or both of ``pattern`` and ``keys``,
            no key, a placeholder naming no parameter, a function that is not ``async``, a
            Redis cache without a namespace given without an ``Outbox`` (its default
            outbox's overflow action would empty the whole database).
    """
    if (pattern is None) == (keys is None):
        raise ConfigurationError("invalidate", "give pattern= or keys=, exactly one of them")
    if isinstance(keys, str):
        raise ConfigurationError("keys", "must be a list of key templates, not one str")
    texts = [pattern] if pattern is not None else list(keys or ())
    if not texts:
        raise ConfigurationError("keys", "must name at least one key")
    current = _resolver(target)

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        owner = getattr(func, "__qualname__", repr(func))
        if not inspect.iscoroutinefunction(func):
            raise ConfigurationError("invalidate", f"{owner} is not an async function")
        signature = inspect.signature(func)
        setting = "keys" if pattern is None else "pattern"
        templates = [
            KeyTemplate(text, signature, owner, setting=setting, glob=pattern is not None)
            for text in texts
        ]
        operation: Literal["delete", "delete_pattern"] = (
            "delete" if pattern is None else "delete_pattern"
        )

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            rendered = [Invalidation(operation, t.render(bound.arguments)) for t in templates]
            entries = current()._checked(rendered)  # a key the cache refuses: dropped now
            try:
                value = await func(*args, **kwargs)
            except asyncio.CancelledError:  # it may have committed: a late delete is safe
                current()._defer_all(entries, "cancelled")
                raise
            await current()._apply_all(entries)
            return value

        return wrapper

    return decorate

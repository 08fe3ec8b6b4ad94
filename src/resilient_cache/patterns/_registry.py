"""Invalidations reach ``@cached``'s in-process state: a weak registry per cache stack.

``@cached`` keeps state beside the cache: computations in flight (whose write-back must not
land after an invalidation) and the stale copy (which must not serve an invalidated value).
Deleting in Redis reaches neither. So every ``@cached`` function registers here under its
cache's backend (``layers.base.backend_of``: every layer of one stack shares it), and the outbox,
through which ``@invalidate`` and ``CachedFunction.invalidate`` delete, tells each function
of that backend what was invalidated: a key, a Redis glob pattern, or everything (the
wholesale action after an overflow).

References are weak both ways: a registered function, or a backend, that nobody else uses
is collected as if it had never registered. A backend that cannot be weakly referenced is
not registered (its functions are then only told by their own ``invalidate``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Protocol
from weakref import WeakKeyDictionary, WeakSet

from resilient_cache.domain.glob import glob_match
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.layers.base import backend_of

__all__ = ["Forgetful", "forget_all", "forget_key", "forget_pattern", "matcher", "register"]

_LITERAL: Final = re.compile(r"[^*?\[\\]*")


class Forgetful(Protocol):
    """What the registry tells: forget what an invalidation covers."""

    def forget_key(self, key: str) -> None:
        """Forget ``key``: no write-back of a computation in flight, no stale copy."""
        ...

    def forget_pattern(self, pattern: str) -> None:
        """Forget every key the Redis glob ``pattern`` matches."""
        ...

    def forget_all(self) -> None:
        """Forget every key."""
        ...


def matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a key matches the Redis glob ``pattern``, as ``delete_pattern`` selects it.

    Redis's own matcher (``domain/glob.py``), behind a cheap test of the pattern's
    literal beginning (``user:42:`` of ``user:42:*``), so that most keys are rejected
    without running the matcher.
    """
    raw = pattern.encode(errors="surrogatepass")
    prefix = _LITERAL.match(pattern)
    literal = prefix.group() if prefix else ""

    def matches(key: str) -> bool:
        if not key.startswith(literal):
            return False
        return glob_match(raw, key.encode(errors="surrogatepass"))

    return matches


_REGISTRY: WeakKeyDictionary[object, WeakSet[Forgetful]] = WeakKeyDictionary()


def register(cache: CacheProtocol, member: Forgetful) -> bool:
    """Tell ``member`` of every invalidation of ``cache``'s stack; ``False`` if impossible."""
    backend = backend_of(cache)
    try:
        members = _REGISTRY.get(backend)
        if members is None:
            members = _REGISTRY[backend] = WeakSet()
    except TypeError:  # not weakly referenceable, or not hashable
        return False
    members.add(member)
    return True


def _members(cache: CacheProtocol) -> list[Forgetful]:
    try:
        return list(_REGISTRY.get(backend_of(cache), ()))
    except TypeError:
        return []


def forget_key(cache: CacheProtocol, key: str) -> None:
    """Tell every function registered on ``cache``'s stack to forget ``key``."""
    for member in _members(cache):
        member.forget_key(key)


def forget_pattern(cache: CacheProtocol, pattern: str) -> None:
    """Tell every function registered on ``cache``'s stack to forget what ``pattern`` matches."""
    for member in _members(cache):
        member.forget_pattern(pattern)


def forget_all(cache: CacheProtocol) -> None:
    """Tell every function registered on ``cache``'s stack to forget everything."""
    for member in _members(cache):
        member.forget_all()

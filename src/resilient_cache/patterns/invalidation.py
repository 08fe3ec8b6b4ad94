"""``@invalidate`` and the invalidation outbox: no stale data after an outage.

A write to the source of truth must be followed by deleting the cached copies. When Redis
is down at that moment the delete fails, and once Redis is back every reader gets the stale
copy until its TTL ends. ``@invalidate`` deletes after the write; its :class:`Outbox`
keeps the deletes that failed, in process, and replays them once the cache is healthy again.

* **Deferred**: a ``delete``/``delete_pattern`` that returns a ``Failure`` is recorded,
  unless the failure is the request's own fault (``VALIDATION``...: replaying cannot help).
  Identical entries are kept once, at their first place; replay goes in order, and an
  entry stays until its replay succeeds.
* **Healthy again**, learnt three ways: the stack's circuit breaker closing (a listener),
  a periodic ``ping()`` that succeeds while something is owed (a task that exists only
  then), and any invalidation through the outbox that succeeds.
* **Bounded**: past ``max_pending`` entries the outbox overflows. Nothing is dropped
  silently: the entries are replaced by one wholesale action run on recovery,
  ``cache.flush()`` by default, which deletes the cache's namespace, or, WITHOUT a
  namespace, every key of the database (see docs/contract.md); pass ``on_overflow=`` to
  narrow it.

Replaying a delete late is always safe for a cache: at worst a fresh entry is deleted and
read again from the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, Self, TypeAlias, TypeVar
from weakref import WeakValueDictionary

from prometheus_client import CollectorRegistry

from resilient_cache.domain.errors import CacheError, ConfigurationError
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.layers._base import Layer
from resilient_cache.layers.circuit_breaker import BreakerState, CircuitBreakerLayer
from resilient_cache.layers.metrics import CALLER_ERRORS
from resilient_cache.patterns._keys import KeyTemplate
from resilient_cache.patterns._outbox_telemetry import OutboxTelemetry

__all__ = ["Outbox", "OverflowAction", "invalidate", "outbox_for"]

P = ParamSpec("P")
R = TypeVar("R")

OverflowAction: TypeAlias = Callable[[CacheProtocol], Awaitable[Result[object, CacheError]]]
"""A custom wholesale invalidation, e.g. ``lambda cache: cache.delete_pattern("user:*")``."""

_log = logging.getLogger("resilient_cache")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One invalidation: ``delete`` of a key or ``delete_pattern`` of a glob."""

    operation: Literal["delete", "delete_pattern"]
    target: str

    def apply(self, cache: CacheProtocol) -> Awaitable[Result[object, CacheError]]:
        if self.operation == "delete":
            return cache.delete(self.target)
        return cache.delete_pattern(self.target)


async def _flush(cache: CacheProtocol) -> Result[object, CacheError]:
    return await cache.flush()


class Outbox:
    """Records failed invalidations and replays them once the cache is healthy again.

    Args:
        cache: the cache to invalidate (normally the stack from ``build_cache``; its
            circuit breaker, if any, is found and listened to).
        max_pending: entries kept before the outbox overflows (default 10 000).
        on_overflow: the wholesale invalidation owed after an overflow: ``"flush"``
            (``cache.flush()``: the namespace's keys, or the WHOLE database without a
            namespace) or an async callable taking the cache and returning a ``Result``.
        ping_interval: seconds between health pings while something is owed; ``None``
            relies on the breaker and on later invalidations only.
        sleep: the pause between pings (a test seam).
        cache_name: the ``cache`` label of the metrics and key of the log events.
        registry: the Prometheus registry (default: prometheus-client's global one).
        logger: a structlog logger (default: ``structlog.get_logger("resilient_cache")``).
        log_keys: include the key or pattern in ``invalidation_deferred`` events.

    Raises:
        ConfigurationError: a bad ``max_pending``, ``on_overflow`` or ``ping_interval``.
    """

    def __init__(
        self,
        cache: CacheProtocol,
        *,
        max_pending: int = 10_000,
        on_overflow: Literal["flush"] | OverflowAction = "flush",
        ping_interval: float | None = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cache_name: str = "default",
        registry: CollectorRegistry | None = None,
        logger: Any = None,
        log_keys: bool = False,
    ) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError("max_pending", f"must be an int >= 1, got {max_pending!r}")
        if ping_interval is not None and not ping_interval > 0:
            raise ConfigurationError("ping_interval", f"must be > 0 or None, got {ping_interval!r}")
        if on_overflow != "flush" and not callable(on_overflow):
            raise ConfigurationError("on_overflow", 'must be "flush" or an async callable')
        self._cache = cache
        self._max_pending = max_pending
        self._on_overflow: OverflowAction = _flush if on_overflow == "flush" else on_overflow
        self._ping_interval = ping_interval
        self._sleep = sleep
        self._t = OutboxTelemetry(
            cache_name, "flush" if on_overflow == "flush" else "on_overflow",
            registry=registry, logger=logger, log_keys=log_keys,
        )  # fmt: skip
        self._entries: dict[_Entry, None] = {}  # an ordered set: order kept, no duplicates
        self._overflowed = False
        self._covered = 0  # invalidations the wholesale action stands for
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[int] | None = None
        self._inflight: _Entry | None = None  # the entry a replay is applying
        self._again = False  # it was deferred again meanwhile: apply it once more
        self._closed = False
        breaker = cache.find(CircuitBreakerLayer) if isinstance(cache, Layer) else None
        if breaker is not None:
            breaker.add_listener(self._on_breaker_transition)

    @property
    def cache(self) -> CacheProtocol:
        """The cache this outbox invalidates."""
        return self._cache

    @property
    def pending(self) -> int:
        """Invalidations owed: entries waiting, or those the owed wholesale action covers."""
        return len(self._entries) + self._covered

    @property
    def overflowed(self) -> bool:
        """Whether the wholesale action (``on_overflow``) is owed."""
        return self._overflowed

    def __repr__(self) -> str:
        return f"Outbox({self._cache!r}, pending={self.pending}, overflowed={self._overflowed})"

    # -- invalidating --------------------------------------------------------------------

    async def delete(self, key: str) -> Result[bool, CacheError]:
        """``cache.delete(key)``; if it fails, the delete is deferred. Returns that first try."""
        entry = _Entry("delete", key)
        with self._kept_if_cancelled([entry]):
            result = await self._cache.delete(key)
        self._settle(entry, result)
        return result

    async def delete_pattern(self, pattern: str) -> Result[int, CacheError]:
        """``cache.delete_pattern(pattern)``, deferred if it fails; returns the first try."""
        entry = _Entry("delete_pattern", pattern)
        with self._kept_if_cancelled([entry]):
            result = await self._cache.delete_pattern(pattern)
        self._settle(entry, result)
        return result

    async def _apply_all(self, entries: Sequence[_Entry]) -> None:
        """Apply in order; once one is deferred, defer the rest without waiting on each."""
        failed: str | None = None
        for i, entry in enumerate(entries):
            if failed is not None:
                self._defer(entry, failed)
                continue
            with self._kept_if_cancelled(entries[i:]):
                result = await entry.apply(self._cache)
            failed = self._settle(entry, result)

    @contextlib.contextmanager
    def _kept_if_cancelled(self, entries: Sequence[_Entry]) -> Iterator[None]:
        """A caller cancelled mid-invalidation: defer what may not have been applied."""
        try:
            yield
        except asyncio.CancelledError:
            for entry in entries:
                self._defer(entry, "cancelled")
            raise

    def _settle(self, entry: _Entry, result: Result[object, CacheError]) -> str | None:
        """Defer a failed invalidation; return its error type if it was deferred."""
        if isinstance(result, Success):
            if self._owed():  # the cache answers: time to pay what is owed
                self._start_replay()
            return None
        if result.error.code in CALLER_ERRORS:
            return None  # the request's own fault: replaying it cannot help
        self._defer(entry, result.error.code.value)
        return result.error.code.value

    def _defer(self, entry: _Entry, error_type: str) -> None:
        first = not self._owed()
        if self._overflowed:
            self._covered += 1
        elif entry not in self._entries:
            if len(self._entries) >= self._max_pending:
                self._overflow("full", len(self._entries) + 1)
            else:
                self._entries[entry] = None
        elif entry == self._inflight:
            self._again = True
        self._t.pending(self.pending)
        self._t.deferred(entry.operation, entry.target, error_type, self.pending, first)
        self._start_watcher()

    def _overflow(self, reason: str, covered: int) -> None:
        """Replace every entry by the wholesale action (never a silent drop)."""
        self._overflowed = True
        self._covered += covered
        self._entries.clear()
        self._t.overflowed(reason, self._max_pending)

    def _owed(self) -> bool:
        return self._overflowed or bool(self._entries)

    # -- replaying -----------------------------------------------------------------------

    async def replay(self) -> int:
        """Apply what is owed, in order, until done or a call fails; return how many applied.

        After an overflow the wholesale action runs first, in place of every entry. An entry
        stays until its replay succeeds; one that can never apply (a caller error) turns
        into the wholesale action. One replay runs at a time.
        """
        async with self._lock:
            applied = 0
            while self._owed():
                if self._overflowed:
                    covered = self._covered
                    if isinstance(await self._on_overflow(self._cache), Failure):
                        break
                    self._covered -= covered  # what was deferred meanwhile is still owed
                    self._overflowed = self._covered > 0
                    self._t.overflow_applied(covered)
                    applied += 1
                    continue
                entry = self._inflight = next(iter(self._entries))
                self._again = False
                try:
                    result = await entry.apply(self._cache)
                finally:
                    self._inflight = None
                if isinstance(result, Failure):
                    if result.error.code not in CALLER_ERRORS:
                        break
                    self._entries.pop(entry, None)
                    self._overflow("rejected", 1)
                    continue
                if not self._again:  # else it stays first, to be applied again
                    self._entries.pop(entry, None)
                self._t.replayed(entry.operation)
                applied += 1
            self._t.pending(self.pending)
            if applied:
                self._t.replay_done(applied, self.pending)
            return applied

    def _on_breaker_transition(self, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.CLOSED and self._owed():
            self._start_replay()

    def _start_replay(self) -> None:
        if self._closed or (self._replayer is not None and not self._replayer.done()):
            return  # a replay under way picks up what is owed
        self._replayer = self._spawn(self.replay(), "replay")

    def _start_watcher(self) -> None:
        if self._closed or self._ping_interval is None:
            return
        if self._watcher is None or self._watcher.done():
            self._watcher = self._spawn(self._watch(self._ping_interval), "watch")

    async def _watch(self, interval: float) -> None:
        """Ping while something is owed; replay when a ping succeeds. Ends when all is paid."""
        while self._owed():
            await self._sleep(interval)
            if self._owed() and isinstance(await self._cache.ping(), Success):
                await self.replay()

    def _spawn(self, work: Coroutine[Any, Any, R], role: str) -> asyncio.Task[R]:
        task = asyncio.get_running_loop().create_task(work, name=f"resilient_cache.outbox.{role}")
        task.add_done_callback(_report_crash)
        return task

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the background tasks. What is still owed is logged as abandoned.

        Close the outbox before the cache it invalidates.
        """
        if self._closed:
            return
        self._closed = True
        tasks = [task for task in (self._watcher, self._replayer) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owed():
            self._t.abandoned(self.pending, self._overflowed)
        self._t.pending(0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("resilient_cache outbox task %s failed", task.get_name(), exc_info=exc)


_DEFAULT_OUTBOXES: WeakValueDictionary[int, Outbox] = WeakValueDictionary()


def outbox_for(cache: CacheProtocol) -> Outbox:
    """The default :class:`Outbox` of ``cache``, shared by every ``@invalidate(cache)``.

    Made on first use with the default options; it lives while something uses it. Close it
    at shutdown: ``await outbox_for(cache).aclose()``.
    """
    outbox = _DEFAULT_OUTBOXES.get(id(cache))
    if outbox is None:  # while it lives it holds the cache, so the id is not reused
        outbox = _DEFAULT_OUTBOXES[id(cache)] = Outbox(cache)
    return outbox


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
    never when it raises; the return value is passed back unchanged. A failed invalidation
    never reaches the caller: it goes to the outbox (``target`` itself, or
    :func:`outbox_for` of a cache) and is replayed on recovery.

    Raises:
        ConfigurationError: at decoration time: neither or both of ``pattern`` and ``keys``,
            no key, a placeholder naming no parameter, a function that is not ``async``.
    """
    if (pattern is None) == (keys is None):
        raise ConfigurationError("invalidate", "give pattern= or keys=, exactly one of them")
    if isinstance(keys, str):
        raise ConfigurationError("keys", "must be a list of key templates, not one str")
    texts = [pattern] if pattern is not None else list(keys or ())
    if not texts:
        raise ConfigurationError("keys", "must name at least one key")
    outbox = target if isinstance(target, Outbox) else outbox_for(target)

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
            entries = [_Entry(operation, t.render(bound.arguments)) for t in templates]
            value = await func(*args, **kwargs)
            await outbox._apply_all(entries)
            return value

        return wrapper

    return decorate

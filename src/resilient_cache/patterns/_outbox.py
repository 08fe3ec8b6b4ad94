"""The invalidation outbox: invalidations a Redis outage delays but does not lose.

A write to the source of truth must be followed by deleting the cached copies; when Redis
is down at that moment, the :class:`Outbox` keeps the deletes that failed, in process, and
replays them once the cache is healthy again (docs/patterns.md tells the whole story).

* **In process first**: each invalidation tells the ``@cached`` functions of the cache's
  stack (``_registry.py``) what it covers, before its delete and after, whether the delete
  works or not: no older value written back by a computation in flight, no stale copy.
* **Checked first**: a key or pattern the cache would refuse is dropped with a warning,
  never deferred: nothing can be stored under it, and it could never apply.
* **Deferred**: a failed delete is recorded unless the failure is the request's own fault;
  identical entries are kept once, at their first place.
* **Replayed** in order: a failure that says the cache is down (``code.policy.cache_down``)
  stops the replay, every entry kept; any other moves the entry to the back, dropped
  (logged, counted) after ``MAX_ATTEMPTS``.
* **Healthy again**, learnt three ways: the stack's breaker closing (a weak listener, idle
  once the outbox is closed), a periodic ``ping()`` while something is owed, and any
  invalidation through the outbox that succeeds.
* **Bounded**: past ``max_pending`` entries, one wholesale action replaces them,
  ``cache.flush()`` by default (the namespace's keys); refused over a Redis adapter without
  a namespace, whose flush would empty the whole database (``_stack.py``).

Replaying a delete late is always safe for a cache: at worst a fresh entry is deleted and
read again from the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Self, TypeAlias, TypeGuard, TypeVar

from prometheus_client import CollectorRegistry

from resilient_cache.domain.errors import CacheError, ConfigurationError
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.validation import Limits, check_pattern, encode_key
from resilient_cache.layers.base import Layer, limits_of
from resilient_cache.layers.circuit_breaker import BreakerState, CircuitBreakerLayer
from resilient_cache.patterns import _registry
from resilient_cache.patterns._outbox_telemetry import OutboxTelemetry
from resilient_cache.patterns._stack import check_flush_is_scoped, flush_is_scoped

__all__ = ["MAX_ATTEMPTS", "Invalidation", "Outbox", "OverflowAction"]

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


R = TypeVar("R")


async def _flush(cache: CacheProtocol) -> Result[object, CacheError]:
    return await cache.flush()


def _weak_listener(outbox: Outbox) -> Callable[[BreakerState, BreakerState], None]:
    """A breaker listener that neither keeps ``outbox`` alive nor acts once it is gone."""
    ref = weakref.ref(outbox)

    def relay(old: BreakerState, new: BreakerState) -> None:
        alive = ref()
        if alive is not None:
            alive._on_breaker_transition(old, new)

    return relay


class Outbox:
    """Records failed invalidations and replays them once the cache is healthy again.

    Args:
        cache: the cache to invalidate (normally the stack from ``build_cache``; its
            circuit breaker, if any, is found and listened to).
        max_pending: entries kept before the outbox overflows (default 10 000).
        on_overflow: what a full outbox does: ``"flush"`` (owe ``cache.flush()``, the
            namespace's keys, in place of every entry), an async callable taking the cache
            and returning a ``Result`` (owed likewise), or ``"drop"`` (drop each further
            invalidation, counted and logged as ``reason="overflow"``: those entries may be
            served stale until their TTL). Default: ``"flush"`` when the cache is scoped (a
            namespace, or a ``MemoryCache``), else ``"drop"``: the default never empties a
            shared database.
        ping_interval: seconds between health pings while something is owed; ``None``
            relies on the breaker and on later invalidations only.
        sleep: the pause between pings (a test seam).
        cache_name: the ``cache`` label of the metrics and key of the log events.
        registry: the Prometheus registry (default: prometheus-client's global one).
        logger: a structlog logger (default: :func:`resilient_cache.log.get_logger`, silent until
            the application configures logging or structlog).
        log_keys: include the key or pattern in ``invalidation_deferred`` and
            ``invalidation_dropped`` events.

    Raises:
        ConfigurationError: a bad ``max_pending``, ``on_overflow`` or ``ping_interval``;
            an explicit ``on_overflow="flush"`` over a Redis adapter without a namespace
            (it would empty the whole database).
    """

    def __init__(
        self,
        cache: CacheProtocol,
        *,
        max_pending: int = 10_000,
        on_overflow: Literal["flush", "drop"] | OverflowAction | None = None,
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
        if on_overflow not in (None, "flush", "drop") and not callable(on_overflow):
            raise ConfigurationError(
                "on_overflow", 'must be "flush", "drop", an async callable or None'
            )
        if on_overflow is None:
            on_overflow = "flush" if flush_is_scoped(cache) else "drop"
        elif on_overflow == "flush":
            check_flush_is_scoped(cache, "on_overflow")
        self._drops = on_overflow == "drop"
        self._cache = cache
        self._limits = limits_of(cache)
        self._max_pending = max_pending
        self._on_overflow: OverflowAction = on_overflow if callable(on_overflow) else _flush
        self._ping_interval = ping_interval
        self._sleep = sleep
        self._t = OutboxTelemetry(
            cache_name, on_overflow if isinstance(on_overflow, str) else "on_overflow",
            registry=registry, logger=logger, log_keys=log_keys,
        )  # fmt: skip
        self._entries: dict[Invalidation, None] = {}  # an ordered set: order kept, no duplicates
        self._attempts: dict[Invalidation, int] = {}  # replays failed by the entry's own fault
        self._overflowed = False
        self._covered = 0  # invalidations the wholesale action stands for
        self._lock: asyncio.Lock | None = None  # made per event loop: see _replay_lock
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[int] | None = None
        self._inflight: Invalidation | None = None  # the entry a replay is applying
        self._again = False  # it was deferred again meanwhile: apply it once more
        self._closed = False
        breaker = cache.find(CircuitBreakerLayer) if isinstance(cache, Layer) else None
        if breaker is not None:
            breaker.add_listener(_weak_listener(self))

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

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` ran: a closed outbox replays nothing by itself."""
        return self._closed

    def __repr__(self) -> str:
        return f"Outbox({self._cache!r}, pending={self.pending}, overflowed={self._overflowed})"

    # -- invalidating --------------------------------------------------------------------

    async def delete(self, key: str) -> Result[bool, CacheError]:
        """``cache.delete(key)``; if it fails, the delete is deferred. Returns that first try.

        A key the cache would refuse is a ``VALIDATION`` failure at once, never deferred.
        """
        return await self._delete(key, forget=True)

    async def _delete(self, key: str, *, forget: bool) -> Result[bool, CacheError]:
        entry = Invalidation("delete", key)
        if (refused := self._refuse(entry)) is not None:
            return Failure(refused)
        if forget:
            entry.forget(self._cache)
        with self._kept_if_cancelled([entry]):
            result = await self._cache.delete(key)
        if forget:
            entry.forget(self._cache)
        self._settle(entry, result)
        return result

    async def delete_pattern(self, pattern: str) -> Result[int, CacheError]:
        """``cache.delete_pattern(pattern)``, deferred if it fails; returns the first try."""
        entry = Invalidation("delete_pattern", pattern)
        if (refused := self._refuse(entry)) is not None:
            return Failure(refused)
        entry.forget(self._cache)
        with self._kept_if_cancelled([entry]):
            result = await self._cache.delete_pattern(pattern)
        entry.forget(self._cache)
        self._settle(entry, result)
        return result

    def _refuse(self, entry: Invalidation) -> CacheError | None:
        """The entry's ``VALIDATION`` error, logged and counted as dropped, if it has one."""
        problem = entry.problem(self._limits)
        if problem is not None:
            self._t.dropped(entry.operation, entry.target, "invalid", problem.code.value)
        return problem

    def _checked(self, entries: Sequence[Invalidation]) -> list[Invalidation]:
        """The entries the cache would accept; the others are dropped with a warning."""
        return [entry for entry in entries if self._refuse(entry) is None]

    async def _apply_all(self, entries: Sequence[Invalidation]) -> None:
        """Apply in order; once one is deferred, defer the rest without waiting on each."""
        for entry in entries:
            entry.forget(self._cache)
        failed: str | None = None
        for i, entry in enumerate(entries):
            if failed is not None:
                self._defer(entry, failed)
                continue
            with self._kept_if_cancelled(entries[i:]):
                result = await entry.apply(self._cache)
            entry.forget(self._cache)
            failed = self._settle(entry, result)

    def _defer_all(self, entries: Sequence[Invalidation], error_type: str) -> None:
        """Owe every entry without trying it (the write's caller was cancelled)."""
        for entry in entries:
            entry.forget(self._cache)
            self._defer(entry, error_type)

    @contextlib.contextmanager
    def _kept_if_cancelled(self, entries: Sequence[Invalidation]) -> Iterator[None]:
        """A caller cancelled mid-invalidation: defer what may not have been applied."""
        try:
            yield
        except asyncio.CancelledError:
            for entry in entries:
                self._defer(entry, "cancelled")
            raise

    def _settle(self, entry: Invalidation, result: Result[object, CacheError]) -> str | None:
        """Defer a failed invalidation; return its error type if it was deferred."""
        if isinstance(result, Success):
            if self._owed():  # the cache answers: time to pay what is owed
                self._start_replay()
            return None
        if result.error.code.policy.caller_error:
            return None  # the request's own fault: replaying it cannot help
        self._defer(entry, result.error.code.value)
        return result.error.code.value

    def _defer(self, entry: Invalidation, error_type: str) -> None:
        if self._closed:  # nothing would ever replay it
            self._t.dropped(entry.operation, entry.target, "closed", error_type)
            return
        first = not self._owed()
        if self._overflowed:
            self._covered += 1
        elif entry not in self._entries:
            if len(self._entries) >= self._max_pending and self._drops:
                self._t.dropped(entry.operation, entry.target, "overflow", error_type)
                return
            if len(self._entries) >= self._max_pending:
                self._overflow(len(self._entries) + 1)
            else:
                self._entries[entry] = None
        elif entry == self._inflight:
            self._again = True
        self._t.pending(self.pending)
        self._t.deferred(entry.operation, entry.target, error_type, self.pending, first)
        self._start_watcher()

    def _overflow(self, covered: int) -> None:
        """Replace every entry by the wholesale action (never a silent drop)."""
        self._overflowed = True
        self._covered += covered
        self._entries.clear()
        self._attempts.clear()
        self._t.overflowed("full", self._max_pending)

    def _owed(self) -> bool:
        return self._overflowed or bool(self._entries)

    def _drop(self, entry: Invalidation, reason: str, error: CacheError, attempts: int = 0) -> None:
        self._entries.pop(entry, None)
        self._attempts.pop(entry, None)
        self._t.dropped(entry.operation, entry.target, reason, error.code.value, attempts)

    # -- replaying -----------------------------------------------------------------------

    async def replay(self) -> int:
        """Apply what is owed, in order, until done or the cache fails; return how many applied.

        After an overflow the wholesale action runs first, in place of every entry. A
        failure that says the cache is down ends the replay; an entry's own failure moves it to
        the back (dropped after :data:`MAX_ATTEMPTS`, or at once when the cache refuses it
        as the request's fault). One replay runs at a time. Never raises.
        """
        async with self._replay_lock():
            applied = 0
            tried: set[Invalidation] = set()  # failed in this replay, now at the back
            while self._owed():
                if self._overflowed:
                    if not await self._apply_overflow():
                        break
                    applied += 1
                    continue
                entry = next((e for e in self._entries if e not in tried), None)
                if entry is None:
                    break
                self._inflight, self._again = entry, False
                entry.forget(self._cache)
                try:
                    result = await entry.apply(self._cache)
                finally:
                    self._inflight = None
                entry.forget(self._cache)
                if isinstance(result, Failure):
                    if result.error.code.policy.cache_down:
                        break
                    self._charge(entry, result.error)
                    tried.add(entry)
                    continue
                if not self._again:  # else it stays first, to be applied again
                    self._entries.pop(entry, None)
                    self._attempts.pop(entry, None)
                self._t.replayed(entry.operation)
                applied += 1
            self._t.pending(self.pending)
            if applied:
                self._t.replay_done(applied, self.pending)
            return applied

    def _charge(self, entry: Invalidation, error: CacheError) -> None:
        """An entry's replay failed by its own fault: drop it, or move it to the back."""
        if entry not in self._entries:
            return  # an overflow replaced it meanwhile
        if error.code.policy.caller_error:
            self._drop(entry, "rejected", error)
            return
        attempts = self._attempts.get(entry, 0) + 1
        if self._again:  # deferred anew by a newer write: a fresh budget
            attempts = 0
        elif attempts >= MAX_ATTEMPTS:
            self._drop(entry, "failing", error, attempts)
            return
        self._attempts[entry] = attempts
        del self._entries[entry]
        self._entries[entry] = None  # to the back: the others go first

    async def _apply_overflow(self) -> bool:
        """Run the wholesale action; whether it succeeded (it stays owed if not)."""
        covered = self._covered
        _registry.forget_all(self._cache)
        try:
            result = await self._on_overflow(self._cache)
        except Exception:  # a custom action's bug must not end the replay by raising
            self._t.overflow_failed()
            return False
        if isinstance(result, Failure):
            return False
        _registry.forget_all(self._cache)
        self._covered -= covered  # what was deferred meanwhile is still owed
        self._overflowed = self._covered > 0
        self._t.overflow_applied(covered)
        return True

    def _replay_lock(self) -> asyncio.Lock:
        """One replay at a time; a lock of the running loop (an outbox may outlive one)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def _on_breaker_transition(self, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.CLOSED and self._owed():
            self._start_replay()

    def _start_replay(self) -> None:
        if self._closed or _alive(self._replayer):
            return  # a replay under way picks up what is owed
        self._replayer = self._spawn(self.replay(), "replay")

    def _start_watcher(self) -> None:
        if self._closed or self._ping_interval is None or _alive(self._watcher):
            return
        self._watcher = self._spawn(self._watch(self._ping_interval), "watch")

    async def _watch(self, interval: float) -> None:
        """Ping while something is owed; replay when a ping succeeds. Ends when all is paid."""
        while self._owed():
            await self._sleep(interval)
            if self._owed() and isinstance(await self._cache.ping(), Success):
                await self.replay()

    def _spawn(self, work: Coroutine[Any, Any, R], role: str) -> asyncio.Task[R]:
        task = asyncio.get_running_loop().create_task(work, name=f"resilient_cache.outbox.{role}")
        task.add_done_callback(self._t.task_failed)
        return task

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the background tasks. What is still owed is logged as abandoned.

        Close the outbox before the cache it invalidates. A closed outbox still applies
        invalidations, but drops (with an error) those that fail: nothing would replay them.
        """
        if self._closed:
            return
        self._closed = True
        tasks = [task for task in (self._watcher, self._replayer) if _alive(task)]
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


def _alive(task: asyncio.Task[Any] | None) -> TypeGuard[asyncio.Task[Any]]:
    """A task of the running loop that has not ended (a task of another loop never runs)."""
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()

"""``@cached``: cache-aside for async functions that stays correct through outages.

::

    @cached(cache, key="user:{user_id}", ttl=3600)
    async def get_user(user_id: int) -> dict[str, object]: ...

One call:

1. builds its key from the template and the call's arguments (see ``_keys.py``); a
   template that names no parameter is a ``ConfigurationError`` when decorating;
2. reads the key through a single-flight (``_singleflight.py``): concurrent calls for one
   key share one cache read and at most one call of the function, and a caller's
   cancellation never cancels the work the others wait for;
3. on a hit, returns the decoded value; with :class:`EarlyRefresh` a hit close to its expiry
   also starts one background recomputation (XFetch), so a hot key is refreshed before it
   expires instead of by a burst of misses after;
4. on a miss, calls the function, returns its value and writes it back (best effort, after
   the callers have their value). ``None`` is "not found": cached only with
   ``negative_ttl``, for that many seconds;
5. a ``Failure`` from the cache is a miss. With :class:`ServeStale`, while the cache is
   unavailable (a ``fallback`` failure: circuit open, timeout, connection...), the last
   known value is returned instead, if it is at most ``max_staleness`` seconds old.

The function's own exceptions propagate to every caller that waited for that call, and are
never cached. The stored format is described in ``_entry.py``; ``@cached`` owns its keys.

Invalidations reach the in-process state (``_registry.py``): every ``@cached`` function is
registered under its cache's stack, and each invalidation through an outbox of that stack
(``@invalidate``, :meth:`CachedFunction.invalidate`) makes it forget the keys concerned: a
computation in flight does not write its value back (and deletes it again if its write was
already on its way), and the stale copy drops them.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, ParamSpec, TypeVar, cast

from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.validation import MAX_TTL_SECONDS, check_seconds
from resilient_cache.layers.base import backend_of
from resilient_cache.layers.metrics import outcome_of
from resilient_cache.log import get_logger
from resilient_cache.patterns import _registry
from resilient_cache.patterns._entry import Entry, decode_entry, encode_entry
from resilient_cache.patterns._keys import KeyTemplate
from resilient_cache.patterns._options import EarlyRefresh, ServeStale
from resilient_cache.patterns._outbox import Outbox
from resilient_cache.patterns._serialize import JSON, JsonSerializer, Serializer
from resilient_cache.patterns._singleflight import Flight, SingleFlight
from resilient_cache.patterns._stale import StaleCopy
from resilient_cache.patterns.invalidation import outbox_for

__all__ = [
    "JSON",
    "CachedFunction",
    "EarlyRefresh",
    "JsonSerializer",
    "Serializer",
    "ServeStale",
    "cached",
]

P = ParamSpec("P")
R = TypeVar("R")

_log = get_logger()


@dataclass(frozen=True, slots=True)
class _Policy:
    ttl: int
    negative_ttl: int | None
    serializer: Serializer[Any]
    early_refresh: EarlyRefresh | None
    serve_stale: ServeStale | None
    clock: Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Loaded:
    value: object  # what the callers get
    entry: Entry | None  # what to store; None: this answer cannot be cached
    ttl: int
    replaces: bool  # a refresh: an older entry is in the cache


_MISS: Final = object()


class CachedFunction(Generic[P, R]):
    """An async function behind ``@cached``. Call it like the function itself.

    Build it with :func:`cached`. Besides being called it offers :meth:`cache_key`,
    :meth:`invalidate` and :meth:`drain`; ``forget_key``, ``forget_pattern`` and
    ``forget_all`` are how an outbox of its cache tells it of invalidations.
    """

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, Awaitable[R]]

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        cache: CacheProtocol,
        template: KeyTemplate,
        policy: _Policy,
        outbox: Outbox | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._cache = cache
        self._template = template
        self._signature = inspect.signature(fn)
        self._policy = policy
        self._fixed_outbox = outbox
        self._default_outbox: Outbox | None = None  # held while in use: see _outbox()
        stale = policy.serve_stale
        self._stale = (
            StaleCopy(
                stale.max_entries,
                stale.max_staleness,
                max_bytes=stale.max_bytes,
                max_value_bytes=min(stale.max_value_bytes, stale.max_bytes),
            )
            if stale
            else None
        )
        self._reads: SingleFlight[object] = SingleFlight()
        self._loads: SingleFlight[_Loaded] = SingleFlight()
        self._name: str = getattr(fn, "__qualname__", repr(fn))
        _registry.register(cache, self)

    def __repr__(self) -> str:
        return f"<cached {self._name} key={self._template.template!r}>"

    @property
    def key_template(self) -> str:
        """The key template, as given to :func:`cached`."""
        return self._template.template

    @property
    def in_flight(self) -> int:
        """Reads and computations in progress on this process (0 when idle)."""
        return len(self._reads) + len(self._loads)

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key a call with these arguments reads and writes (no I/O).

        Raises:
            TypeError: arguments the function would not accept, or a placeholder value that
                is not a ``str``, ``int`` or ``UUID``.
            ValueError: a placeholder value that is an empty ``str``.
        """
        return self._template.render(self._bind(args, kwargs).arguments)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Result[bool, CacheError]:
        """Delete the entry of a call with these arguments, here and in the cache.

        The delete goes through the outbox (``outbox=``, or ``outbox_for(cache)``): when it
        fails it is deferred and replayed once the cache recovers. The stale copy forgets
        the key at once (it is never served again, even if the delete fails), and a
        computation in progress for it is not written back; so do the other ``@cached``
        functions of this cache. Returns the first ``delete`` try's result:
        ``Success(True)`` if the entry existed.
        """
        key = self.cache_key(*args, **kwargs)
        self.forget_key(key)
        return await self._outbox().delete(key)

    def forget_key(self, key: str) -> None:
        """Forget ``key`` in this process: no write-back in flight, no stale copy."""
        self._reads.forget(key)
        self._loads.forget(key)
        if self._stale is not None:
            self._stale.forget(key)

    def forget_pattern(self, pattern: str) -> None:
        """Forget, like :meth:`forget_key`, every key the Redis glob ``pattern`` matches."""
        matches = _registry.matcher(pattern)
        self._reads.forget_if(matches)
        self._loads.forget_if(matches)
        if self._stale is not None:
            self._stale.forget_if(matches)

    def forget_all(self) -> None:
        """Forget every key (a wholesale invalidation)."""
        self.forget_pattern("*")

    def _outbox(self) -> Outbox:
        if self._fixed_outbox is not None:
            return self._fixed_outbox
        outbox = outbox_for(self._cache)  # a closed default outbox is replaced
        self._default_outbox = outbox
        return outbox

    async def drain(self) -> None:
        """Wait until every read, computation, early refresh and write-back has ended.

        For tests, and for a graceful shutdown before closing the cache.
        """
        while True:
            waited = await self._reads.drain()
            waited = await self._loads.drain() or waited
            if not waited:
                return

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        bound = self._bind(args, kwargs)
        key = self._template.render(bound.arguments)
        flight = self._reads.join(key, lambda flight: self._read(key, bound, flight))
        return cast(R, await flight.wait())

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    # -- one read: hit, stale, or compute ------------------------------------------

    async def _read(
        self, key: str, bound: inspect.BoundArguments, flight: Flight[object]
    ) -> object:
        match await self._cache.get(key):
            case Success(str() as text):
                value = self._hit(key, bound, text, flight)
                if value is not _MISS:
                    return value
            case Failure() as failed if (
                self._stale is not None and outcome_of(failed) == "fallback"
            ):
                known = self._stale.recall(key, self._policy.clock())
                if known is not None:
                    value = self._decode(known.payload)
                    if value is not _MISS:
                        return value
        loaded = await self._compute(key, bound, refresh=False).wait()
        return loaded.value

    def _hit(
        self, key: str, bound: inspect.BoundArguments, text: str, flight: Flight[object]
    ) -> object:
        entry = decode_entry(text)
        if entry is None:
            return _MISS
        value = self._decode(entry.payload)
        if value is _MISS:
            return _MISS
        now = self._policy.clock()
        if self._stale is not None and not flight.forgotten:
            self._stale.remember(key, entry.payload, now)
        if self._refresh_due(entry, now):
            self._compute(key, bound, refresh=True)  # in the background; nobody waits
        return value

    def _decode(self, payload: str | None) -> object:
        if payload is None:
            return None
        try:
            return self._policy.serializer.loads(payload)
        except Exception as exc:
            _log.warning(
                "resilient_cache.value_not_decoded",
                function=self._name,
                error_type=type(exc).__name__,
            )
            return _MISS

    def _refresh_due(self, entry: Entry, now: float) -> bool:
        early = self._policy.early_refresh
        return early is not None and early.due(
            now=now, delta=entry.delta, expires_at=entry.expires_at
        )

    # -- computing and writing back ------------------------------------------------

    def _compute(
        self, key: str, bound: inspect.BoundArguments, *, refresh: bool
    ) -> Flight[_Loaded]:
        return self._loads.join(
            key,
            lambda _flight: self._load(bound, refresh=refresh),
            lambda loaded, flight: self._store(key, loaded, flight),
        )

    async def _load(self, bound: inspect.BoundArguments, *, refresh: bool) -> _Loaded:
        policy = self._policy
        started = policy.clock()
        try:
            value = await self._fn(*bound.args, **bound.kwargs)
        except Exception:
            if refresh:  # nobody waits for an early refresh: say it failed
                _log.warning("resilient_cache.refresh_failed", function=self._name, exc_info=True)
            raise
        finished = policy.clock()
        delta = max(0.0, finished - started)
        if value is None:
            if policy.negative_ttl is None:
                return _Loaded(None, None, 0, refresh)
            entry = Entry(None, finished + policy.negative_ttl, delta)
            return _Loaded(None, entry, policy.negative_ttl, refresh)
        try:
            payload = policy.serializer.dumps(value)
            decoded = policy.serializer.loads(payload)  # a miss answers what a hit would
        except Exception as exc:
            _log.warning(
                "resilient_cache.value_not_serialized",
                function=self._name,
                error_type=type(exc).__name__,
            )
            return _Loaded(value, None, 0, refresh)
        return _Loaded(decoded, Entry(payload, finished + policy.ttl, delta), policy.ttl, refresh)

    async def _store(self, key: str, loaded: _Loaded, flight: Flight[_Loaded]) -> None:
        """Write back (best effort: a failure is a miss next time); skipped if invalidated.

        An invalidation can also come while the write is on its way (a pool wait, a retry):
        its delete may then reach Redis first. So the flight is checked again once the write
        has ended, and if it was invalidated meanwhile, the key is deleted once more
        (through the outbox: deferred if that fails).
        """
        if flight.forgotten:
            return
        entry = loaded.entry
        if entry is None:
            if self._stale is not None:
                self._stale.forget(key)
            if loaded.replaces:  # the newest answer cannot be cached: drop the older one
                await self._cache.delete(key)
            return
        result = await self._cache.set(key, encode_entry(entry), loaded.ttl)
        if flight.forgotten:
            # delete again unless the write was surely refused before it could be sent: a
            # maybe_applied=False from a backend that cannot tell would leave a stale value
            if isinstance(result, Success) or not result.error.code.policy.caller_error:
                await self._outbox()._delete(key, forget=False)
            return
        if self._stale is not None:
            if isinstance(result, Failure) and result.error.code is ErrorCode.VALIDATION:
                self._stale.forget(key)  # refused by the cache (too large): not remembered
            else:
                self._stale.remember(key, entry.payload, self._policy.clock())


def _seconds(setting: str, value: object) -> int:
    checked = check_seconds("cached", None, value, name=setting)
    if isinstance(checked, CacheError):
        raise ConfigurationError(
            setting,
            f"must be a whole, positive number of seconds up to {MAX_TTL_SECONDS}, got {value!r}",
        )
    return checked


def cached(
    cache: CacheProtocol,
    *,
    key: str,
    ttl: int,
    serializer: Serializer[Any] = JSON,
    negative_ttl: int | None = None,
    early_refresh: EarlyRefresh | None = None,
    serve_stale: ServeStale | None = None,
    outbox: Outbox | None = None,
    clock: Callable[[], float] = time.time,
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
    """Cache an async function's results under a key built from its arguments.

    Args:
        cache: any ``CacheProtocol`` (the ``build_cache()`` stack, a ``MemoryCache``...).
        key: the key template, e.g. ``"user:{user_id}"`` or ``"order:{order.id}"``.
        ttl: seconds a value stays cached.
        serializer: values to text and back (default: JSON under the library's rules).
        negative_ttl: cache a ``None`` result ("not found") for this many seconds; default
            ``None``: a ``None`` result is not cached.
        early_refresh: recompute hot keys before they expire (XFetch); default off.
        serve_stale: serve the last known value while the cache is unavailable; default off.
        outbox: the :class:`~resilient_cache.patterns.Outbox` through which
            :meth:`CachedFunction.invalidate` deletes (a failed delete is replayed on
            recovery); default ``outbox_for(cache)``, looked up when needed.
        clock: seconds, shared by every process using the keys (wall-clock time by default):
            it dates the expiries stored with the values and measures computation times and
            staleness (a test seam).

    Raises:
        ConfigurationError: when decorating: a function that is not ``async def``, a key
            template that does not fit its signature, a bad ``ttl``/``negative_ttl``, a
            ``cache`` or ``serializer`` of the wrong shape, an ``outbox`` of another cache;
            no ``outbox`` for a Redis cache without a namespace (the default outbox's
            overflow action would empty the whole database).
    """
    if not isinstance(cache, CacheProtocol):
        raise ConfigurationError("cache", f"must be a CacheProtocol, got {type(cache).__name__}")
    if not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise ConfigurationError("serializer", "must have dumps(value) -> str and loads(str)")
    for setting, option, kind in (
        ("early_refresh", early_refresh, EarlyRefresh),
        ("serve_stale", serve_stale, ServeStale),
    ):
        if option is not None and not isinstance(option, kind):
            raise ConfigurationError(setting, f"must be a {kind.__name__} or None")
    if outbox is not None and not isinstance(outbox, Outbox):
        raise ConfigurationError("outbox", f"must be an Outbox or None, got {type(outbox)}")
    if outbox is not None and backend_of(outbox.cache) is not backend_of(cache):
        raise ConfigurationError("outbox", "must be an Outbox of the same cache")
    policy = _Policy(
        ttl=_seconds("ttl", ttl),
        negative_ttl=None if negative_ttl is None else _seconds("negative_ttl", negative_ttl),
        serializer=serializer,
        early_refresh=early_refresh,
        serve_stale=serve_stale,
        clock=clock,
    )

    def decorate(fn: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        name = getattr(fn, "__qualname__", repr(fn))
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError("cached", f"{name} is not an async function (async def)")
        template = KeyTemplate(key, inspect.signature(fn), name)
        return CachedFunction(fn, cache, template, policy, outbox)

    return decorate

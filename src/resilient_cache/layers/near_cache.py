"""NearCacheLayer: a bounded in-process copy of hot values, kept coherent by invalidations.

Reads (``get``, ``get_json``, ``get_many``) are served from a local LRU, without a network
call, while the invalidation channel is healthy; everything else goes to the inner stack.

Coherence: an :class:`InvalidationSource` (in production
:class:`~resilient_cache.adapters.tracking.RedisTrackingSource`, Redis's
``CLIENT TRACKING ... BCAST PREFIX <namespace>:``) tells the layer every key changed by
anyone; the local copy is dropped when the message arrives, so another instance's write
is seen here within the pub/sub latency (a fraction of a millisecond on a LAN).

Safety, in order of precedence:

* a hit is served only while ``source.healthy`` and only from an entry stored under the
  current ``source.generation``: entries from before a reconnect are never served;
* when the channel is lost, the whole near cache is flushed (metric reason
  ``channel_lost``), and so it is while the circuit breaker inside is open
  (``breaker_open``: Redis is failing, the channel is likely to follow); a server
  ``FLUSHALL``/``FLUSHDB`` flushes it too (``server_flush``);
* a value read from the inner stack is stored only if the channel was healthy when the
  read started, in the same generation, and no invalidation of that key (local or remote)
  arrived while the read was in flight: a read racing a write never stores the old value;
* every mutating call through the layer drops the key before and after the inner call
  (``flush``, ``delete_pattern`` and ``run_script``: the keys they name, or everything);
* entries are bounded by count, by bytes (key + value, UTF-8) and by age (``max_age``,
  which also bounds how long a value can outlive its Redis TTL: a key that expires is
  announced only when Redis actually deletes it);
* misses (``None``) are not cached.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from resilient_cache.domain.errors import CacheError, ConfigurationError
from resilient_cache.domain.near_cache import InvalidationSource, ManualInvalidations
from resilient_cache.domain.protocol import CacheProtocol, JsonValue
from resilient_cache.domain.result import Result, Success
from resilient_cache.domain.scripts import CacheScript, ScriptArg, ScriptReply
from resilient_cache.domain.validation import load_json
from resilient_cache.layers.base import Call, Layer, limits_of
from resilient_cache.layers.circuit_breaker import BreakerState, CircuitBreakerLayer
from resilient_cache.layers.metrics import PerRegistry

__all__ = ["InvalidationSource", "ManualInvalidations", "NearCacheLayer"]

T = TypeVar("T")

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_AGE: Final = 60.0

_WHOLE: Final = frozenset({"flush", "delete_pattern"})
_READS_THROUGH: Final = frozenset({"exists", "ttl", "ping"})


@dataclass(frozen=True, slots=True)
class _Families:
    lookups: Counter
    invalidations: Counter
    flushes: Counter
    entries: Gauge


def _make_families(registry: CollectorRegistry) -> _Families:
    return _Families(
        lookups=Counter(
            "resilient_cache_near_cache_lookups",
            "Keys looked up in the near cache, by result (hit or miss).",
            ["cache", "result"],
            registry=registry,
        ),
        invalidations=Counter(
            "resilient_cache_near_cache_invalidations",
            "Keys invalidated by messages from the invalidation channel.",
            ["cache"],
            registry=registry,
        ),
        flushes=Counter(
            "resilient_cache_near_cache_flushes",
            "Whole near-cache flushes, by reason.",
            ["cache", "reason"],
            registry=registry,
        ),
        entries=Gauge(
            "resilient_cache_near_cache_entries",
            "Entries held in the near cache.",
            ["cache"],
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )


_families = PerRegistry(_make_families)
"""The metric families of a registry, made on first use (once per registry)."""


@dataclass(slots=True)
class _Entry:
    text: str | None  # from get / get_many
    json_text: str | None  # from get_json, re-encoded (so each hit returns a fresh value)
    size: int
    generation: int
    stored_at: float


class NearCacheLayer(Layer):
    """A bounded in-process LRU in front of ``inner``, coherent through ``invalidations``.

    Args:
        inner: the stack to read through and write to.
        invalidations: the channel (see :class:`InvalidationSource`); one per layer.
        max_entries: at most this many keys held.
        max_bytes: at most this many bytes of keys and values (UTF-8) held.
        max_age: seconds an entry is served at most, whatever the channel says.
        clock: a monotonic clock (a seam for tests).
        cache_name: the ``cache`` label of the metrics.
        registry: where the metrics live (``None``: no metrics).

    Raises:
        ConfigurationError: a limit that is not positive.
    """

    name = "near_cache"

    def __init__(
        self,
        inner: CacheProtocol,
        invalidations: InvalidationSource,
        *,
        max_entries: int = 10_000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
        cache_name: str = "default",
        registry: CollectorRegistry | None = None,
    ) -> None:
        for setting, value in (
            ("max_entries", max_entries), ("max_bytes", max_bytes), ("max_age", max_age)
        ):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"near_cache.{setting}", "must be a positive number")
        super().__init__(inner)
        self._source = invalidations
        self._max_entries = int(max_entries)
        self._max_bytes = int(max_bytes)
        # a bigger get_many is the backend's to refuse
        self._batch_keys = limits_of(inner).max_batch_keys
        self._max_age = float(max_age)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._in_flight: dict[str, int] = {}  # key -> reads under way
        self._dirty: set[str] = set()  # keys invalidated while a read of them was under way
        self._flushes = 0  # whole flushes so far: a read spanning one stores nothing
        self._cache = cache_name
        m = _families(registry) if registry is not None else None
        self._hit_count = m.lookups.labels(cache_name, "hit").inc if m else None
        self._miss_count = m.lookups.labels(cache_name, "miss").inc if m else None
        self._invalidated_count = m.invalidations.labels(cache_name).inc if m else None
        self._flush_counter = m.flushes if m else None
        self._entries_gauge = m.entries.labels(cache_name) if m else None
        if m is not None:
            for reason in ("channel_lost", "breaker_open", "server_flush", "local"):
                m.flushes.labels(cache_name, reason)
        invalidations.add_listener(self._on_invalidation)
        self._breaker_open = False
        self._closing = False
        breaker = self.find(CircuitBreakerLayer)
        if breaker is not None:
            breaker.add_listener(self.on_breaker_transition)

    def __repr__(self) -> str:
        return (
            f"NearCacheLayer({self._inner!r}, entries={len(self._entries)}, "
            f"bytes={self._bytes}, source={self._source!r})"
        )

    @property
    def source(self) -> InvalidationSource:
        """The invalidation channel."""
        return self._source

    @property
    def serving(self) -> bool:
        """Whether hits are served now: the channel is healthy, the breaker not open."""
        return self._source.healthy and not self._breaker_open

    def on_breaker_transition(self, old: BreakerState, new: BreakerState) -> None:
        """A breaker listener (registered with the first CircuitBreakerLayer inside): while
        it is open, flushed and not serving; from half-open on, serving again."""
        if new is BreakerState.OPEN and not self._breaker_open:
            self._breaker_open = True
            self._flush("breaker_open")
        elif new is not BreakerState.OPEN:
            self._breaker_open = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of keys and values held."""
        return self._bytes

    async def aclose(self) -> None:
        """Stop the invalidation channel, forget everything, close the stack."""
        self._closing = True  # the channel's loss on close is no loss to count
        try:
            await self._source.aclose()
        finally:
            self._closing = False
        self._flush(None)
        await super().aclose()

    # -- invalidation ------------------------------------------------------------------

    def _on_invalidation(self, keys: Sequence[str] | None) -> None:
        if keys is None:
            if self._closing:
                self._flush(None)
            else:
                self._flush("server_flush" if self._source.healthy else "channel_lost")
            return
        for key in keys:
            self._drop(key)
            if self._invalidated_count is not None:
                self._invalidated_count()

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            self._gauge()
        if key in self._in_flight:
            self._dirty.add(key)

    def _flush(self, reason: str | None) -> None:
        self._flushes += 1
        had = bool(self._entries)
        self._entries.clear()
        self._bytes = 0
        self._gauge()
        if reason is not None and self._flush_counter is not None and (had or reason != "local"):
            self._flush_counter.labels(self._cache, reason).inc()

    def _gauge(self) -> None:
        if self._entries_gauge is not None:
            self._entries_gauge.set(len(self._entries))

    # -- the local LRU -----------------------------------------------------------------

    def _lookup(self, key: str) -> _Entry | None:
        source = self._source
        source.start()
        entry = self._entries.get(key)
        if entry is not None:
            if (
                not self.serving
                or entry.generation != source.generation
                or self._clock() - entry.stored_at >= self._max_age
            ):
                self._drop(key)
                entry = None
            else:
                self._entries.move_to_end(key)
        return entry

    def _count(self, hits: int, misses: int) -> None:
        if self._hit_count is not None and self._miss_count is not None:
            if hits:
                self._hit_count(hits)
            if misses:
                self._miss_count(misses)

    def _begin(self, keys: Sequence[str]) -> tuple[int, int] | None:
        """Mark reads of ``keys`` under way: the token to store their results, if any."""
        for key in keys:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        if not self.serving:
            return None
        return self._source.generation, self._flushes

    def _end(self, keys: Sequence[str]) -> set[str]:
        """The reads of ``keys`` are done: those invalidated meanwhile (not to store)."""
        dirty = {key for key in keys if key in self._dirty}
        for key in keys:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]
                self._dirty.discard(key)
        return dirty

    def _store(
        self, token: tuple[int, int] | None, key: str, *, text: str | None, json_text: str | None
    ) -> None:
        source = self._source
        if token is None or not self.serving or token != (source.generation, self._flushes):
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
            if old.generation == token[0]:  # keep the other form of the same value
                both = (
                    text if text is not None else old.text,
                    json_text if json_text is not None else old.json_text,
                )
                if _size(key, *both) <= self._max_bytes:
                    text, json_text = both
        size = _size(key, text, json_text)  # every form held counts
        if size > self._max_bytes:
            self._gauge()
            return
        self._entries[key] = _Entry(text, json_text, size, token[0], self._clock())
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
        self._gauge()

    # -- reads -------------------------------------------------------------------------

    async def get(self, key: str) -> Result[str | None, CacheError]:
        """See :meth:`CacheProtocol.get`; a hit is served locally."""
        if not isinstance(key, str):
            return await self._inner.get(key)  # the inner cache says what is wrong
        entry = self._lookup(key)
        if entry is not None and entry.text is not None:
            self._count(1, 0)
            return Success(entry.text)
        self._count(0, 1)
        token = self._begin((key,))
        try:
            result = await self._inner.get(key)
        finally:
            dirty = self._end((key,))
        if type(result) is Success and result.value is not None and not dirty:
            self._store(token, key, text=result.value, json_text=None)
        return result

    async def get_json(self, key: str) -> Result[JsonValue, CacheError]:
        """See :meth:`CacheProtocol.get_json`; a hit is decoded afresh each time."""
        if not isinstance(key, str):
            return await self._inner.get_json(key)
        entry = self._lookup(key)
        if entry is not None and entry.json_text is not None:
            self._count(1, 0)
            return Success(json.loads(entry.json_text))
        if entry is not None and entry.text is not None:
            self._count(1, 0)
            return load_json("get_json", key, entry.text)
        self._count(0, 1)
        token = self._begin((key,))
        try:
            result = await self._inner.get_json(key)
        finally:
            dirty = self._end((key,))
        if type(result) is Success and result.value is not None and not dirty:
            try:
                encoded = json.dumps(result.value, allow_nan=False, separators=(",", ":"))
            except (TypeError, ValueError):  # not from a strict decoder: do not hold it
                return result
            self._store(token, key, text=None, json_text=encoded)
        return result

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """See :meth:`CacheProtocol.get_many`; only the keys not held locally are fetched."""
        if (
            not isinstance(keys, list)
            or len(keys) > self._batch_keys
            or not all(isinstance(key, str) for key in keys)
        ):
            return await self._inner.get_many(keys)  # the inner cache says what is wrong
        found: dict[str, str | None] = {}
        missing: dict[str, None] = {}  # ordered, without duplicates
        for key in keys:
            entry = self._lookup(key)
            if entry is not None and entry.text is not None:
                found[key] = entry.text
            else:
                missing[key] = None
        self._count(len(found), len(missing))
        if not missing:
            return Success({key: found[key] for key in keys})
        fetch = list(missing)
        token = self._begin(fetch)
        try:
            result = await self._inner.get_many(fetch)
        finally:
            dirty = self._end(fetch)
        if type(result) is not Success:
            return result
        for key, value in result.value.items():
            if value is not None and key not in dirty:
                self._store(token, key, text=value, json_text=None)
        fetched = result.value
        return Success({key: found[key] if key in found else fetched.get(key) for key in keys})

    # -- writes: drop the local copy before and after --------------------------------

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        if operation in _READS_THROUGH or (key is not None and not isinstance(key, str)):
            return await call()
        if key is None or operation in _WHOLE:
            self._flush("local")
            try:
                return await call()
            finally:
                self._flush(None)
        self._drop_around_start(key)
        try:
            return await call()
        finally:
            self._drop(key)
            self._end((key,))

    def _drop_around_start(self, key: str) -> None:
        # counted as a read under way, so that a read finishing during the write is dirty
        self._begin((key,))
        self._drop(key)
        self._dirty.add(key)

    async def set_many(
        self, mapping: dict[str, str], ttl: int | None = None
    ) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.set_many`; drops the local copies of its keys."""
        keys = [key for key in mapping if isinstance(key, str)] if isinstance(mapping, dict) else []
        for key in keys:
            self._drop_around_start(key)
        try:
            return await self._inner.set_many(mapping, ttl)
        finally:
            for key in keys:
                self._drop(key)
            self._end(keys)

    async def run_script(
        self, script: CacheScript, keys: Sequence[str], args: Sequence[ScriptArg] = ()
    ) -> Result[ScriptReply, CacheError]:
        """See :meth:`ScriptRunner.run_script`; drops the local copies of the keys it names
        (a script naming no key flushes the near cache: it may write anything)."""
        names = [k for k in keys if isinstance(k, str)] if isinstance(keys, list | tuple) else []
        for key in names:
            self._drop_around_start(key)
        try:
            return await super().run_script(script, keys, args)
        finally:
            for key in names:
                self._drop(key)
            self._end(names)


def _size(key: str, text: str | None, json_text: str | None) -> int:
    """Bytes an entry holds: its key and every form of its value (UTF-8)."""
    return len(key.encode()) + len((text or "").encode()) + len((json_text or "").encode())

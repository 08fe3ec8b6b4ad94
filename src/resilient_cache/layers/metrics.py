"""MetricsLayer: Prometheus metrics of what the caller sees, in the project's vocabulary.

The outermost layer: it times every call as the caller experiences it (retries, backoff
and waiting included) and classifies its outcome:

* ``success``: a ``Success``;
* ``fallback``: a ``Failure`` because the cache was unavailable (connection, timeout,
  circuit open, readonly, out of memory, auth, tls, backend); the caller served from the
  source of truth (fail-open);
* ``error``: a ``Failure`` caused by the request itself (validation, serialization,
  wrong type).

Retries, retry-budget exhaustion and breaker transitions happen further in; they reach this
layer through listeners that :func:`~resilient_cache.build_cache` registers, so nothing is
wrapped twice. Metric families are created once per registry and shared by every cache in
it, told apart by the ``cache`` label. Never a key, a value or a message as a label.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from resilient_cache.domain.backend import PoolStats
from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.layers.base import Call, Layer
from resilient_cache.layers.circuit_breaker import BreakerState

T = TypeVar("T")

BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Histogram buckets, 100 us to 10 s: a cache hit to a call far past any deadline."""

_LOOKUPS: Final = frozenset({"get", "get_json"})

_TRANSITIONS: Final = (
    (BreakerState.CLOSED, BreakerState.OPEN),
    (BreakerState.OPEN, BreakerState.HALF_OPEN),
    (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    (BreakerState.HALF_OPEN, BreakerState.OPEN),
)


def _multiprocess() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ


def outcome_of(result: Result[object, CacheError]) -> str:
    """``success``, ``fallback`` or ``error`` (see the module docstring)."""
    if isinstance(result, Success):
        return "success"
    return "error" if result.error.code.policy.caller_error else "fallback"


F = TypeVar("F")


class PerRegistry(Generic[F]):
    """Metric families made once per Prometheus registry and shared by every instrumented
    object in it (prometheus-client refuses a second family of one name in a registry).

    ``PerRegistry(make)(registry)`` calls ``make(registry)`` the first time, and returns
    the same families afterwards; ``None`` means prometheus-client's global registry. A
    registry that nobody holds any more is forgotten.
    """

    def __init__(self, make: Callable[[CollectorRegistry], F]) -> None:
        self._make = make
        self._made: WeakKeyDictionary[CollectorRegistry, F] = WeakKeyDictionary()

    def __call__(self, registry: CollectorRegistry | None) -> F:
        registry = registry if registry is not None else REGISTRY
        made = self._made.get(registry)
        if made is None:
            made = self._made[registry] = self._make(registry)
        return made


@dataclass(frozen=True, slots=True)
class _Families:
    duration: Histogram
    gets: Counter
    errors: Counter
    retries: Counter
    budget_exhausted: Counter
    breaker_state: Gauge
    transitions: Counter
    pool: Gauge


def _make_families(registry: CollectorRegistry) -> _Families:
    return _Families(
        duration=Histogram(
            "resilient_cache_operation_duration_seconds",
            "Duration of cache calls as the caller sees them, retries included.",
            ["cache", "operation", "outcome"],
            buckets=BUCKETS,
            registry=registry,
        ),
        gets=Counter(
            "resilient_cache_gets",
            "Keys looked up, by result (a get_many counts each key).",
            ["cache", "result"],
            registry=registry,
        ),
        errors=Counter(
            "resilient_cache_errors",
            "Failed calls, by operation and error code.",
            ["cache", "operation", "error_type"],
            registry=registry,
        ),
        retries=Counter(
            "resilient_cache_retries",
            "Retries, by operation and the error that caused them.",
            ["cache", "operation", "error_type"],
            registry=registry,
        ),
        budget_exhausted=Counter(
            "resilient_cache_retry_budget_exhausted",
            "Retries refused because the retry budget was spent.",
            ["cache"],
            registry=registry,
        ),
        breaker_state=Gauge(
            "resilient_cache_circuit_breaker_state",
            "Circuit breaker state, one-hot: 1 for the current state.",
            ["cache", "state"],
            registry=registry,
            multiprocess_mode="livemax",
        ),
        transitions=Counter(
            "resilient_cache_circuit_breaker_transitions",
            "Circuit breaker state transitions.",
            ["cache", "from_state", "to_state"],
            registry=registry,
        ),
        pool=Gauge(
            "resilient_cache_pool_connections",
            "Connections in the pool, by state.",
            ["cache", "state"],
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )


_families = PerRegistry(_make_families)
"""The metric families of a registry, made on first use (once per registry)."""


class MetricsLayer(Layer):
    """Records Prometheus metrics for every call; also a listener for the inner layers.

    Args:
        inner: the cache to measure (in the built stack, everything further in).
        cache_name: the ``cache`` label (default ``"default"``).
        registry: where the metrics live (default: prometheus-client's global registry).
    """

    name = "metrics"

    def __init__(
        self,
        inner: CacheProtocol,
        *,
        cache_name: str = "default",
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(inner)
        self._cache = cache_name
        self._m = _families(registry)
        self._durations: dict[tuple[str, str], Callable[[float], None]] = {}
        self._successes: dict[str, Callable[[float], None]] = {}  # the hot path, one lookup
        self._after_call: Callable[[], None] | None = None
        self._error_counts: dict[tuple[str, ErrorCode], Callable[[], None]] = {}
        self._hits = self._m.gets.labels(cache_name, "hit")
        self._misses = self._m.gets.labels(cache_name, "miss")
        self._fallbacks = self._m.gets.labels(cache_name, "fallback")
        # exported from 0 on, so that the first increment shows in rate() and increase()
        self._budget = self._m.budget_exhausted.labels(cache_name)
        for old, new in _TRANSITIONS:
            self._m.transitions.labels(cache_name, old.value, new.value)
        self.on_breaker_transition(BreakerState.CLOSED, BreakerState.CLOSED)

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        started = time.perf_counter()
        result = await call()
        seconds = time.perf_counter() - started
        if type(result) is Success:
            observe = self._successes.get(operation) or self._success_series(operation)
            observe(seconds)
            if operation in _LOOKUPS:
                (self._misses if result.value is None else self._hits).inc()
        else:
            self._observe(operation, result, seconds)
            if operation in _LOOKUPS:
                self._count_lookups(result, 1)
        if self._after_call is not None:
            self._after_call()
        return result

    def _success_series(self, operation: str) -> Callable[[float], None]:
        observe = self._m.duration.labels(self._cache, operation, "success").observe
        self._successes[operation] = observe
        return observe

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """See :meth:`CacheProtocol.get_many`; each key counts as one lookup."""
        result = await super().get_many(keys)
        refused = isinstance(result, Failure) and result.error.code.policy.caller_error
        if isinstance(keys, list | tuple) and not refused:  # a refused batch is no lookup
            distinct = {key for key in keys if isinstance(key, str)}  # bad input never raises
            self._count_lookups(result, len(distinct))
        return result

    def _observe(self, operation: str, result: Result[object, CacheError], seconds: float) -> None:
        outcome = outcome_of(result)
        observe = self._durations.get((operation, outcome))
        if observe is None:
            observe = self._m.duration.labels(self._cache, operation, outcome).observe
            self._durations[operation, outcome] = observe
        observe(seconds)
        if isinstance(result, Failure):
            code = result.error.code
            count = self._error_counts.get((operation, code))
            if count is None:
                count = self._m.errors.labels(self._cache, operation, code.value).inc
                self._error_counts[operation, code] = count
            count()

    def _count_lookups(self, result: Result[object, CacheError], keys: int) -> None:
        match result:
            case Failure(error) if error.code.policy.caller_error:
                pass  # a rejected request is not a lookup (it is in errors_total)
            case Failure():
                self._fallbacks.inc(keys)
            case Success(dict() as found):
                hits = sum(1 for value in found.values() if value is not None)
                self._hits.inc(hits)
                self._misses.inc(len(found) - hits)
            case Success(None):
                self._misses.inc()
            case Success(_):
                self._hits.inc()

    # -- listeners for the inner layers (wired by build_cache) ----------------------

    def on_retry(self, operation: str, error: CacheError) -> None:
        """Count a retry and its cause."""
        self._m.retries.labels(self._cache, operation, error.code.value).inc()

    def on_budget_exhausted(self, operation: str) -> None:
        """Count a retry refused by the budget."""
        self._budget.inc()

    def on_breaker_transition(self, old: BreakerState, new: BreakerState) -> None:
        """Move the one-hot state gauge; count the transition."""
        for state in BreakerState:
            self._m.breaker_state.labels(self._cache, state.value).set(int(state is new))
        if old is not new:
            self._m.transitions.labels(self._cache, old.value, new.value).inc()

    def watch_pool(self, stats: Callable[[], PoolStats]) -> None:
        """Report the pool's idle/used connections.

        Read at each scrape; in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), where a
        gauge cannot call back into a worker, updated after each call instead.
        """
        idle = self._m.pool.labels(self._cache, "idle")
        used = self._m.pool.labels(self._cache, "used")
        if _multiprocess():

            def update() -> None:
                snapshot = stats()
                idle.set(snapshot.idle)
                used.set(snapshot.in_use)

            self._after_call = update
        else:
            idle.set_function(lambda: stats().idle)
            used.set_function(lambda: stats().in_use)

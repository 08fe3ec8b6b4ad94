"""The invalidation outbox's metrics and structlog events, in the project's vocabulary.

Metric families are created once per registry and shared by every outbox in it, told apart
by the ``cache`` label, like :mod:`resilient_cache.layers.metrics`. The pending gauge moves
by increments, so that two outboxes of one name add up instead of overwriting each other.

=============================================  =======  ===================================
event                                          level    when
=============================================  =======  ===================================
``resilient_cache.invalidation_deferred``      warning  an invalidation failed and was
                                                        recorded (debug while others are
                                                        owed already: one warning an outage)
``resilient_cache.invalidations_replayed``     info     a replay applied deferred ones
``resilient_cache.outbox_overflowed``          error    the outbox is full: the wholesale
                                                        action is now owed
``resilient_cache.overflow_flushed``           warning  the wholesale action ran
``resilient_cache.overflow_failed``            error    the custom wholesale action raised
                                                        (it stays owed)
``resilient_cache.invalidation_dropped``       error    an invalidation will never be
                                                        applied (``reason``: ``rejected``,
                                                        ``failing``, ``closed``); warning
                                                        for ``invalid`` (a key the cache
                                                        refuses: nothing is stored there)
``resilient_cache.invalidations_abandoned``    error    the outbox closed with some owed
``resilient_cache.outbox_task_failed``         error    a background task crashed (a bug)
=============================================  =======  ===================================

Never a value; a key or pattern only with ``log_keys=True`` (keys can hold personal data).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from resilient_cache.layers.metrics import PerRegistry
from resilient_cache.log import get_logger

OPERATIONS: Final = ("delete", "delete_pattern")
"""The invalidations an outbox records (the ``operation`` label)."""

DROP_REASONS: Final = ("invalid", "rejected", "failing", "closed")
"""Why an invalidation was dropped (the ``reason`` label):

* ``invalid``: a key or pattern the cache refuses (too long...): nothing can be stored
  under it, so there is nothing to invalidate;
* ``rejected``: its replay was refused as the request's own fault (``validation``...);
* ``failing``: it failed ``MAX_ATTEMPTS`` replays while the cache answered other calls;
* ``closed``: it failed on an outbox already closed, which replays nothing.
"""


@dataclass(frozen=True, slots=True)
class _Families:
    pending: Gauge
    deferred: Counter
    replayed: Counter
    overflows: Counter
    dropped: Counter


def _make_families(registry: CollectorRegistry) -> _Families:
    return _Families(
        pending=Gauge(
            "resilient_cache_invalidations_pending",
            "Invalidations that failed and wait in the outbox for the cache to recover.",
            ["cache"],
            registry=registry,
            multiprocess_mode="livesum",
        ),
        deferred=Counter(
            "resilient_cache_invalidations_deferred",
            "Invalidations that failed and were recorded in the outbox.",
            ["cache", "operation"],
            registry=registry,
        ),
        replayed=Counter(
            "resilient_cache_invalidations_replayed",
            "Deferred invalidations applied after recovery (flush / on_overflow: the "
            "wholesale action that replaced them after an overflow).",
            ["cache", "operation"],
            registry=registry,
        ),
        overflows=Counter(
            "resilient_cache_invalidation_overflows",
            "Times the outbox overflowed, owing a wholesale invalidation.",
            ["cache"],
            registry=registry,
        ),
        dropped=Counter(
            "resilient_cache_invalidations_dropped",
            "Invalidations the outbox will never apply, by reason (invalid, rejected, "
            "failing, closed).",
            ["cache", "reason"],
            registry=registry,
        ),
    )


_families = PerRegistry(_make_families)
"""The metric families of a registry, made on first use (once per registry)."""


class OutboxTelemetry:
    """Counts and logs what an outbox does; one per outbox.

    Args:
        cache_name: the ``cache`` label and log key.
        overflow_action: the ``operation`` label of the wholesale replay (``flush`` or
            ``on_overflow``).
        registry: the Prometheus registry (default: prometheus-client's global one).
        logger: a structlog logger (default: ``get_logger()``).
        log_keys: include the key or pattern in ``invalidation_deferred``.
    """

    def __init__(
        self,
        cache_name: str,
        overflow_action: str,
        *,
        registry: CollectorRegistry | None,
        logger: Any,
        log_keys: bool,
    ) -> None:
        self._cache = cache_name
        self._action = overflow_action
        self._log = logger if logger is not None else get_logger()
        self._log_keys = log_keys
        m = _families(registry)
        self._m = m
        self._pending = m.pending.labels(cache_name)
        self._reported = 0
        # exported from 0 on, so that the first increment shows in rate() and increase()
        self._overflows = m.overflows.labels(cache_name)
        for operation in (*OPERATIONS, overflow_action):
            m.replayed.labels(cache_name, operation)
        for operation in OPERATIONS:
            m.deferred.labels(cache_name, operation)
        for reason in DROP_REASONS:
            m.dropped.labels(cache_name, reason)

    def pending(self, count: int) -> None:
        """Report how many invalidations this outbox owes now."""
        self._pending.inc(count - self._reported)
        self._reported = count

    def deferred(
        self, operation: str, target: str, error_type: str, pending: int, first: bool
    ) -> None:
        self._m.deferred.labels(self._cache, operation).inc()
        fields: dict[str, Any] = {
            "cache": self._cache,
            "operation": operation,
            "error_type": error_type,
            "pending": pending,
        }
        if self._log_keys:
            fields["key"] = target
        level = "warning" if first else "debug"
        getattr(self._log, level)("resilient_cache.invalidation_deferred", **fields)

    def replayed(self, operation: str) -> None:
        self._m.replayed.labels(self._cache, operation).inc()

    def replay_done(self, replayed: int, pending: int) -> None:
        self._log.info(
            "resilient_cache.invalidations_replayed",
            cache=self._cache,
            replayed=replayed,
            pending=pending,
        )

    def overflowed(self, reason: str, max_pending: int) -> None:
        self._overflows.inc()
        self._log.error(
            "resilient_cache.outbox_overflowed",
            cache=self._cache,
            reason=reason,
            max_pending=max_pending,
            action=self._action,
        )

    def overflow_applied(self, covered: int) -> None:
        self._m.replayed.labels(self._cache, self._action).inc()
        self._log.warning(
            "resilient_cache.overflow_flushed",
            cache=self._cache,
            action=self._action,
            covered=covered,
        )

    def overflow_failed(self) -> None:
        """The custom wholesale action raised (call from the ``except`` block)."""
        self._log.error(
            "resilient_cache.overflow_failed", cache=self._cache, action=self._action, exc_info=True
        )

    def dropped(
        self, operation: str, target: str, reason: str, error_type: str, attempts: int = 0
    ) -> None:
        self._m.dropped.labels(self._cache, reason).inc()
        fields: dict[str, Any] = {
            "cache": self._cache,
            "operation": operation,
            "reason": reason,
            "error_type": error_type,
        }
        if attempts:
            fields["attempts"] = attempts
        if self._log_keys:
            fields["key"] = target
        level = "warning" if reason == "invalid" else "error"
        getattr(self._log, level)("resilient_cache.invalidation_dropped", **fields)

    def task_failed(self, task: asyncio.Task[Any]) -> None:
        """A done-callback: log a background task that ended with an exception."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error(
                "resilient_cache.outbox_task_failed",
                cache=self._cache,
                task=task.get_name(),
                exc_info=exc,
            )

    def abandoned(self, pending: int, overflowed: bool) -> None:
        self._log.error(
            "resilient_cache.invalidations_abandoned",
            cache=self._cache,
            pending=pending,
            overflowed=overflowed,
        )

"""LoggingLayer: structlog events for what went wrong, in the project's vocabulary.

Events are named ``resilient_cache.<noun>_<past verb>`` and carry the metric labels as keys
(``cache``, ``operation``, ``error_type``):

==============================================  =======  ===================================
event                                           level    when
==============================================  =======  ===================================
``resilient_cache.call_failed``                 warning  a call returned a Failure (for
                                                         CIRCUIT_OPEN only with ``debug=True``,
                                                         at debug: the circuit's own events
                                                         already tell)
``resilient_cache.call_succeeded``              debug    a call succeeded (only with
                                                         ``debug=True``)
``resilient_cache.call_retried``                info     a retry is about to happen
``resilient_cache.retry_budget_exhausted``      warning  the budget refused a retry
``resilient_cache.circuit_opened``              error    the breaker opened
``resilient_cache.circuit_half_opened``         info     the breaker lets probes through
``resilient_cache.circuit_closed``              info     the breaker closed again
==============================================  =======  ===================================

Never a value; a key only with ``log_keys=True``; passwords never (error messages are
already scrubbed by the adapter). The library never configures structlog or logging: the
application decides where events go.
"""

from __future__ import annotations

import time
from typing import Any, Final, TypeVar

from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result
from resilient_cache.layers.base import Call, Layer
from resilient_cache.layers.circuit_breaker import BreakerState
from resilient_cache.log import get_logger

T = TypeVar("T")

_TRANSITION_EVENTS: Final = {
    BreakerState.OPEN: ("resilient_cache.circuit_opened", "error"),
    BreakerState.HALF_OPEN: ("resilient_cache.circuit_half_opened", "info"),
    BreakerState.CLOSED: ("resilient_cache.circuit_closed", "info"),
}


class LoggingLayer(Layer):
    """Logs failures, retries and breaker transitions with structlog.

    Args:
        inner: the cache whose calls to log.
        cache_name: the ``cache`` key of every event.
        logger: a structlog logger (default: :func:`resilient_cache.log.get_logger`, silent until
            the application configures logging or structlog).
        log_keys: include the key in failure events (off by default: keys can hold PII).
        debug: also log every successful call, at debug level.
    """

    name = "logging"

    def __init__(
        self,
        inner: CacheProtocol,
        *,
        cache_name: str = "default",
        logger: Any = None,
        log_keys: bool = False,
        debug: bool = False,
    ) -> None:
        super().__init__(inner)
        self._log = logger if logger is not None else get_logger()
        self._cache = cache_name
        self._log_keys = log_keys
        self._debug = debug

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        started = time.perf_counter()
        result = await call()
        if isinstance(result, Failure):
            error = result.error
            circuit_open = error.code is ErrorCode.CIRCUIT_OPEN
            if circuit_open and not self._debug:
                return result  # the circuit's own events tell; no flood while it is open
            fields: dict[str, Any] = {
                "cache": self._cache,
                "operation": operation,
                "error_type": error.code.value,
                "error": error.message,
                "maybe_applied": error.maybe_applied,
                "duration_s": round(time.perf_counter() - started, 6),
            }
            if self._log_keys and key is not None:
                fields["key"] = key
            level = "debug" if circuit_open else "warning"
            getattr(self._log, level)("resilient_cache.call_failed", **fields)
        elif self._debug:
            self._log.debug(
                "resilient_cache.call_succeeded",
                cache=self._cache,
                operation=operation,
                duration_s=round(time.perf_counter() - started, 6),
            )
        return result

    def on_retry(self, operation: str, error: CacheError) -> None:
        """Log a retry and its cause."""
        self._log.info(
            "resilient_cache.call_retried",
            cache=self._cache,
            operation=operation,
            error_type=error.code.value,
        )

    def on_budget_exhausted(self, operation: str) -> None:
        """Log a retry refused by the budget."""
        self._log.warning(
            "resilient_cache.retry_budget_exhausted", cache=self._cache, operation=operation
        )

    def on_breaker_transition(self, old: BreakerState, new: BreakerState) -> None:
        """Log a breaker transition."""
        event, level = _TRANSITION_EVENTS[new]
        getattr(self._log, level)(
            event, cache=self._cache, from_state=old.value, to_state=new.value
        )

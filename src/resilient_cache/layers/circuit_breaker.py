"""CircuitBreakerLayer: stop calling a Redis that keeps failing, and probe it to heal.

pybreaker holds the state (closed / open / half-open), the failure and success counters
and the listeners, but its call path does not fit asyncio: ``call_async`` needs Tornado,
its half-open state admits every caller at once, and it counts ``CancelledError`` as a
failure. So this layer drives pybreaker's state machine itself:

* **closed**: calls pass; ``fail_max`` consecutive failures whose error ``trips_breaker``
  (the table in errors.py: connection, timeout; optionally out-of-memory) open the circuit.
  A single connection reset never does: it takes ``fail_max`` failures in a row. Any answer from
  Redis, even an error reply such as WRONGTYPE, resets the count.
* **open**: calls return ``Failure(CIRCUIT_OPEN)`` at once, without any I/O, for the open
  time; it starts at ``reset_timeout`` and doubles, up to ``reset_timeout_max``, each time
  a probe fails, so a long outage is probed less and less often.
* **half-open**: at most ``half_open_permits`` calls at a time go through as probes; the
  others fail fast. ``success_threshold`` successful probes close the circuit (and reset
  the open time); one failed probe opens it again.

A call cut by the deadline of the retry layer counts as a TIMEOUT failure; a call the
caller cancelled counts neither as a failure nor as a success. Either way a probe gives its
permit back. A ``VALIDATION`` or ``SERIALIZATION`` failure says nothing about Redis's health and
is ignored, as is ``CIRCUIT_OPEN`` from further in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Final, TypeVar

import pybreaker

from resilient_cache.domain import defaults
from resilient_cache.domain.deadline import QUEUED, connection_state
from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.listeners import notify
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result
from resilient_cache.layers.base import Call, Layer, deadline_expired

T = TypeVar("T")


class BreakerState(StrEnum):
    """The circuit's state; the value is the metric label."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_FROM_PYBREAKER: Final = {
    pybreaker.STATE_CLOSED: BreakerState.CLOSED,
    pybreaker.STATE_HALF_OPEN: BreakerState.HALF_OPEN,
    pybreaker.STATE_OPEN: BreakerState.OPEN,
}

_FAIR_CHANCE: Final = 0.05
"""Seconds a call must have held its connection for a deadline cut to blame Redis."""

_DEADLINE_HIT: Final = CacheError.of(
    ErrorCode.TIMEOUT, "cut by the call's deadline", operation="(deadline)"
)

BreakerListener = Callable[[BreakerState, BreakerState], None]
"""Called on every transition with ``(from_state, to_state)``."""


class _Relay(pybreaker.CircuitBreakerListener):
    """Forwards pybreaker's state changes to plain callables."""

    def __init__(self, listeners: list[BreakerListener]) -> None:
        self._listeners = listeners

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = _FROM_PYBREAKER[old_state.name] if old_state else BreakerState.CLOSED
        notify(self._listeners, old, _FROM_PYBREAKER[new_state.name])


def check_open_times(
    reset_timeout: float, reset_timeout_max: float, *, setting: str = "reset_timeout"
) -> None:
    """The breaker's rule for its open times, for the layer and the settings alike.

    Raises:
        ConfigurationError: unless ``0 < reset_timeout <= reset_timeout_max`` (naming
            ``setting``).
    """
    if not reset_timeout > 0:
        raise ConfigurationError(
            setting, f"must be a positive number of seconds, got {reset_timeout!r}"
        )
    if reset_timeout > reset_timeout_max:
        raise ConfigurationError(setting, "must not exceed reset_timeout_max")


class CircuitBreakerLayer(Layer):
    """A circuit breaker around one cache (normally the RedisAdapter).

    Args:
        inner: the cache to protect.
        fail_max: consecutive tripping failures that open the circuit (default 5).
        reset_timeout: first open time, seconds (default 5).
        reset_timeout_max: cap of the open time as it doubles (default 60).
        success_threshold: successful probes needed to close (default 2).
        half_open_permits: probes allowed at once in half-open (default 1).
        count_out_of_memory: let OUT_OF_MEMORY trip the circuit (default ``False``).
        clock: a monotonic clock in seconds (inject one in tests).
    """

    name = "circuit_breaker"

    def __init__(
        self,
        inner: CacheProtocol,
        *,
        fail_max: int = defaults.FAIL_MAX,
        reset_timeout: float = defaults.RESET_TIMEOUT,
        reset_timeout_max: float = defaults.RESET_TIMEOUT_MAX,
        success_threshold: int = defaults.SUCCESS_THRESHOLD,
        half_open_permits: int = defaults.HALF_OPEN_PERMITS,
        count_out_of_memory: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        for setting, value in (
            ("fail_max", fail_max),
            ("success_threshold", success_threshold),
            ("half_open_permits", half_open_permits),
        ):
            if value < 1:
                raise ConfigurationError(setting, f"must be >= 1, got {value!r}")
        check_open_times(reset_timeout, reset_timeout_max)
        self._storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._listeners: list[BreakerListener] = []
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            success_threshold=success_threshold,
            state_storage=self._storage,
            listeners=[_Relay(self._listeners)],
        )
        self._base_open_time = reset_timeout
        self._max_open_time = reset_timeout_max
        self._open_time = reset_timeout
        self._opened_at = 0.0
        self._permits = half_open_permits
        self._probes = 0
        self._count_out_of_memory = count_out_of_memory
        self._clock = clock

    @property
    def state(self) -> BreakerState:
        """The current state (``OPEN`` until a call finds the open time over)."""
        return _FROM_PYBREAKER[self._breaker.current_state]

    @property
    def open_time(self) -> float:
        """How long the circuit stays open after its latest trip, in seconds."""
        return self._open_time

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener(from_state, to_state)`` on every transition."""
        self._listeners.append(listener)

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        probe = self._admit()
        if probe is None:
            return Failure(self._rejection(operation, key))
        token = connection_state.set(None)
        try:
            result = await call()
        except asyncio.CancelledError:
            # cut by the call's deadline: Redis was too slow, unless the call was still
            # waiting for a pooled connection (the client was saturated, not Redis)
            if deadline_expired() and self._redis_had_a_chance():
                self._record(Failure(_DEADLINE_HIT), probe)
            raise  # the caller's own cancellation counts for nothing
        finally:
            connection_state.reset(token)
            if probe:
                self._probes -= 1  # also when cancelled: the permit goes back
        self._record(result, probe)
        return result

    @staticmethod
    def _redis_had_a_chance() -> bool:
        """Whether a call cut by its deadline says Redis is slow (and so should count).

        Not when it was still queued for a pooled connection, nor when it got one only
        moments before the cut (it queued for most of its deadline): the client was
        saturated. A call cut while connecting, or after holding its connection for a while,
        does count.
        """
        state = connection_state.get()
        if state is None:  # cut while connecting: Redis's business
            return True
        return state != QUEUED and asyncio.get_running_loop().time() - state >= _FAIR_CHANCE

    def _admit(self) -> bool | None:
        """``False``: a normal call; ``True``: a half-open probe; ``None``: rejected."""
        state = self._breaker.current_state
        if state == pybreaker.STATE_CLOSED:
            return False
        if state == pybreaker.STATE_OPEN:
            if self._clock() - self._opened_at < self._open_time:
                return None
            self._breaker.half_open()
        if self._probes >= self._permits:
            return None
        self._probes += 1
        return True

    def _record(self, result: Result[object, CacheError], probe: bool) -> None:
        failed = False
        if isinstance(result, Failure):
            error = result.error
            failed = error.trips_breaker or (  # the error table decides (errors.py)
                self._count_out_of_memory and error.code is ErrorCode.OUT_OF_MEMORY
            )
            policy = error.code.policy
            # a code that normally trips, in an error that says it does not (a pool wait, a
            # batch's echo), is no word from Redis either way, like the caller's own errors
            if not failed and (policy.trips_breaker or not policy.from_redis):
                return
        state = self._breaker.current_state
        if probe and state == pybreaker.STATE_HALF_OPEN:
            if failed:
                self._open_time = min(self._open_time * 2, self._max_open_time)
                self._trip()
                return
            self._storage.increment_success_counter()
            if self._storage.success_counter >= self._breaker.success_threshold:
                self._open_time = self._base_open_time
                self._breaker.close()
        elif not probe and state == pybreaker.STATE_CLOSED:
            if not failed:
                self._storage.reset_counter()
                return
            self._storage.increment_counter()
            if self._storage.counter >= self._breaker.fail_max:
                self._trip()
        # a late answer to a call admitted in another state changes nothing

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._breaker.open()

    def _rejection(self, operation: str, key: str | None) -> CacheError:
        remaining = max(0.0, self._open_time - (self._clock() - self._opened_at))
        message = (
            f"circuit open after repeated failures; next probe in {remaining:.2f}s"
            if remaining > 0
            else "circuit half-open: the probe limit is reached, waiting for their answers"
        )
        return CacheError.of(
            ErrorCode.CIRCUIT_OPEN,
            message,
            operation=operation,
            key=key,
            details={"retry_in": round(remaining, 3)},
        )

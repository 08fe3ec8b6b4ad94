"""RetryLayer: one owner of retries and of the per-call deadline.

* **A deadline over the whole call.** A :class:`DeadlineTimer` (``asyncio.timeout``'s
  rule, one event-loop timer per layer instead of one per call) bounds every attempt, backoff
  and wait for a connection together; past it the caller gets ``Failure(TIMEOUT)``. The
  deadline is published in a context variable, so that the breaker further in counts an
  attempt cut by it as a timeout, unlike a caller's own cancellation.
* **Only what is safe.** An attempt is repeated only when its error says ``retryable``
  (the code table in :mod:`resilient_cache.domain.errors`): never a validation error,
  never ``CIRCUIT_OPEN``, and never an ``increment``/``decrement``/``run_script`` whose
  command may have reached Redis (it could count twice).
* **Full-jitter exponential backoff** (tenacity's ``wait_random_exponential``), and no
  backoff that would end past the deadline.
* **A retry budget** (Finagle's): retries may add at most ``ratio`` of the calls in a
  sliding window, plus ``min_per_second``. When Redis is down for everyone, retries stop
  multiplying the load: the budget is spent and calls fail at once.

The happy path never enters tenacity (building its state machine costs ~20 us a call):
the first attempt runs directly, and only a retryable failure hands over to
``AsyncRetrying``, which replays that first outcome and takes it from there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
)
from tenacity import wait_random_exponential as full_jitter
from tenacity.stop import stop_base

from resilient_cache.domain import defaults
from resilient_cache.domain.deadline import DeadlineTimer
from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.listeners import notify
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result
from resilient_cache.layers.base import Call, Layer, call_deadline

T = TypeVar("T")

WRITE_OPERATIONS: Final = frozenset(
    {"set", "set_json", "delete", "expire", "increment", "decrement", "flush",
     "delete_pattern", "set_many", "run_script"}
)  # fmt: skip

BULK_OPERATIONS: Final = frozenset({"delete_pattern", "flush"})
"""Operations of many round trips (SCAN + UNLINK batches), bounded by ``bulk_deadline``."""

RetryHook = Callable[[str, CacheError], None]
"""Called before each retry with the operation and the error that caused it."""


class RetryBudget:
    """Allows retries up to ``ratio`` of recent calls plus ``min_per_second`` (Finagle).

    Calls and retries are counted in one-second buckets over a sliding ``window``.

    Args:
        ratio: retries allowed per call (0.2 = at most 20% extra load).
        min_per_second: retries always allowed per second, so quiet services still retry.
        window: seconds of history (default 10).
        clock: a monotonic clock in seconds (inject one in tests).
    """

    def __init__(
        self,
        ratio: float = defaults.BUDGET_RATIO,
        min_per_second: float = defaults.BUDGET_MIN_PER_SECOND,
        window: int = defaults.BUDGET_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ConfigurationError("budget_ratio", f"must be between 0 and 1, got {ratio!r}")
        if min_per_second < 0:
            raise ConfigurationError(
                "budget_min_per_second", f"must be >= 0, got {min_per_second!r}"
            )
        if window < 1:
            raise ConfigurationError("budget_window", f"must be >= 1 second, got {window!r}")
        self._ratio = ratio
        self._reserve = min_per_second * window
        self._clock = clock
        self._stamps = [-1] * window
        self._calls = [0] * window
        self._retries = [0] * window

    def _bucket(self) -> int:
        second = int(self._clock())
        index = second % len(self._stamps)
        if self._stamps[index] != second:
            self._stamps[index] = second
            self._calls[index] = 0
            self._retries[index] = 0
        return index

    def record_call(self) -> None:
        """Count one call (each deposits ``ratio`` of a retry)."""
        self._calls[self._bucket()] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; ``False`` when it is spent."""
        index = self._bucket()
        oldest = self._stamps[index] - len(self._stamps)
        live = [i for i, stamp in enumerate(self._stamps) if stamp > oldest]
        calls = sum(self._calls[i] for i in live)
        retries = sum(self._retries[i] for i in live)
        if retries >= self._ratio * calls + self._reserve:
            return False
        self._retries[index] += 1
        return True


def check_backoff(
    backoff_base: float, backoff_max: float, *, setting: str = "backoff_base"
) -> None:
    """The retry layer's rule for its backoff, for the layer and the settings alike.

    Raises:
        ConfigurationError: unless ``0 < backoff_base <= backoff_max`` (naming ``setting``).
    """
    if not backoff_base > 0:
        raise ConfigurationError(setting, f"must be positive seconds, got {backoff_base!r}")
    if backoff_base > backoff_max:
        raise ConfigurationError(setting, "must not exceed backoff_max")


class RetryLayer(Layer):
    """Retries what is safe to retry, within a deadline and a retry budget.

    Args:
        inner: the cache to call (normally the circuit breaker layer).
        attempts: tries per call, the first included (default 2: one retry).
        backoff_base: full-jitter exponential backoff base, seconds (default 0.01).
        backoff_max: backoff cap, seconds (default 0.1).
        deadline: bound on the whole call, retries included, seconds (default 0.5).
        bulk_deadline: the bound for ``delete_pattern`` and ``flush``, which take one round
            trip per batch of keys, seconds (default 10).
        budget: the retry budget (default: 20% of calls + 10/s over 10 s).
        sleep: the backoff's sleep (inject a fake one in tests).

    Telemetry hooks in with :meth:`add_retry_listener` and :meth:`add_budget_listener`.
    """

    name = "retry"

    def __init__(
        self,
        inner: CacheProtocol,
        *,
        attempts: int = defaults.ATTEMPTS,
        backoff_base: float = defaults.BACKOFF_BASE,
        backoff_max: float = defaults.BACKOFF_MAX,
        deadline: float = defaults.DEADLINE,
        bulk_deadline: float = defaults.BULK_DEADLINE,
        budget: RetryBudget | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        if attempts < 1:
            raise ConfigurationError("attempts", f"must be >= 1, got {attempts!r}")
        for setting, value in (("deadline", deadline), ("bulk_deadline", bulk_deadline)):
            if not 0 < value < float("inf"):
                raise ConfigurationError(
                    setting, f"must be a positive number of seconds, got {value!r}"
                )
        check_backoff(backoff_base, backoff_max)
        self._attempts = attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._deadline = deadline
        self._bulk_deadline = bulk_deadline
        self._budget = budget if budget is not None else RetryBudget()
        self._retry_listeners: list[RetryHook] = []
        self._budget_listeners: list[Callable[[str], None]] = []
        self._sleep = sleep
        self._timer = DeadlineTimer()
        self._bulk_timer = DeadlineTimer()

    def add_retry_listener(self, listener: RetryHook) -> None:
        """Call ``listener(operation, error)`` before each retry."""
        self._retry_listeners.append(listener)

    def add_budget_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(operation)`` when the budget refuses a retry."""
        self._budget_listeners.append(listener)

    @property
    def deadline(self) -> float:
        """The bound on a whole call, in seconds."""
        return self._deadline

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        self._budget.record_call()
        if operation in BULK_OPERATIONS:
            deadline, timer = self._bulk_deadline, self._bulk_timer
        else:
            deadline, timer = self._deadline, self._timer
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + deadline
        token = call_deadline.set(deadline_at)
        expiry = timer.start(loop, deadline_at)
        try:
            first = await call()
            if isinstance(first, Failure) and first.error.retryable and self._attempts > 1:
                return await self._retry(operation, call, first, deadline_at)
            return first
        except asyncio.CancelledError as exc:
            if not expiry.cut():
                raise  # the caller's own cancellation
            return Failure(
                CacheError.of(
                    ErrorCode.TIMEOUT,
                    f"deadline of {deadline}s exceeded",
                    operation=operation,
                    key=key,
                    details={"deadline": deadline},
                    maybe_applied=operation in WRITE_OPERATIONS,
                    cause=TimeoutError(f"deadline of {deadline}s exceeded").with_traceback(
                        exc.__traceback__
                    ),
                )
            )
        finally:
            expiry.finish()
            call_deadline.reset(token)

    def _budget_exhausted(self, operation: str) -> None:
        notify(self._budget_listeners, operation)

    async def _retry(
        self, operation: str, call: Call[T], first: Failure[CacheError], deadline_at: float
    ) -> Result[T, CacheError]:
        """Hand a retryable first failure to tenacity, which replays it, then retries."""
        pending: list[Result[T, CacheError]] = [first]
        maybe_applied = first.error.maybe_applied

        async def attempt() -> Result[T, CacheError]:
            nonlocal maybe_applied
            result = pending.pop() if pending else await call()
            if isinstance(result, Failure):
                maybe_applied = maybe_applied or result.error.maybe_applied
            return result

        def before_sleep(state: RetryCallState) -> None:
            result = state.outcome.result() if state.outcome else None
            if isinstance(result, Failure):
                notify(self._retry_listeners, operation, result.error)

        retrying = AsyncRetrying(
            # the budget is asked last, so a retry that will not happen spends nothing
            stop=stop_after_attempt(self._attempts)
            | _StopPastDeadline(deadline_at)
            | _StopWhenBudgetSpent(self._budget, lambda: self._budget_exhausted(operation)),
            wait=full_jitter(multiplier=self._backoff_base, max=self._backoff_max),
            retry=retry_if_result(_retryable),
            retry_error_callback=_last_result,
            before_sleep=before_sleep,
            sleep=self._sleep,
        )
        result: Result[T, CacheError] = await retrying(attempt)
        if isinstance(result, Failure) and maybe_applied and not result.error.maybe_applied:
            # an earlier attempt may have written: the caller must hear it (honest writes)
            return Failure(replace(result.error, maybe_applied=True))
        return result


class _StopPastDeadline(stop_base):
    """Stop when the coming backoff would end past the deadline: a retry could not finish."""

    def __init__(self, deadline_at: float) -> None:
        self._deadline_at = deadline_at

    def __call__(self, retry_state: RetryCallState) -> bool:
        now = asyncio.get_running_loop().time()
        return now + retry_state.upcoming_sleep >= self._deadline_at


class _StopWhenBudgetSpent(stop_base):
    """Stop when the retry budget refuses; asked last, so only a real retry spends it."""

    def __init__(self, budget: RetryBudget, on_spent: Callable[[], None]) -> None:
        self._budget = budget
        self._on_spent = on_spent

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self._budget.try_spend():
            return False
        self._on_spent()
        return True


def _retryable(result: Result[object, CacheError]) -> bool:
    return isinstance(result, Failure) and result.error.retryable


def _last_result(state: RetryCallState) -> object:
    """When tenacity stops, hand back the last failure instead of raising RetryError."""
    return state.outcome.result() if state.outcome is not None else None

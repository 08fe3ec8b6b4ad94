"""RetryLayer around a scripted cache: what is retried, how often, and within what bounds."""

from __future__ import annotations

import asyncio
import time

import pytest

from resilient_cache import ErrorCode, Failure, Success
from resilient_cache.layers.retry import RetryBudget, RetryLayer
from resilient_cache.testing import ManualClock, ScriptedCache


class Sleeps:
    """A fake sleep that records the backoffs instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def scripted() -> ScriptedCache:
    return ScriptedCache()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def layer(scripted: ScriptedCache, sleeps: Sleeps, **kwargs: object) -> RetryLayer:
    return RetryLayer(scripted, sleep=sleeps, **kwargs)  # type: ignore[arg-type]


async def test_success_is_one_attempt(scripted: ScriptedCache, sleeps: Sleeps) -> None:
    cache = layer(scripted, sleeps)
    assert await cache.set("k", "v") == Success(None)
    assert await cache.get("k") == Success("v")
    assert scripted.attempts == ["set", "get"]
    assert sleeps.delays == []


async def test_retryable_failures_are_retried_with_full_jitter_backoff(
    scripted: ScriptedCache, sleeps: Sleeps
) -> None:
    cache = layer(scripted, sleeps, attempts=4, backoff_base=0.01, backoff_max=0.03)
    scripted.fail(ErrorCode.CONNECTION, times=3)
    assert await cache.get("k") == Success(None)
    assert scripted.attempts == ["get"] * 4
    assert len(sleeps.delays) == 3
    caps = [0.01, 0.02, 0.03]  # base * 2**n, capped
    assert all(0 <= d <= cap for d, cap in zip(sleeps.delays, caps, strict=True))


async def test_attempts_are_bounded_and_the_last_failure_is_returned(
    scripted: ScriptedCache, sleeps: Sleeps
) -> None:
    cache = layer(scripted, sleeps, attempts=3)
    scripted.fail_always(ErrorCode.TIMEOUT)
    result = await cache.get("k")
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.TIMEOUT
    assert scripted.attempts == ["get"] * 3


@pytest.mark.parametrize(
    "code",
    [ErrorCode.VALIDATION, ErrorCode.WRONG_TYPE, ErrorCode.CIRCUIT_OPEN, ErrorCode.AUTH,
     ErrorCode.OUT_OF_MEMORY, ErrorCode.SERIALIZATION, ErrorCode.BACKEND],
)  # fmt: skip
async def test_non_retryable_failures_are_returned_at_once(
    scripted: ScriptedCache, sleeps: Sleeps, code: ErrorCode
) -> None:
    cache = layer(scripted, sleeps, attempts=5)
    scripted.fail(code)
    result = await cache.get("k")
    assert isinstance(result, Failure)
    assert result.error.code is code
    assert scripted.attempts == ["get"]


async def test_readonly_is_retried(scripted: ScriptedCache, sleeps: Sleeps) -> None:
    cache = layer(scripted, sleeps)
    scripted.fail(ErrorCode.READONLY)
    assert await cache.set("k", "v") == Success(None)
    assert scripted.attempts == ["set", "set"]


@pytest.mark.parametrize("operation", ["increment", "decrement"])
async def test_a_possibly_applied_increment_is_never_retried(
    scripted: ScriptedCache, sleeps: Sleeps, operation: str
) -> None:
    cache = layer(scripted, sleeps, attempts=5)
    scripted.fail(ErrorCode.TIMEOUT, maybe_applied=True)
    result = await getattr(cache, operation)("n")
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.TIMEOUT
    assert scripted.attempts == [operation]
    assert await cache.get("n") == Success(None)  # and it did not count


async def test_an_increment_that_never_left_is_retried(
    scripted: ScriptedCache, sleeps: Sleeps
) -> None:
    cache = layer(scripted, sleeps)
    scripted.fail(ErrorCode.CONNECTION, maybe_applied=False)
    assert await cache.increment("n") == Success(1)
    assert scripted.attempts == ["increment", "increment"]


async def test_the_deadline_bounds_the_whole_call(scripted: ScriptedCache) -> None:
    cache = RetryLayer(scripted, deadline=0.05)
    scripted.hang_always()
    started = time.monotonic()
    result = await cache.set("k", "v")
    elapsed = time.monotonic() - started
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.TIMEOUT
    assert result.error.maybe_applied  # a write was in flight
    assert "deadline" in result.error.message
    assert 0.05 <= elapsed < 0.05 + 0.05


async def test_no_backoff_ends_past_the_deadline(scripted: ScriptedCache, sleeps: Sleeps) -> None:
    cache = layer(scripted, sleeps, backoff_base=10.0, backoff_max=10.0, deadline=0.5, attempts=5)
    scripted.fail_always(ErrorCode.CONNECTION)
    for _ in range(20):  # full jitter may draw a short sleep; most draws exceed the deadline
        await cache.get("k")
    assert all(d < 0.5 for d in sleeps.delays)
    assert len(scripted.attempts) < 20 * 5


async def test_the_budget_stops_retry_storms(scripted: ScriptedCache, sleeps: Sleeps) -> None:
    clock = ManualClock()
    exhausted: list[str] = []
    budget = RetryBudget(ratio=0.2, min_per_second=0, window=10, clock=clock)
    cache = layer(scripted, sleeps, attempts=2, budget=budget)
    cache.add_budget_listener(exhausted.append)
    scripted.fail_always(ErrorCode.CONNECTION)
    for _ in range(100):
        await cache.get("k")
    retries = len(scripted.attempts) - 100
    assert retries == 20  # 20% of 100 calls
    assert len(exhausted) == 80
    clock.advance(11)  # the window slides: the budget refills with new calls
    scripted.attempts.clear()
    for _ in range(10):
        await cache.get("k")
    assert len(scripted.attempts) - 10 == 2


async def test_the_budget_floor_lets_a_quiet_service_retry() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, min_per_second=1, window=10, clock=clock)
    assert [budget.try_spend() for _ in range(11)] == [True] * 10 + [False]


async def test_on_retry_sees_each_retry(scripted: ScriptedCache, sleeps: Sleeps) -> None:
    seen: list[tuple[str, ErrorCode]] = []
    cache = layer(scripted, sleeps, attempts=3)
    cache.add_retry_listener(lambda op, e: seen.append((op, e.code)))
    scripted.fail(ErrorCode.CONNECTION)
    scripted.fail(ErrorCode.READONLY)
    assert await cache.exists("k") == Success(False)
    assert seen == [("exists", ErrorCode.CONNECTION), ("exists", ErrorCode.READONLY)]


async def test_cancellation_propagates(scripted: ScriptedCache) -> None:
    cache = RetryLayer(scripted, deadline=10)
    scripted.hang()
    task = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [({"attempts": 0}, "attempts"), ({"deadline": 0}, "deadline"),
     ({"backoff_base": 0.2, "backoff_max": 0.1}, "backoff_base")],
)  # fmt: skip
def test_bad_settings_raise(kwargs: dict[str, object], setting: str) -> None:
    from resilient_cache import ConfigurationError  # noqa: PLC0415

    with pytest.raises(ConfigurationError) as info:
        RetryLayer(ScriptedCache(), **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


async def test_a_write_that_may_have_happened_says_so_after_retries(
    scripted: ScriptedCache, sleeps: Sleeps
) -> None:
    cache = layer(scripted, sleeps, attempts=3)
    scripted.fail(ErrorCode.CONNECTION, maybe_applied=True)  # reset after the SET was sent
    scripted.fail(ErrorCode.CIRCUIT_OPEN)  # the retry meets an open circuit
    result = await cache.set("k", "v")
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.CIRCUIT_OPEN
    assert result.error.maybe_applied  # the first attempt's news is not lost

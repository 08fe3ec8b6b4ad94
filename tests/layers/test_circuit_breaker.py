"""CircuitBreakerLayer around a scripted cache, on a manual clock: no sleeping."""

from __future__ import annotations

import asyncio
import time

import pytest

from resilient_cache import ConfigurationError, ErrorCode, Failure, Success
from resilient_cache.layers.circuit_breaker import BreakerState, CircuitBreakerLayer
from resilient_cache.testing import ManualClock, ScriptedCache

Transition = tuple[BreakerState, BreakerState]
CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


@pytest.fixture
def scripted() -> ScriptedCache:
    return ScriptedCache()


@pytest.fixture
def transitions() -> list[Transition]:
    return []


def breaker(
    scripted: ScriptedCache,
    clock: ManualClock,
    transitions: list[Transition],
    **kwargs: object,
) -> CircuitBreakerLayer:
    layer = CircuitBreakerLayer(scripted, clock=clock, **kwargs)  # type: ignore[arg-type]
    layer.add_listener(lambda old, new: transitions.append((old, new)))
    return layer


async def trip(layer: CircuitBreakerLayer, scripted: ScriptedCache, times: int = 5) -> None:
    scripted.fail(ErrorCode.CONNECTION, times=times)
    for _ in range(times):
        await layer.get("k")


async def test_opens_on_the_fifth_consecutive_failure(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions)
    scripted.fail(ErrorCode.TIMEOUT, times=5)
    for call in range(1, 5):
        result = await layer.get("k")
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.TIMEOUT, call
        assert layer.state is CLOSED
    await layer.get("k")
    assert layer.state is OPEN
    assert transitions == [(CLOSED, OPEN)]


async def test_open_fails_fast_without_touching_the_inner_cache(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions)
    await trip(layer, scripted)
    reached = len(scripted.attempts)
    started = time.perf_counter()
    for _ in range(1000):
        result = await layer.set("k", "v")
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.CIRCUIT_OPEN
        assert not result.error.retryable
    per_call = (time.perf_counter() - started) / 1000
    assert len(scripted.attempts) == reached  # no call went through
    assert per_call < 0.001
    assert isinstance(result, Failure)
    assert result.error.details["retry_in"] == 5.0


async def test_successes_and_error_replies_reset_the_count(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions)
    for _ in range(3):
        await trip(layer, scripted, times=4)
        await layer.get("k")  # a success
        scripted.fail(ErrorCode.WRONG_TYPE)  # Redis answered: it is healthy
        await layer.get("k")
    assert layer.state is CLOSED
    assert transitions == []


@pytest.mark.parametrize(
    "code", [ErrorCode.VALIDATION, ErrorCode.READONLY, ErrorCode.AUTH, ErrorCode.OUT_OF_MEMORY]
)
async def test_non_tripping_errors_never_open(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition], code: ErrorCode
) -> None:
    layer = breaker(scripted, clock, transitions)
    scripted.fail_always(code)
    for _ in range(20):
        await layer.get("k")
    assert layer.state is CLOSED


async def test_out_of_memory_can_be_made_to_trip(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions, count_out_of_memory=True)
    scripted.fail_always(ErrorCode.OUT_OF_MEMORY)
    for _ in range(5):
        await layer.set("k", "v")
    assert layer.state is OPEN


async def test_half_open_needs_two_successes_to_close(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions)
    await trip(layer, scripted)
    clock.advance(4.9)
    assert isinstance(await layer.get("k"), Failure)
    clock.advance(0.1)
    assert await layer.get("k") == Success(None)
    assert layer.state is HALF_OPEN
    assert await layer.get("k") == Success(None)
    assert layer.state is CLOSED
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


async def test_a_failed_probe_reopens_for_longer_up_to_the_cap(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions, reset_timeout=5, reset_timeout_max=30)
    await trip(layer, scripted)
    open_times = []
    for _ in range(5):
        clock.advance(layer.open_time)
        scripted.fail(ErrorCode.CONNECTION)
        await layer.get("k")  # the probe fails
        assert layer.state is OPEN
        open_times.append(layer.open_time)
    assert open_times == [10, 20, 30, 30, 30]
    clock.advance(29.9)
    assert isinstance(await layer.get("k"), Failure)
    assert len([t for t in transitions if t == (OPEN, HALF_OPEN)]) == 5
    clock.advance(0.1)
    await layer.get("k")
    await layer.get("k")
    assert layer.state is CLOSED
    assert layer.open_time == 5  # healed: back to the base open time


async def test_half_open_admits_exactly_the_permitted_probes(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions, half_open_permits=2)
    await trip(layer, scripted)
    clock.advance(5)
    scripted.hang(times=2)
    reached = len(scripted.attempts)
    tasks = [asyncio.create_task(layer.get(f"k{i}")) for i in range(100)]
    done, pending = await asyncio.wait(tasks, timeout=0.1)
    assert len(pending) == 2  # the two probes, hanging in the inner cache
    assert len(scripted.attempts) - reached == 2
    assert all(
        isinstance(r := t.result(), Failure) and r.error.code is ErrorCode.CIRCUIT_OPEN
        for t in done
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    assert layer.state is HALF_OPEN  # cancelled probes count for nothing...
    assert await layer.get("k") == Success(None)  # ...and gave their permits back


async def test_cancelled_calls_count_neither_way(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions, fail_max=2)
    scripted.fail(ErrorCode.CONNECTION)
    await layer.get("k")
    scripted.hang()
    task = asyncio.create_task(layer.get("k"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert layer.state is CLOSED  # not a failure...
    scripted.fail(ErrorCode.CONNECTION)
    await layer.get("k")
    assert layer.state is OPEN  # ...nor a success that would have reset the count


async def test_late_answers_from_another_state_change_nothing(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions)
    scripted.hang()
    slow = asyncio.create_task(layer.get("slow"))  # admitted while closed
    await asyncio.sleep(0.01)
    await trip(layer, scripted)
    scripted.heal()
    slow.cancel()
    await asyncio.gather(slow, return_exceptions=True)
    assert layer.state is OPEN


def test_the_layer_name_and_stack() -> None:
    layer = CircuitBreakerLayer(ScriptedCache())
    assert layer.layers == ("circuit_breaker", "scripted", "MemoryCache")


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [({"fail_max": 0}, "fail_max"), ({"success_threshold": 0}, "success_threshold"),
     ({"half_open_permits": 0}, "half_open_permits"),
     ({"reset_timeout": 10, "reset_timeout_max": 5}, "reset_timeout")],
)  # fmt: skip
def test_bad_settings_raise(kwargs: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        CircuitBreakerLayer(ScriptedCache(), **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


async def test_calls_cut_by_the_retry_deadline_count_as_timeouts(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    from resilient_cache.layers.retry import RetryLayer  # noqa: PLC0415

    layer = breaker(scripted, clock, transitions)
    stack = RetryLayer(layer, deadline=0.02)
    scripted.hang_always()  # a blackholed Redis: only the deadline ends each call
    for _ in range(5):
        result = await stack.get("k")
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.TIMEOUT
    assert layer.state is OPEN
    result = await stack.get("k")
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.CIRCUIT_OPEN


async def test_a_raising_listener_never_breaks_the_breaker(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions)

    def broken(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("a buggy metrics exporter")

    layer.add_listener(broken)
    await trip(layer, scripted)
    assert layer.state is OPEN
    assert transitions == [(CLOSED, OPEN)]  # the state machine went on


async def test_half_open_rejections_say_so(
    scripted: ScriptedCache, clock: ManualClock, transitions: list[Transition]
) -> None:
    layer = breaker(scripted, clock, transitions)
    await trip(layer, scripted)
    clock.advance(5)
    scripted.hang()
    probe = asyncio.create_task(layer.get("k"))
    await asyncio.sleep(0.01)
    result = await layer.get("k")
    assert isinstance(result, Failure)
    assert "half-open" in result.error.message
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)

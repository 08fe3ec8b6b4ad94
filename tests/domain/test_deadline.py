"""DeadlineTimer: asyncio.timeout's rule for many calls with one event-loop timer."""

from __future__ import annotations

import asyncio

import pytest

from resilient_cache.domain.deadline import DeadlineTimer, Expiry


async def hang_until_cut(timer: DeadlineTimer, seconds: float) -> float:
    """Wait forever under a deadline of ``seconds``; return when it was cut (loop time)."""
    loop = asyncio.get_running_loop()
    expiry = timer.start(loop, loop.time() + seconds)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if not expiry.cut():
            raise
        return loop.time()
    finally:
        expiry.finish()
    raise AssertionError("unreachable")


async def test_each_call_is_cut_at_its_own_deadline() -> None:
    timer = DeadlineTimer()
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    tasks = []
    for _ in range(5):
        starts.append(loop.time())
        tasks.append(asyncio.create_task(hang_until_cut(timer, 0.05)))
        await asyncio.sleep(0.01)
    cuts = await asyncio.gather(*tasks)
    for start, cut in zip(starts, cuts, strict=True):
        assert 0.05 <= cut - start < 0.05 + 0.05  # never early, not rounded to a period
    assert cuts == sorted(cuts)
    assert timer._handle is None  # nothing pending: no timer left armed


async def test_one_timer_serves_every_pending_call() -> None:
    timer = DeadlineTimer()
    loop = asyncio.get_running_loop()
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    tasks = [asyncio.create_task(hang_until_cut(timer, 10)) for _ in range(100)]
    await asyncio.sleep(0)
    assert len(loop._scheduled) - before == 1  # type: ignore[attr-defined]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_call_that_finished_is_never_cancelled_later() -> None:
    timer = DeadlineTimer()
    loop = asyncio.get_running_loop()
    expiry = timer.start(loop, loop.time() + 0.02)
    await asyncio.sleep(0)
    expiry.finish()
    await asyncio.sleep(0.05)  # past the deadline: this task must not be cancelled
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_cancellation_by_someone_else_is_not_taken_for_the_deadline() -> None:
    timer = DeadlineTimer()
    task = asyncio.create_task(hang_until_cut(timer, 10))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_earlier_deadline_of_the_caller_wins() -> None:
    timer = DeadlineTimer()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):  # the application's own, shorter bound
            await hang_until_cut(timer, 10)


async def test_a_call_that_swallows_the_cut_owes_no_cancellation() -> None:
    async def swallowing() -> str:  # code further in that ignores a cancellation
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "finished anyway"
        return "unreachable"

    timer = DeadlineTimer()
    loop = asyncio.get_running_loop()
    expiry: Expiry = timer.start(loop, loop.time() + 0.01)
    assert await swallowing() == "finished anyway"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 1  # the deadline asked for it
    expiry.finish()
    assert task.cancelling() == 0  # taken back: the task is not left half-cancelled
    await asyncio.sleep(0)


def test_a_timer_moves_to_a_new_event_loop() -> None:
    timer = DeadlineTimer()
    for _ in range(2):  # two loops, one after the other
        cut = asyncio.run(hang_until_cut(timer, 0.01))
        assert cut > 0


def test_starting_outside_a_task_is_an_error() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="inside an asyncio task"):
            DeadlineTimer().start(loop, 0.0)
    finally:
        loop.close()

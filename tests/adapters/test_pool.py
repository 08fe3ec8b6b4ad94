"""The adapter's connection pool: bounded, fair, cancellation-safe (no network needed)."""

from __future__ import annotations

import asyncio
import contextvars
import itertools

import pytest

from resilient_cache.adapters._pool import Pool, PoolClosedError
from resilient_cache.domain.deadline import QUEUED, connection_state


def numbered_pool(max_size: int) -> Pool[int]:
    counter = itertools.count()
    return Pool(lambda: next(counter), max_size)


def test_takes_idle_connections_first_and_makes_no_more_than_max_size() -> None:
    pool = numbered_pool(2)
    first, second = pool.take(), pool.take()
    assert (first, second) == (0, 1)
    assert pool.take() is None  # full: the caller must wait
    assert (pool.idle, pool.in_use) == (0, 2)
    pool.give_back(0)
    assert pool.take() == 0  # reused, not a third connection
    pool.give_back(0)
    pool.give_back(1)
    assert pool.take() == 1  # the most recently returned one (its socket is warm)
    assert (pool.idle, pool.in_use) == (1, 1)


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = numbered_pool(1)
    conn = pool.take()
    assert conn is not None
    served: list[str] = []

    async def waiter(name: str) -> None:
        got = await pool.wait()
        served.append(name)
        await asyncio.sleep(0)
        pool.give_back(got)

    tasks = [asyncio.create_task(waiter(name)) for name in "abcd"]
    await asyncio.sleep(0)  # all four are queued
    pool.give_back(conn)
    assert pool.take() is None  # a newcomer does not overtake the queue
    await asyncio.gather(*tasks)
    assert served == list("abcd")
    assert (pool.idle, pool.in_use) == (1, 0)


async def test_a_queued_caller_is_marked_queued_until_served() -> None:
    pool = numbered_pool(1)
    conn = pool.take()
    assert conn is not None
    context = contextvars.copy_context()  # the waiting task's own context, to look into
    task = asyncio.get_running_loop().create_task(pool.wait(), context=context)
    await asyncio.sleep(0)
    assert context[connection_state] == QUEUED
    pool.give_back(conn)
    assert await task == conn
    assert context[connection_state] is None


async def test_a_waiter_cut_by_its_deadline_leaves_the_queue() -> None:
    pool = numbered_pool(1)
    conn = pool.take()
    assert conn is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await pool.wait()
    pool.give_back(conn)
    assert (pool.idle, pool.in_use) == (1, 0)  # not handed to the departed waiter


async def test_a_connection_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    pool = numbered_pool(1)
    conn = pool.take()
    assert conn is not None
    first = asyncio.create_task(pool.wait())
    second = asyncio.create_task(pool.wait())
    await asyncio.sleep(0)
    pool.give_back(conn)  # handed to the first waiter ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == conn  # the connection was passed on, not lost
    pool.give_back(conn)
    assert (pool.idle, pool.in_use) == (1, 0)


async def test_closing_fails_every_waiter_and_returns_every_connection() -> None:
    pool = numbered_pool(2)
    taken = [pool.take(), pool.take()]
    waiter = asyncio.create_task(pool.wait())
    await asyncio.sleep(0)
    assert sorted(pool.close()) == [0, 1]
    with pytest.raises(PoolClosedError):
        await waiter
    for conn in taken:
        assert conn is not None
        pool.give_back(conn)
    assert pool.take() in (0, 1)  # still usable: its connections reconnect when used

"""pipeline_commands against a real redis-server: the single commands issued while another
is in flight share one connection and one round trip, each keeps its own reply and its own
error; a command alone goes at once. (The whole contract suite also runs on a pipelining
adapter, ``redis-pipelining``; the fault scenarios too.)"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilient_cache import CacheError, ErrorCode, Failure, RedisAdapter, Success
from resilient_cache.adapters._coalesce import CommandPipeliner, PartialReplies
from resilient_cache.domain.deadline import QUEUED, connection_state
from resilient_cache.testing import free_port
from tests.adapters.test_redis_adapter import block_server
from tests.servers import RedisServer


async def connections_received(raw: aioredis.Redis) -> int:
    stats: dict[str, Any] = await raw.info("stats")
    return int(stats["total_connections_received"])


@pytest.fixture
async def cache(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> AsyncIterator[RedisAdapter]:
    adapter = RedisAdapter.from_url(redis_server.url, namespace="p", pipeline_commands=True)
    yield adapter
    await adapter.aclose()


async def test_the_commands_of_one_iteration_share_one_connection(
    cache: RedisAdapter, raw_redis: aioredis.Redis
) -> None:
    before = await connections_received(raw_redis)
    writes = await asyncio.gather(*(cache.set(f"k{i}", f"v{i}") for i in range(50)))
    assert writes == [Success(None)] * 50
    reads = await asyncio.gather(
        *(cache.get(f"k{i}") for i in range(50)), cache.exists("k7"), cache.get("nope")
    )
    assert reads == [*(Success(f"v{i}") for i in range(50)), Success(True), Success(None)]
    # the first call, alone when it started, went at once; the 49 others, issued while it
    # was in flight, in one pipeline (without pipelining: 50 connections)
    assert await connections_received(raw_redis) - before == 2
    assert cache.pool_stats().in_use == 0


async def test_an_error_reply_is_its_own_commands_alone(
    cache: RedisAdapter, raw_redis: aioredis.Redis
) -> None:
    await raw_redis.set("p:text", "not a number")
    await raw_redis.lpush("p:list", "x")
    counted, wrong, listed, fine, written = await asyncio.gather(
        cache.increment("counter", 2),
        cache.increment("text"),
        cache.get("list"),
        cache.get("counter"),
        cache.set("after", "1"),
    )
    assert counted == Success(2)
    assert isinstance(wrong, Failure) and wrong.error.code is ErrorCode.WRONG_TYPE
    assert (wrong.error.operation, wrong.error.key) == ("increment", "text")
    assert not wrong.error.maybe_applied  # an error reply: Redis refused it
    assert isinstance(listed, Failure) and listed.error.code is ErrorCode.WRONG_TYPE
    assert fine == Success("2")  # sent after the increment in the same pipeline
    assert written == Success(None)
    assert await raw_redis.get("p:after") == b"1"


async def test_a_failed_round_trip_is_each_callers_and_counts_once() -> None:
    cache = RedisAdapter.from_url(f"redis://127.0.0.1:{free_port()}/0", pipeline_commands=True)
    results = await asyncio.gather(cache.get("a"), cache.set("b", "1"), cache.increment("c"))
    await cache.aclose()
    errors = [result.error for result in results if isinstance(result, Failure)]
    assert [(e.code, e.operation, e.key) for e in errors] == [
        (ErrorCode.CONNECTION, "get", "a"),
        (ErrorCode.CONNECTION, "set", "b"),
        (ErrorCode.CONNECTION, "increment", "c"),
    ]
    # the first went alone, the two others in one pipeline: two refused connections
    assert [e.trips_breaker for e in errors] == [True, True, False]
    assert not any(e.maybe_applied for e in errors)  # nothing was sent
    assert errors[2].retryable  # not sent: an increment may be tried again


async def test_a_lone_command_goes_at_once(cache: RedisAdapter, raw_redis: aioredis.Redis) -> None:
    await raw_redis.config_resetstat()
    for i in range(5):  # one after the other: never pipelined, one connection reused
        assert await cache.set(f"s{i}", "v") == Success(None)
    stats: dict[str, Any] = await raw_redis.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 5
    assert cache.pool_stats().idle == 1


async def test_a_caller_that_gives_up_leaves_the_others_their_answers(
    cache: RedisAdapter,
) -> None:
    assert await cache.set("k", "v") == Success(None)
    first = asyncio.ensure_future(cache.get("k"))  # goes at once
    gone = asyncio.ensure_future(cache.get("k"))
    staying = asyncio.ensure_future(cache.get("k"))
    await asyncio.sleep(0)  # both queued for the same pipeline
    gone.cancel()
    assert await staying == Success("v")
    assert await first == Success("v")
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert cache.pool_stats().in_use == 0


async def test_pipelining_is_refused_on_a_cluster() -> None:
    from resilient_cache import ConfigurationError, RedisClusterAdapter  # noqa: PLC0415

    with pytest.raises(ConfigurationError, match="pipeline_commands"):
        RedisClusterAdapter.from_nodes(["127.0.0.1:1"], pipeline_commands=True)


async def test_a_write_given_up_before_its_pipeline_left_is_never_sent(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    """The caller was told (cancelled); its SET must not land later, after the caller's own
    next write: it is left out of the pipeline that was waiting for a connection."""
    cache = RedisAdapter.from_url(
        redis_server.url, namespace="p", pipeline_commands=True, max_connections=1
    )
    assert await cache.ping() == Success(True)
    await raw_redis.config_resetstat()
    sleeper = await block_server(redis_server, 0.3)
    holding = asyncio.ensure_future(cache.get("x"))  # alone: takes the one connection
    await asyncio.sleep(0)
    given_up = asyncio.ensure_future(cache.set("k", "old"))  # pipelined, waits for it
    await asyncio.sleep(0.05)
    given_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await given_up
    assert await sleeper == b"+OK\r\n"
    assert await holding == Success(None)
    assert await cache.set("k", "new") == Success(None)
    await asyncio.sleep(0.05)  # time for a straggler to land
    assert await raw_redis.get("p:k") == b"new"
    stats: dict[str, Any] = await raw_redis.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 1  # the given-up SET never reached Redis
    await cache.aclose()


async def test_a_big_pipeline_leaves_in_slices_that_take_turns() -> None:
    """Packing 10 MB in one go would hold the event loop: at most max_commands commands and
    about max_bytes of arguments per batch, in order."""
    batches: list[list[tuple[Any, ...]]] = []

    async def send(commands: Any, writes: bool) -> list[Any]:
        sent = commands()
        batches.append(sent)
        await asyncio.sleep(0)
        return [f"ok {c[1]}" for c in sent]

    pipeliner = CommandPipeliner(send, max_commands=4, max_bytes=250_000)
    value = b"x" * 100_000
    small = [pipeliner.call(("SET", f"s{i}", b"v"), write=True) for i in range(6)]
    big = [pipeliner.call(("SET", f"b{i}", value), write=True) for i in range(5)]
    replies = await asyncio.gather(*small, *big)
    assert replies == [f"ok s{i}" for i in range(6)] + [f"ok b{i}" for i in range(5)]
    assert [[c[1] for c in batch] for batch in batches] == [
        ["s0", "s1", "s2", "s3"], ["s4", "s5", "b0", "b1"], ["b2", "b3", "b4"]
    ]  # fmt: skip


# -- the pipeliner alone, over a send of its own (no server) ----------------------------


async def test_a_round_trip_that_fails_part_way_gives_each_caller_what_was_read() -> None:
    failed = CacheError.of(ErrorCode.TIMEOUT, "cut", operation="pipeline", maybe_applied=True)

    async def send(commands: Any, writes: bool) -> PartialReplies:
        sent = commands()
        return PartialReplies([f"ok {sent[0][1]}"], failed)

    pipeliner = CommandPipeliner(send)
    replies = await asyncio.gather(
        *(pipeliner.call(("SET", f"k{i}", b"v"), write=True) for i in range(3))
    )
    assert replies[0] == "ok k0"  # its reply was read: it is not told TIMEOUT
    assert replies[1:] == [failed, replace(failed, trips_breaker=False)]  # counted once


async def test_closing_lets_a_batch_in_flight_finish() -> None:
    """Cancelling a batch that was sent would tell its callers that their writes were not
    applied (and a retry would apply an increment twice)."""
    release = asyncio.Event()

    async def send(commands: Any, writes: bool) -> list[Any]:
        sent = commands()  # on the wire from here
        await release.wait()
        return [1 for _ in sent]

    pipeliner = CommandPipeliner(send)
    calls = asyncio.gather(*(pipeliner.call(("INCRBY", "n", 1), write=True) for _ in range(2)))
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(pipeliner.aclose())
    await asyncio.sleep(0.01)
    assert not closing.done()  # it waits for the batch...
    release.set()
    await closing
    assert await calls == [1, 1]  # ...whose callers get their replies


async def test_a_caller_cut_before_its_batch_has_a_connection_reads_as_queued() -> None:
    """For the breaker: a call cut while its pipeline waited for a connection says nothing
    about Redis; and a batch nobody waits for any more leaves the queue."""
    started, abandoned = asyncio.Event(), asyncio.Event()

    async def send(commands: Any, writes: bool) -> list[Any]:
        started.set()
        try:
            await asyncio.Event().wait()  # queued for a connection, forever
        except asyncio.CancelledError:
            abandoned.set()
            raise
        return []

    pipeliner = CommandPipeliner(send)
    seen: list[Any] = []

    async def caller() -> None:
        connection_state.set(None)  # as the breaker leaves it before the call
        try:
            await pipeliner.call(("SET", "k", b"v"), write=True)
        finally:
            seen.append(connection_state.get())

    task = asyncio.ensure_future(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [QUEUED]
    await asyncio.wait_for(abandoned.wait(), 1)


async def test_nothing_of_a_finished_call_is_kept() -> None:
    """Found by the fault campaign (the leak invariant, seed 20261221): batches were kept
    alive by a map from each caller's future to its batch, which holds those futures."""

    async def send(commands: Any, writes: bool) -> list[Any]:
        return [b"v" * 1000 for _ in commands()]

    pipeliner = CommandPipeliner(send)
    for _ in range(20):
        await asyncio.gather(*(pipeliner.call(("GET", f"k{i}"), write=False) for i in range(50)))
    await pipeliner.aclose()
    gc.collect()
    assert [o for o in gc.get_objects() if type(o).__name__ == "_Batch"] == []

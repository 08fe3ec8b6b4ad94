"""Read coalescing: concurrent GETs of one event-loop iteration share one MGET round trip.

Under concurrency a Python Redis client is bound by its per-command CPU cost, not by Redis:
fifty coroutines each sending GET pay fifty round trips of client work. Gathered into one
MGET they pay one, plus a few microseconds a key. Each caller still gets its own answer
(replies are matched by position, never shared), its own deadline (it waits on a future of
its own, which its cancellation leaves behind), and on a failed round trip its own Failure.

The batch is sent from a task with a clean context, so that no caller's deadline is taken
for the batch's: the adapter's ``operation_timeout`` bounds the round trip itself.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from resilient_cache.domain.deadline import QUEUED, connection_state
from resilient_cache.domain.defaults import BATCH_SLICE, BATCH_SLICE_BYTES
from resilient_cache.domain.errors import CacheError, ErrorCode

Fetch = Callable[[Sequence[bytes]], Awaitable[Sequence[Any] | CacheError]]
"""Reads the given keys in one round trip: their replies in order, or why not."""


class ReadCoalescer:
    """Batches the GETs issued within one event-loop iteration into a single fetch."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._keys: list[bytes] = []
        self._waiters: list[asyncio.Future[Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: bytes) -> Any:
        """The reply to ``GET key`` (bytes or ``None``), or a :class:`CacheError`."""
        loop = asyncio.get_running_loop()
        if not self._waiters:
            loop.call_soon(self._flush, context=contextvars.Context())
        waiter: asyncio.Future[Any] = loop.create_future()
        self._keys.append(key)
        self._waiters.append(waiter)
        return await waiter

    def _flush(self) -> None:
        keys, waiters = self._keys, self._waiters
        self._keys, self._waiters = [], []
        task = asyncio.get_running_loop().create_task(self._send(keys, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, keys: list[bytes], waiters: list[asyncio.Future[Any]]) -> None:
        if all(waiter.done() for waiter in waiters):  # every caller gave up already
            return
        try:
            replies = await self._fetch(keys)
        except BaseException:  # closed while in flight: tell the callers, do not cancel them
            closed = CacheError.of(ErrorCode.CONNECTION, "the cache was closed", operation="get")
            _answer(waiters, [], closed)
            raise
        if isinstance(replies, CacheError):
            _answer(waiters, [], replies)
        else:
            _answer(waiters, list(replies), None)

    async def aclose(self) -> None:
        """Cancel batches still in flight; their callers get a CONNECTION failure."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class PartialReplies:
    """A pipeline that failed part way: the replies read before it failed, in order, and
    the error of the commands after them."""

    replies: list[Any]
    error: CacheError


Send = Callable[
    [Callable[[], Sequence[tuple[Any, ...]]], bool],
    Awaitable[Sequence[Any] | PartialReplies | CacheError],
]
"""Sends commands in one round trip (``True``: some are writes). It calls the function it is
given once a connection is ready, for the commands to send then; it returns their replies
in order (an error reply as its exception, in its place), those read before the round trip
failed, or why it failed."""


@dataclass(eq=False)
class _Batch:
    """One pipeline: its commands, its callers, and where it stands."""

    commands: list[tuple[Any, ...]]
    writes: bool
    waiters: list[asyncio.Future[Any]]
    context: contextvars.Context
    task: asyncio.Task[None] | None = None
    taken: bool = False
    """Its commands were chosen on a ready connection: from here on they may be sent."""


class CommandPipeliner:
    """Pipelines the single commands issued while others are in flight on one connection:
    one write and one read for all of them instead of one each.

    Unlike :class:`ReadCoalescer` nothing is merged: each command is sent as it is and gets
    its own reply (an error reply stays that command's), so every command keeps its exact
    semantics:

    * a caller waits on a future of its own, under its own deadline; a batch is sent from a
      task with a clean context (the adapter's ``operation_timeout`` bounds it);
    * a caller that gave up (its deadline, its cancellation) before its batch had a ready
      connection is left out of it: nothing of it is sent after the caller was told. A
      batch whose callers all gave up leaves the queue for a connection;
    * a cut caller tells the circuit breaker where its batch stood with its connection
      (queued for one, connecting, or holding it since when), as a call of its own would;
    * a round trip that fails part way gives the replies it read to their callers and its
      error to the others, counted once by a circuit breaker;
    * a batch holds at most ``max_commands`` commands and about ``max_bytes`` of arguments
      (the rest go in the next one, in order), so that packing it takes turns with other
      tasks.
    """

    def __init__(
        self, send: Send, *, max_commands: int = BATCH_SLICE, max_bytes: int = BATCH_SLICE_BYTES
    ) -> None:
        self._send_batch = send
        self._max_commands = max_commands
        self._max_bytes = max_bytes
        self._commands: list[tuple[Any, ...]] = []
        self._writes: list[bool] = []
        self._waiters: list[asyncio.Future[Any]] = []
        # one per waiter: where its caller finds its batch once it has one (held by the
        # caller alone, so that nothing outlives the call)
        self._slots: list[list[_Batch | None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def gathering(self) -> bool:
        """Whether commands wait for this iteration's pipeline to leave."""
        return bool(self._waiters)

    async def call(self, command: tuple[Any, ...], *, write: bool) -> Any:
        """The reply to ``command``: the value, the exception of an error reply, or the
        :class:`CacheError` of the batch's round trip."""
        loop = asyncio.get_running_loop()
        if not self._waiters:
            loop.call_soon(self._flush, context=contextvars.Context())
        waiter: asyncio.Future[Any] = loop.create_future()
        slot: list[_Batch | None] = [None]
        self._commands.append(command)
        self._writes.append(write)
        self._waiters.append(waiter)
        self._slots.append(slot)
        try:
            return await waiter
        except asyncio.CancelledError:
            batch = slot[0]
            # not yet under way (no batch, or no connection yet): like a call still queued
            state = batch.context.get(connection_state, QUEUED) if batch else QUEUED
            connection_state.set(state)
            if (
                batch is not None
                and batch.task is not None
                and not batch.taken
                and all(other.done() for other in batch.waiters)
            ):
                batch.task.cancel()  # nobody waits for it: out of the queue for a connection
            raise

    def _flush(self) -> None:
        commands, writes, waiters = self._commands, self._writes, self._waiters
        slots = self._slots
        self._commands, self._writes, self._waiters, self._slots = [], [], [], []
        loop = asyncio.get_running_loop()
        start = 0
        while start < len(commands):
            end, size = start, 0
            while end < len(commands) and end - start < self._max_commands:
                size += sum(len(arg) for arg in commands[end] if isinstance(arg, bytes | str))
                end += 1
                if size >= self._max_bytes:
                    break
            context = contextvars.Context()
            context.run(connection_state.set, QUEUED)
            batch = _Batch(commands[start:end], any(writes[start:end]), waiters[start:end], context)
            for slot in slots[start:end]:
                slot[0] = batch
            batch.task = loop.create_task(self._send(batch), context=context)
            self._tasks.add(batch.task)
            batch.task.add_done_callback(self._tasks.discard)
            start = end

    async def _send(self, batch: _Batch) -> None:
        waiters = batch.waiters
        kept: list[asyncio.Future[Any]] = []

        def still_wanted() -> list[tuple[Any, ...]]:
            batch.taken = True
            kept[:] = [waiter for waiter in waiters if not waiter.done()]
            return [c for c, w in zip(batch.commands, waiters, strict=True) if not w.done()]

        if all(waiter.done() for waiter in waiters):  # every caller gave up already
            return
        try:
            replies = await self._send_batch(still_wanted, batch.writes)
        except BaseException:  # cancelled: tell the callers, do not cancel them
            stopped = CacheError.of(
                ErrorCode.CONNECTION,
                "the pipeline was stopped",
                operation="pipeline",
                maybe_applied=batch.taken and batch.writes,
            )
            _answer(waiters, [], stopped)
            raise
        if isinstance(replies, PartialReplies):
            _answer(kept, replies.replies, replies.error)
        elif isinstance(replies, CacheError):
            _answer(kept if batch.taken else waiters, [], replies)
        else:
            _answer(kept, list(replies), None)

    async def aclose(self) -> None:
        """Let the batches in flight finish (each bounded by the adapter's
        ``operation_timeout``): cancelling one that was sent would tell its callers that
        their writes were not applied."""
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _answer(
    waiters: list[asyncio.Future[Any]], replies: list[Any], error: CacheError | None
) -> None:
    """The replies to the first waiters, in order; ``error`` to the others, counted once by
    a circuit breaker (one round trip failed once). A waiter already done (its caller gave
    up) is passed over."""
    for waiter, reply in zip(waiters, replies, strict=False):
        if not waiter.done():
            waiter.set_result(reply)
    if error is None:
        return
    echo = replace(error, trips_breaker=False)
    rest = [waiter for waiter in waiters[len(replies) :] if not waiter.done()]
    for position, waiter in enumerate(rest):
        waiter.set_result(error if position == 0 else echo)

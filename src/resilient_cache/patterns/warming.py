"""Cache warming: pre-populate a cache at start-up, bounded in time, memory and damage.

:func:`warm` writes ``(key, value)`` or ``(key, value, ttl)`` items in ``set_many`` batches:

* **bounded memory**: the items are consumed lazily, one batch at a time, and a batch is
  only filled when a write slot is free, so at most ``concurrency * batch_size`` items are
  held at once, however long the source;
* **bounded concurrency**: at most ``concurrency`` batches in flight;
* **bounded time**: with ``budget`` seconds, warming stops when they are spent (batches in
  flight are cancelled and awaited: no task outlives the call), so warming never delays
  start-up beyond the budget;
* **respects the breaker**: a ``CIRCUIT_OPEN`` answer, an open breaker found in the stack,
  or ``max_failures`` failed batches in a row stop it early; the report says why;
* **never raises for the cache**: faults end up in the :class:`WarmReport`. The item source
  may raise (its own exception propagates, after clean-up), and ``CancelledError`` always
  propagates, after the batches in flight are cancelled and awaited.

``set_many`` is all or nothing, so one invalid item (a key or value the cache refuses with
``VALIDATION``) would fail its whole batch: such a batch is written again item by item, and
only the refused items are counted as ``skipped``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure
from resilient_cache.domain.validation import Limits
from resilient_cache.layers.base import Layer, limits_of
from resilient_cache.layers.circuit_breaker import BreakerState, CircuitBreakerLayer

__all__ = ["StopReason", "WarmItem", "WarmProgress", "WarmReport", "warm"]

WarmItem: TypeAlias = tuple[str, object] | tuple[str, object, int | None]
"""``(key, value)`` or ``(key, value, ttl)``; a ``ttl`` of ``None`` means warm()'s ``ttl``."""

StopReason: TypeAlias = Literal["done", "budget", "unavailable"]
"""Why warming stopped: the source was exhausted, the budget was spent, or Redis was
unavailable (breaker open, or ``max_failures`` failed batches in a row)."""

_REFUSED: Final = frozenset({ErrorCode.VALIDATION, ErrorCode.SERIALIZATION})


@dataclass(frozen=True, slots=True)
class WarmProgress:
    """Where warming stands; passed to ``on_progress`` after every batch.

    Attributes:
        written: items stored.
        failed: items not stored because their batch failed (or was cut by the budget).
        skipped: items refused: a value that is not a ``str`` (without ``encode``), an
            encoder error, or a key/value/ttl the cache rejects (``VALIDATION``).
        batches: ``set_many`` calls finished, failed or not.
        failed_batches: ``set_many`` calls that failed.
        seconds: time since warming started, by warm()'s clock.
    """

    written: int
    failed: int
    skipped: int
    batches: int
    failed_batches: int
    seconds: float

    @property
    def rate(self) -> float:
        """Items written per second (0 before any time has passed)."""
        return self.written / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class WarmReport(WarmProgress):
    """The outcome of :func:`warm`: the final counts, why it stopped and the last error.

    Attributes:
        stopped_because: ``"done"``, ``"budget"`` or ``"unavailable"``.
        last_error: the last failure a batch met (``None`` if none did).
    """

    stopped_because: StopReason = "done"
    last_error: CacheError | None = None


class _Tally:
    """The running counts (one event loop: no lock needed)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.started = clock()
        self.written = self.failed = self.skipped = 0
        self.batches = self.failed_batches = self.failures_in_a_row = 0
        self.last_error: CacheError | None = None

    def progress(self) -> WarmProgress:
        return WarmProgress(self.written, self.failed, self.skipped, self.batches,
                            self.failed_batches, self.clock() - self.started)  # fmt: skip

    def report(self, reason: StopReason) -> WarmReport:
        p = self.progress()
        return WarmReport(p.written, p.failed, p.skipped, p.batches, p.failed_batches,
                          p.seconds, reason, self.last_error)  # fmt: skip


Batch: TypeAlias = dict[int | None, dict[str, str]]  # ttl -> mapping


async def warm(
    cache: CacheProtocol,
    items: Iterable[WarmItem] | AsyncIterable[WarmItem],
    *,
    ttl: int | None = None,
    batch_size: int = 500,
    concurrency: int = 4,
    budget: float | None = None,
    max_failures: int = 3,
    encode: Callable[[object], str] | None = None,
    on_progress: Callable[[WarmProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WarmReport:
    """Write ``items`` into ``cache`` in ``set_many`` batches; see the module docstring.

    Args:
        cache: any cache; normally the stack of ``build_cache()``.
        items: ``(key, value)`` or ``(key, value, ttl)`` tuples, sync or async, consumed
            lazily. A key repeated within one batch is written once (the last value wins).
        ttl: seconds until expiry of items without their own ttl (``None``: no expiry).
        batch_size: items per batch (items of different ttls go in separate ``set_many``).
        concurrency: batches in flight at once.
        budget: seconds after which warming stops (``None``: no limit).
        max_failures: failed batches in a row that stop warming as ``"unavailable"``.
        encode: turns a value into the stored string (e.g. ``json.dumps``); without it,
            values must be ``str``.
        on_progress: called after every batch with a :class:`WarmProgress`; keep it quick.
        clock: a monotonic clock in seconds (a test seam); the budget is checked on it
            between batches, and also enforced on the event loop's clock.

    Returns:
        A :class:`WarmReport`; ``stopped_because`` says whether it finished.

    Raises:
        ValueError: a ``batch_size``, ``concurrency``, ``max_failures`` below 1, or a
            negative ``budget`` (programmer errors).
    """
    _check(batch_size=batch_size, concurrency=concurrency, max_failures=max_failures,
           budget=budget)  # fmt: skip
    tally = _Tally(clock)
    limits = limits_of(cache)  # each batch keeps to the cache's batch limits
    breaker = cache.find(CircuitBreakerLayer) if isinstance(cache, Layer) else None
    source = _aiter(items)
    pending: set[asyncio.Task[None]] = set()

    async def write(batch: Batch) -> None:
        groups = list(batch.items())
        for done, (batch_ttl, mapping) in enumerate(groups):
            try:
                await _write(cache, mapping, batch_ttl, tally)
            except asyncio.CancelledError:  # cut by the budget: not known to be written
                tally.failed += sum(len(m) for _, m in groups[done:])
                raise
            if _unavailable(tally, max_failures):
                tally.failed += sum(len(m) for _, m in groups[done + 1 :])
                break
        if on_progress is not None:
            on_progress(tally.progress())

    async def settle_one() -> None:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.difference_update(done)
        for task in done:
            task.result()  # an exception of on_progress surfaces here

    reason: StopReason = "done"
    exhausted = False
    try:
        async with asyncio.timeout(budget):
            while True:
                if exhausted and not pending:
                    reason = "unavailable" if _unavailable(tally, max_failures) else "done"
                    break
                stop = _should_stop(tally, max_failures, breaker, budget)
                if stop is not None:
                    reason = stop
                    break
                if len(pending) >= concurrency or exhausted:
                    await settle_one()
                    continue
                batch, exhausted = await _fill(
                    source, batch_size, ttl, encode, tally, limits=limits
                )
                if batch:
                    pending.add(asyncio.create_task(write(batch)))
    except TimeoutError:
        reason = "budget"
    finally:
        await _cancel(pending)
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()
    return tally.report(reason)


def _check(*, budget: float | None, **counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget!r}")


def _should_stop(
    tally: _Tally, max_failures: int, breaker: CircuitBreakerLayer | None, budget: float | None
) -> StopReason | None:
    if _unavailable(tally, max_failures):
        return "unavailable"
    if breaker is not None and breaker.state is BreakerState.OPEN:
        return "unavailable"
    if budget is not None and tally.clock() - tally.started >= budget:
        return "budget"
    return None


def _unavailable(tally: _Tally, max_failures: int) -> bool:
    error = tally.last_error
    circuit_open = error is not None and error.code is ErrorCode.CIRCUIT_OPEN
    return tally.failures_in_a_row >= max_failures or (circuit_open and tally.failures_in_a_row > 0)


async def _fill(
    source: AsyncIterator[WarmItem],
    size: int,
    ttl: int | None,
    encode: Callable[[object], str] | None,
    tally: _Tally,
    *,
    limits: Limits,
) -> tuple[Batch, bool]:
    """The next batch, and whether the source is exhausted.

    A batch keeps to the cache's batch limits: at most ``max_batch_keys`` items, and it
    closes once one more item of the largest size allowed could take it past
    ``max_batch_bytes``.
    """
    batch: Batch = {}
    count = held = 0
    size = min(size, limits.max_batch_keys)
    room = limits.max_batch_bytes - (limits.max_key_bytes + limits.max_value_bytes)
    while count < size and (count == 0 or held <= room):
        try:
            item = await anext(source)
        except StopAsyncIteration:
            return batch, True
        key, value = item[0], item[1]
        item_ttl = item[2] if len(item) > 2 else None
        try:
            text = encode(value) if encode is not None else value
        except (TypeError, ValueError):
            text = None
        if not isinstance(text, str) or not isinstance(key, str):
            tally.skipped += 1
            continue
        group = ttl if item_ttl is None else item_ttl
        for other, mapping in batch.items():  # the last value wins, whatever its ttl
            if other != group:
                mapping.pop(key, None)
        batch.setdefault(group, {})[key] = text
        count += 1
        held += len(key.encode(errors="replace")) + len(text.encode(errors="replace"))
    return batch, False


async def _write(
    cache: CacheProtocol, mapping: dict[str, str], ttl: int | None, tally: _Tally
) -> None:
    result = await cache.set_many(mapping, ttl)
    tally.batches += 1
    if not isinstance(result, Failure):
        tally.written += len(mapping)
        tally.failures_in_a_row = 0
        return
    if result.error.code in _REFUSED:  # one bad item fails the batch: find it
        await _write_one_by_one(cache, mapping, ttl, tally)
        return
    tally.failed += len(mapping)
    tally.failed_batches += 1
    tally.failures_in_a_row += 1
    tally.last_error = result.error


async def _write_one_by_one(
    cache: CacheProtocol, mapping: dict[str, str], ttl: int | None, tally: _Tally
) -> None:
    failed = False
    for key, value in mapping.items():
        result = await cache.set(key, value, ttl)
        if not isinstance(result, Failure):
            tally.written += 1
        elif result.error.code in _REFUSED:
            tally.skipped += 1
        else:
            failed = True
            tally.failed += 1
            tally.last_error = result.error
    if failed:
        tally.failed_batches += 1
        tally.failures_in_a_row += 1
    else:
        tally.failures_in_a_row = 0


async def _cancel(pending: set[asyncio.Task[None]]) -> None:
    """Cancel the batches in flight and wait for them: nothing outlives warm()."""
    if not pending:
        return
    tasks = list(pending)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pending.clear()


class _Closable(AsyncIterator[WarmItem]):
    """A wrapper of a sync iterable (closable, like an async generator)."""

    def __init__(self, items: Iterable[WarmItem]) -> None:
        self._items: Iterator[WarmItem] = iter(items)

    async def __anext__(self) -> WarmItem:
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


def _aiter(items: Iterable[WarmItem] | AsyncIterable[WarmItem]) -> AsyncIterator[WarmItem]:
    if isinstance(items, AsyncIterable):
        return aiter(items)
    return _Closable(items)

"""The measurements, and the interleaved rounds that run them.

One round runs every measurement for every client, one after the other, the clients in an
order rotated by one place each round (so that no client is always first after a pause or
always last in a warm cache); the report takes each figure's median over the rounds. Every
client gets its own keys, written through the client itself (cashews pickles values,
aiocache JSON-encodes them, so they cannot share), and a warm-up that fills its pool before
the first round.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import math
import shlex
import shutil
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import urlsplit

from resilient_cache import (
    BreakerState,
    CircuitBreakerLayer,
    ErrorCode,
    Failure,
    Layer,
    RedisAdapter,
)
from resilient_cache.cli.bench import system
from resilient_cache.cli.bench.clients import (
    CONTENDERS,
    POOL_SIZE,
    Client,
    Contender,
    StackClient,
    build_stack,
)
from resilient_cache.testing import ManualClock, free_port

VALUE: Final = "".join(chr(ord("a") + i % 26) for i in range(100))
"""Every value: 100 bytes."""

CELL_TIMEOUT: Final = 60.0
"""A cell that takes longer is abandoned and its client dropped (a hung peer)."""


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    rounds: int
    sequential_ops: int
    throughput_seconds: float
    batch_calls: int
    breaker_calls: int
    refused_calls: int
    memory_gets: int
    memory_warmup: int
    warmup_seconds: float
    concurrency: tuple[int, ...] = (1, 10, 50, 200)
    keys: int = 1000
    batch_size: int = 100
    memory_concurrency: int = 50
    memory_checkpoints: int = 4
    big_calls: int = 5
    big_keys: int = 10_000
    """``get_many`` of this many keys: the default ``max_batch_keys``."""
    big_values: int = 100
    big_value_bytes: int = 100_000
    """``set_many`` of ``big_values`` values of this size (10 MB, under ``max_batch_bytes``)."""
    c_benchmark_requests: int = 40_000
    """GETs that ``redis-benchmark -c 50`` sends per round (its column)."""


FULL: Final = Plan(
    rounds=5,
    sequential_ops=2_000,
    throughput_seconds=0.5,
    batch_calls=200,
    breaker_calls=20_000,
    refused_calls=300,
    memory_gets=200_000,  # a million under tracemalloc takes ~5 min on 2 CPUs: projected
    memory_warmup=10_000,
    warmup_seconds=0.3,
)

QUICK: Final = Plan(
    rounds=1,
    sequential_ops=200,
    throughput_seconds=0.1,
    batch_calls=20,
    breaker_calls=2_000,
    refused_calls=30,
    memory_gets=20_000,
    memory_warmup=2_000,
    warmup_seconds=0.05,
    big_calls=1,
    c_benchmark_requests=4_000,
)


@dataclass(frozen=True)
class Sample:
    """One client, one measurement, one round."""

    value: float
    """us per call for latencies, successful calls per second for throughputs."""
    calls: int
    failures: int
    p50_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    stall_us: float | None = None
    """The longest time the event loop went without a turn for other tasks (big batches)."""


@dataclass(frozen=True)
class Keys:
    """One client's keys: existing ones to read, others to write."""

    existing: list[str]
    writes: list[str]
    batches: list[list[str]]
    mapping: dict[str, str]
    big_batch: list[str]
    """``big_keys`` existing keys, for the big ``get_many``."""
    big_mapping: dict[str, str]
    """``big_values`` values of ``big_value_bytes``, for the big ``set_many``."""

    @classmethod
    def for_client(cls, name: str, plan: Plan) -> Keys:
        prefix = "bench:" + name.replace(" ", "-") + ":"
        existing = [f"{prefix}k{i}" for i in range(plan.keys)]
        size = plan.batch_size
        big_value = (VALUE * (plan.big_value_bytes // len(VALUE) + 1))[: plan.big_value_bytes]
        return cls(
            existing=existing,
            writes=[f"{prefix}w{i}" for i in range(plan.keys)],
            batches=[existing[i : i + size] for i in range(0, plan.keys - size + 1, size)],
            mapping={f"{prefix}m{i}": VALUE for i in range(size)},
            big_batch=[f"{prefix}b{i}" for i in range(plan.big_keys)],
            big_mapping={f"{prefix}B{i}": big_value for i in range(plan.big_values)},
        )


Run = Callable[[Client, Keys, Plan], Awaitable[Sample]]


@dataclass(frozen=True)
class Measure:
    """A column of the report."""

    id: str
    title: str
    unit: str
    higher_is_better: bool
    run: Run
    concurrency: int | None = None
    big: bool = False
    """A big batch: the longest event-loop stall during it is reported too."""


def _quantiles(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    last = len(ordered) - 1
    return (
        ordered[last // 2] * 1e6,
        ordered[min(last, math.ceil(0.99 * last))] * 1e6,
        ordered[last] * 1e6,
    )


async def _sequential(
    call: Callable[[str], Awaitable[bool]], keys: Sequence[str], count: int
) -> Sample:
    latencies: list[float] = []
    failures = 0
    perf = time.perf_counter
    started = perf()
    for i in range(count):
        before = perf()
        try:
            ok = await call(keys[i % len(keys)])
        except Exception:
            ok = False
        latencies.append(perf() - before)
        failures += not ok
    elapsed = perf() - started
    p50, p99, worst = _quantiles(latencies)
    return Sample(elapsed / count * 1e6, count, failures, p50, p99, worst)


async def sequential_get(client: Client, keys: Keys, plan: Plan) -> Sample:
    """One coroutine, one GET after another, of existing keys."""
    return await _sequential(client.get, keys.existing, plan.sequential_ops)


async def sequential_set(client: Client, keys: Keys, plan: Plan) -> Sample:
    """One coroutine, one SET after another."""

    async def write(key: str) -> bool:
        return await client.set(key, VALUE)

    return await _sequential(write, keys.writes, plan.sequential_ops)


def throughput(concurrency: int) -> Run:
    """``concurrency`` coroutines, each GETting existing keys until the time is up."""

    async def run(client: Client, keys: Keys, plan: Plan) -> Sample:
        loop = asyncio.get_running_loop()
        existing = keys.existing
        stride = max(1, len(existing) // concurrency)
        latencies: list[float] = []
        failures = 0
        get = client.get
        perf = time.perf_counter

        async def worker(index: int) -> None:
            nonlocal failures
            position = index * stride
            while loop.time() < stop:
                before = perf()
                try:
                    ok = await get(existing[position % len(existing)])
                except Exception:
                    ok = False
                latencies.append(perf() - before)
                failures += not ok
                position += 1

        stop = loop.time() + plan.throughput_seconds
        started = perf()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = perf() - started
        p50, p99, worst = _quantiles(latencies)
        calls = len(latencies)
        return Sample((calls - failures) / elapsed, calls, failures, p50, p99, worst)

    return run


async def _batches(call: Callable[[int], Awaitable[bool]], count: int) -> Sample:
    failures = 0
    started = time.perf_counter()
    for i in range(count):
        try:
            ok = await call(i)
        except Exception:
            ok = False
        failures += not ok
    return Sample((time.perf_counter() - started) / count * 1e6, count, failures)


async def get_many(client: Client, keys: Keys, plan: Plan) -> Sample:
    """One coroutine reading ``batch_size`` existing keys per call."""

    async def call(i: int) -> bool:
        batch = keys.batches[i % len(keys.batches)]
        return await client.get_many(batch) == len(batch)

    return await _batches(call, plan.batch_calls)


async def set_many(client: Client, keys: Keys, plan: Plan) -> Sample:
    """One coroutine writing ``batch_size`` keys per call."""

    async def call(_: int) -> bool:
        return await client.set_many(keys.mapping)

    return await _batches(call, plan.batch_calls)


class LoopWatch:
    """The longest the event loop went without running a task that asks for a turn every
    millisecond: what a batch makes every other request of the process wait. A stall that
    runs up to the end of the block counts too."""

    INTERVAL: Final = 0.001

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last - self.INTERVAL)
        self._last = now

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL)
            self._tick()

    async def __aenter__(self) -> LoopWatch:
        self._last = time.perf_counter()
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0)  # let it take its first time
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._tick()  # the time since its last turn: the block may have ended in a stall
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _watched(call: Callable[[int], Awaitable[bool]], count: int) -> Sample:
    """:func:`_batches`, with the longest event-loop stall during them."""
    async with LoopWatch() as watch:
        sample = await _batches(call, count)
    return replace(sample, stall_us=watch.longest * 1e6)


async def big_get_many(client: Client, keys: Keys, plan: Plan) -> Sample:
    """One coroutine reading ``big_keys`` existing keys per call, the loop watched."""

    async def call(_: int) -> bool:
        return await client.get_many(keys.big_batch) == plan.big_keys

    return await _watched(call, plan.big_calls)


async def big_set_many(client: Client, keys: Keys, plan: Plan) -> Sample:
    """One coroutine writing ``big_values`` values of ``big_value_bytes`` per call, watched."""
    return await _watched(lambda _: client.set_many(keys.big_mapping), plan.big_calls)


def _coroutines(count: int) -> str:
    return f"get, {count} coroutine{'s' if count > 1 else ''}"


def measures(plan: Plan) -> list[Measure]:
    """The columns, in report order."""
    return [
        Measure("get", "get, sequential", "us", False, sequential_get),
        Measure("set", "set, sequential", "us", False, sequential_set),
        *(
            Measure(f"get_x{c}", _coroutines(c), "ops/s", True, throughput(c), c)
            for c in plan.concurrency
        ),
        Measure("get_many", f"get_many({plan.batch_size})", "us", False, get_many),
        Measure("set_many", f"set_many({plan.batch_size})", "us", False, set_many),
        Measure(
            "get_many_big", f"get_many({plan.big_keys:,})", "us", False, big_get_many, big=True
        ),
        Measure(
            "set_many_big",
            f"set_many({plan.big_values} x {plan.big_value_bytes // 1000} KB)",
            "us",
            False,
            big_set_many,
            big=True,
        ),
    ]


def loop_measures(plan: Plan, loops: Sequence[str]) -> list[Measure]:
    """:func:`measures` for the first event loop, then again for each other one
    (``get@uvloop``, titled ``get, sequential [uvloop]``)."""
    first = measures(plan)
    return first + [
        replace(m, id=f"{m.id}@{loop}", title=f"{m.title} [{loop}]")
        for loop in loops[1:]
        for m in first
    ]


# -- the circuit breaker's open path, and memory ---------------------------------------


async def open_breaker(coalesce: bool) -> Layer:
    """A stack against a closed port, failed until its circuit opens; its clock is frozen."""
    stack = build_stack(
        f"redis://127.0.0.1:{free_port()}/0", coalesce=coalesce, clock=ManualClock()
    )
    breaker = stack.find(CircuitBreakerLayer)
    assert breaker is not None
    for _ in range(50):
        if breaker.state is BreakerState.OPEN:
            return stack
        await stack.get("bench:breaker")
    await stack.aclose()
    raise RuntimeError(f"the circuit did not open ({breaker.state})")


async def rejected_calls(cache: Layer | RedisAdapter, count: int, code: ErrorCode) -> float:
    """us per ``get`` that fails with ``code`` (checked on the first and the last)."""
    first = await cache.get("bench:breaker")
    if not (isinstance(first, Failure) and first.error.code is code):
        raise RuntimeError(f"expected {code}, got {first!r}")
    started = time.perf_counter()
    for _ in range(count):
        await cache.get("bench:breaker")
    elapsed = time.perf_counter() - started
    last = await cache.get("bench:breaker")
    if not (isinstance(last, Failure) and last.error.code is code):
        raise RuntimeError(f"expected {code} to the end, got {last!r}")
    return elapsed / count * 1e6


@dataclass(frozen=True)
class Memory:
    """tracemalloc's current size over many gets through one client."""

    gets: int
    warmup: int
    concurrency: int
    after_warmup: int
    checkpoints: list[tuple[int, int]]
    """(gets done, bytes traced) after each part of the run."""
    failures: int
    seconds: float

    @property
    def growth(self) -> int:
        return self.checkpoints[-1][1] - self.after_warmup


async def memory(client: Client, keys: Keys, plan: Plan) -> Memory:
    """Run ``memory_gets`` gets (in parts) after a warm-up; trace the memory in use."""
    existing = keys.existing
    failures = 0

    async def gets(count: int) -> None:
        per_worker = count // plan.memory_concurrency

        async def worker(index: int) -> None:
            nonlocal failures
            for i in range(index * 7, index * 7 + per_worker):
                failures += not await client.get(existing[i % len(existing)])

        await asyncio.gather(*(worker(i) for i in range(plan.memory_concurrency)))

    def traced() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        await gets(plan.memory_warmup)
        failures = 0
        base = traced()
        part = plan.memory_gets // plan.memory_checkpoints
        checkpoints = []
        started = time.perf_counter()
        for done in range(part, part * plan.memory_checkpoints + 1, part):
            await gets(part)
            checkpoints.append((done, traced()))
        seconds = time.perf_counter() - started
    finally:
        tracemalloc.stop()
    return Memory(
        gets=checkpoints[-1][0],
        warmup=plan.memory_warmup,
        concurrency=plan.memory_concurrency,
        after_warmup=base,
        checkpoints=checkpoints,
        failures=failures,
        seconds=seconds,
    )


# -- the run -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything one run measured, raw (the report aggregates it)."""

    plan: Plan
    clients: dict[str, dict[str, str]] = field(default_factory=dict)
    """name -> description, status ("ok" or "n/a") and the reason for "n/a"."""
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    breaker_open_us: dict[str, list[float]] = field(default_factory=dict)
    refused_us: list[float] = field(default_factory=list)
    memory: dict[str, Memory] = field(default_factory=dict)
    loops: list[str] = field(default_factory=lambda: ["asyncio"])
    """The event loops measured: the first is the plain columns, the others ``id@loop``."""
    import_seconds: dict[str, list[float]] = field(default_factory=dict)
    """module -> how long importing it took, each time (a fresh interpreter each)."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    event_loop: str = ""


MEMORY_RUNS: Final = ("stack", "stack+coalesce")
"""The clients whose memory is traced over many gets."""

C_BENCHMARK: Final = "redis-benchmark"
"""The C client's row: Redis' own load generator, 50 connections, no pipelining."""


C_BENCHMARK_TIMEOUT: Final = 60.0
"""A ``redis-benchmark`` run that takes longer is killed, and its column dropped."""


async def _tool(argv: list[str]) -> str:
    """Run ``argv``; its standard output. ``RuntimeError`` if it fails or takes too long."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(C_BENCHMARK_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{shlex.join(argv)} took over {C_BENCHMARK_TIMEOUT:.0f} s") from None
    if process.returncode != 0:
        said = err.decode(errors="replace").strip()[-300:]
        raise RuntimeError(f"{shlex.join(argv)} exited with {process.returncode}: {said}")
    return out.decode(errors="replace")


def _c_benchmark_argv(binary: str, url: str, *args: str) -> list[str]:
    parts = urlsplit(url)
    return [binary, "-h", str(parts.hostname), "-p", str(parts.port), "-d", str(len(VALUE)),
            *args]  # fmt: skip


async def c_benchmark(binary: str, url: str, plan: Plan, concurrency: int) -> Sample:
    """GETs per second of ``redis-benchmark -c <concurrency> -t get -d 100`` (one process,
    hiredis, no pipelining) against the same server, read from its CSV output."""
    requests = plan.c_benchmark_requests
    argv = _c_benchmark_argv(
        binary, url, "-c", str(concurrency), "-n", str(requests), "-t", "get", "--csv"
    )
    out = await _tool(argv)
    for row in csv.reader(out.splitlines()):
        if row[:1] == ["GET"]:
            return Sample(float(row[1]), requests, 0)
    raise RuntimeError(f"{shlex.join(argv)} gave no GET figure: {out[-300:]!r}")


async def _c_benchmark_key(binary: str, url: str) -> None:
    """The key ``redis-benchmark -t get`` reads, written with a 100-byte value like ours."""
    await _tool(_c_benchmark_argv(binary, url, "-c", "1", "-n", "1", "-t", "set", "-q"))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _prepare(contender: Contender, url: str, keys: Keys, plan: Plan) -> Client:
    """Build a client, write its keys through it, check its answers, fill its pool."""
    client = await contender.build(url)
    try:
        for key in keys.existing:
            if not await client.set(key, VALUE):
                raise RuntimeError(f"set({key!r}) failed")
        missing = [key for key in keys.existing if not await client.get(key)]
        if missing:
            raise RuntimeError(f"get() did not find {len(missing)} keys just set")
        if await client.get_many(keys.batches[0]) != plan.batch_size:
            raise RuntimeError("get_many() did not find keys just set")
        if not await client.set_many(keys.mapping):
            raise RuntimeError("set_many() failed")
        for start in range(0, len(keys.big_batch), 1000):
            if not await client.set_many(
                dict.fromkeys(keys.big_batch[start : start + 1000], VALUE)
            ):
                raise RuntimeError("set_many() of the big batch's keys failed")
        await throughput(POOL_SIZE)(
            client, keys, replace(plan, throughput_seconds=plan.warmup_seconds)
        )
        await client.recover()
    except BaseException:
        await client.aclose()
        raise
    return client


class _Run:
    """The state of one run: the clients still in it, their keys, the outcome so far."""

    def __init__(self, url: str, plan: Plan) -> None:
        self.url = url
        self.plan = plan
        self.outcome = Outcome(plan, event_loop=type(asyncio.get_running_loop()).__name__)
        self.clients: list[Client] = []
        self.keys: dict[str, Keys] = {}
        self.breakers: dict[str, Layer] = {}
        self.refused = RedisAdapter.from_url(f"redis://127.0.0.1:{free_port()}/0")
        self.c_benchmark = shutil.which(C_BENCHMARK) if 50 in plan.concurrency else None

    async def prepare(self, contenders: Sequence[Contender]) -> None:
        """Build every client that can run here; mark the others n/a with the reason."""
        for contender in contenders:
            entry = {"description": contender.description, "status": "ok", "reason": ""}
            self.outcome.clients[contender.name] = entry
            reason = contender.missing()
            if reason is None:
                keys = self.keys[contender.name] = Keys.for_client(contender.name, self.plan)
                try:
                    self.clients.append(await _prepare(contender, self.url, keys, self.plan))
                except Exception as exc:
                    reason = f"failed to run: {type(exc).__name__}: {exc}"
            if reason is not None:
                entry.update(status="n/a", reason=reason)
                _log(f"  {contender.name}: n/a ({reason})")
        entry = {
            "description": f"{C_BENCHMARK} -c 50 -t get -d {len(VALUE)}: Redis' C load generator "
            "(hiredis, no pipelining), get at 50 connections only",
            "status": "ok",
            "reason": "",
        }
        self.outcome.clients[C_BENCHMARK] = entry
        if self.c_benchmark is None:
            entry.update(status="n/a", reason=f"no {C_BENCHMARK} on PATH (Debian: redis-tools)")
        else:
            try:
                await _c_benchmark_key(self.c_benchmark, self.url)
            except (RuntimeError, OSError) as exc:
                self._drop_c_benchmark(str(exc))
        for client in self.clients:
            if isinstance(client, StackClient):
                try:
                    coalesce = client.name.endswith("coalesce")
                    self.breakers[client.name] = await open_breaker(coalesce)
                except Exception as exc:
                    self.outcome.notes.append(f"{client.name}: breaker not measured: {exc}")

    async def cell(self, number: int, measure: Measure, client: Client) -> None:
        """One measurement of one client; a client that hangs is dropped."""
        gc.collect()
        try:
            async with asyncio.timeout(CELL_TIMEOUT):
                sample = await measure.run(client, self.keys[client.name], self.plan)
        except TimeoutError:
            reason = f"{measure.title} took over {CELL_TIMEOUT:.0f} s: dropped"
            self.outcome.clients[client.name].update(status="n/a", reason=reason)
            self.outcome.notes.append(f"{client.name}: {reason}")
            self.clients.remove(client)
            await client.aclose()
            return
        self.outcome.samples[measure.id][client.name].append(sample)
        note = await client.recover()
        if note:
            self.outcome.notes.append(
                f"{measure.title}, {client.name}: {note} (round {number + 1})"
            )

    async def round(self, number: int, columns: list[Measure]) -> None:
        """Every measurement for every client, the clients' order rotated by ``number``."""
        shift = number % max(1, len(self.clients))
        order = self.clients[shift:] + self.clients[:shift]
        for measure in columns:
            for client in order:
                if client in self.clients:  # not dropped earlier in this round
                    await self.cell(number, measure, client)
        if self.c_benchmark is not None:
            try:
                sample = await c_benchmark(self.c_benchmark, self.url, self.plan, 50)
            except (RuntimeError, OSError) as exc:
                self._drop_c_benchmark(f"{exc} (round {number + 1})")
            else:
                self.outcome.samples["get_x50"].setdefault(C_BENCHMARK, []).append(sample)
        for name, stack in self.breakers.items():
            gc.collect()
            cost = await rejected_calls(stack, self.plan.breaker_calls, ErrorCode.CIRCUIT_OPEN)
            self.outcome.breaker_open_us.setdefault(name, []).append(cost)
        self.outcome.refused_us.append(
            await rejected_calls(self.refused, self.plan.refused_calls, ErrorCode.CONNECTION)
        )

    def _drop_c_benchmark(self, reason: str) -> None:
        """``redis-benchmark`` failed: no such column in this run (the others stand)."""
        self.c_benchmark = None
        self.outcome.clients[C_BENCHMARK].update(status="n/a", reason=f"failed: {reason}")
        self.outcome.samples.get("get_x50", {}).pop(C_BENCHMARK, None)
        self.outcome.notes.append(f"{C_BENCHMARK}: {reason}")

    async def memory(self) -> None:
        """The memory run, through every stack."""
        for client in self.clients:
            if isinstance(client, StackClient) and client.name in MEMORY_RUNS:
                _log(f"  memory: {self.plan.memory_gets:,} gets through {client.name}...")
                result = await memory(client, self.keys[client.name], self.plan)
                self.outcome.memory[client.name] = result
                _log(f"    {result.seconds:.0f} s, {result.growth:+,} bytes")

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        for stack in self.breakers.values():
            await stack.aclose()
        await self.refused.aclose()


async def run(
    url: str, plan: Plan, contenders: Sequence[Contender] = CONTENDERS, *, memory: bool = True
) -> Outcome:
    """Prepare every client, run the interleaved rounds, then (``memory``) the memory runs
    and the import times."""
    started = time.perf_counter()
    state = _Run(url, plan)
    try:
        await state.prepare(contenders)
        columns = measures(plan)
        for measure in columns:
            state.outcome.samples[measure.id] = {client.name: [] for client in state.clients}
        for number in range(plan.rounds):
            round_started = time.perf_counter()
            await state.round(number, columns)
            elapsed = time.perf_counter() - round_started
            _log(f"  round {number + 1}/{plan.rounds}: {elapsed:.1f} s")
        if memory:
            await state.memory()
    finally:
        await state.aclose()
    if memory:
        state.outcome.import_seconds = system.import_seconds(plan.rounds)
    state.outcome.seconds = time.perf_counter() - started
    return state.outcome


def merge(outcome: Outcome, other: Outcome, loop: str) -> None:
    """Add ``other``, the same rounds under the event loop ``loop``, to ``outcome`` as its
    ``@loop`` columns (and ``name@loop`` breaker figures)."""
    outcome.loops.append(loop)
    for measure_id, per_client in other.samples.items():
        outcome.samples[f"{measure_id}@{loop}"] = per_client
    for name, costs in other.breaker_open_us.items():
        outcome.breaker_open_us[f"{name}@{loop}"] = costs
    outcome.notes += [f"[{loop}] {note}" for note in other.notes]
    for name, entry in other.clients.items():
        if entry["status"] != "ok" and outcome.clients.get(name, {}).get("status") == "ok":
            outcome.notes.append(f"[{loop}] {name}: n/a ({entry['reason']})")
    outcome.seconds += other.seconds


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else math.nan

"""The campaign: random calls from concurrent workers, random faults, checked by the model.

One run is driven by one seed. For each topology x shape it repeats *cycles*: workers call
all 15 methods of ``CacheProtocol`` on colliding keys (some calls cancelled by their caller
through ``asyncio.timeout``, ``wait_for`` or ``task.cancel()``) while zero to three faults
start and stop at random times; then the faults are repaired and the campaign measures how
long the stack takes to heal, reads every key back (the quiescent point), and judges the
cycle's history with :class:`~tests.torture.model.Model`. Each call is also judged at once:
no exception but the caller's own cancellation, a ``Result`` of the right type, back within
its deadline + 50 ms (+ any time this machine ran no process at all, measured by a separate
process: see :class:`LagMonitor`), and a cancellation never swallowed.

The seed fixes every choice the campaign makes (operations, keys, values, faults, their
times and durations); how the machine schedules the processes does not replay, so a replay
(``make torture SEED=...``) re-runs the same schedule, not the same interleaving.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import gc
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
from prometheus_client import CollectorRegistry

from resilient_cache import (
    CacheProtocol,
    CacheSettings,
    CircuitBreakerLayer,
    Failure,
    NearCacheLayer,
    Success,
    build_cache,
)
from resilient_cache.bootstrap import build_backend
from resilient_cache.domain import defaults
from resilient_cache.domain.protocol import JsonValue
from resilient_cache.layers.base import backend_of
from resilient_cache.testing.toxiproxy import ToxiproxyError
from tests.servers import require_binary_path
from tests.torture.model import Event, Model, Op, Violation, ident
from tests.torture.world import Cluster, Deployment, Fault, Sentinel, Standalone, keep_log

TOPOLOGIES: Final = ("standalone", "cluster", "sentinel")
SHAPES: Final = ("adapter", "defaults", "coalesce", "near_cache", "compression", "encryption")
NOT_APPLICABLE: Final = {
    ("cluster", "coalesce"): "RedisClusterAdapter refuses coalesce_reads (a start-up error)",
    ("cluster", "near_cache"): "the near cache refuses Redis Cluster (a start-up error)",
}
SLACK: Final = 0.05
"""The promise: every call back within its deadline + 50 ms."""
STRING_KEYS: Final = tuple(f"s:{i}" for i in range(24))
JSON_KEYS: Final = tuple(f"j:{i}" for i in range(6))
COUNTER_KEYS: Final = tuple(f"c:{i}" for i in range(6))
MODEL_KEYS: Final = (*STRING_KEYS, *JSON_KEYS, *COUNTER_KEYS)
HUGE_BATCH: Final = 100_000
FILLER: Final = tuple(f"x:{i}" for i in range(HUGE_BATCH))
"""Keys outside the model for batches at and beyond the batch limits."""
PATTERNS: Final = ("s:1*", "s:2?", "s:*", "j:*", "s:[0-4]", "nothing:*")
BREAKER: Final = {"reset_timeout": 0.5, "reset_timeout_max": 2.0}
"""The breaker's open time, shortened from 5 s (max 60 s) so a minute holds many cycles."""
ENCRYPTION_KEY: Final = base64.b64encode(bytes(range(32))).decode()

METHODS: Final = {  # method -> weight
    "get": 20, "set": 15, "get_many": 6, "set_many": 4, "get_json": 5, "set_json": 4,
    "delete": 4, "exists": 4, "expire": 2, "increment": 8, "decrement": 3, "ttl": 3,
    "ping": 2, "delete_pattern": 0.6, "flush": 0.2,
}  # fmt: skip


# -- the machine's own stalls -----------------------------------------------------------

BUCKET: Final = 0.05
RING: Final = 8192


def _lag_child(ids: Any, lags: Any, stop: Any) -> None:  # pragma: no cover - a subprocess
    tick = 0.005
    expected = time.monotonic() + tick
    while not stop.is_set():
        time.sleep(max(0.0, expected - time.monotonic()))
        now = time.monotonic()
        late = max(0.0, now - expected)
        bucket = int(now / BUCKET)
        i = bucket % RING
        if ids[i] != bucket:
            ids[i] = bucket
            lags[i] = late
        elif late > lags[i]:
            lags[i] = late
        expected = now + tick


def _run_delay() -> float:
    """Seconds this thread has waited on a run queue (Linux ``schedstat``; 0 elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


HELD_AFTER: Final = 0.02
"""A ticker this late means the loop is held: where, is sampled (every 5 ms)."""


def _where(frame: Any) -> str:
    """The innermost frames of a stack, and the innermost in the library, as ``file:line``."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    ours = next((f for f in frames if "resilient_cache" in f.f_code.co_filename), None)
    chosen = [*frames[:2], *([ours] if ours is not None and ours not in frames[:2] else [])]
    return " < ".join(
        f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {f.f_code.co_name}" for f in chosen
    )


class LoopLag:
    """How late this process's event loop ran a 5 ms ticker (the loop blocked, by anyone)."""

    def __init__(self) -> None:
        self.ids = [0] * RING
        self.lags = [0.0] * RING
        self.waits = [0.0] * RING
        self.gc_ids = [0] * RING
        self.gc_pauses = [0.0] * RING
        self._gc_began = 0.0
        self.task: asyncio.Task[None] | None = None
        self.beat = time.monotonic()
        self.held: dict[int, collections.Counter[str]] = {}  # bucket -> where the loop was
        self._watching = False

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_began = now
            return
        bucket = int(time.monotonic() / BUCKET)
        i = bucket % RING
        pause = now - self._gc_began
        if self.gc_ids[i] != bucket:
            self.gc_ids[i], self.gc_pauses[i] = bucket, pause
        else:
            self.gc_pauses[i] += pause

    def gc_pause(self, start: float, end: float) -> float:
        """Time the garbage collector held this process between ``start`` and ``end``."""
        return sum(
            self.gc_pauses[b % RING] for b in range(int(start / BUCKET), int(end / BUCKET) + 2)
            if self.gc_ids[b % RING] == b
        )  # fmt: skip

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._tick())
        gc.callbacks.append(self._on_gc)
        self._watching = True
        loop_thread = threading.get_ident()
        threading.Thread(target=self._watch, args=(loop_thread,), daemon=True).start()

    def _watch(self, loop_thread: int) -> None:
        """While the ticker is late, sample where the loop's thread is (what holds it)."""
        while self._watching:
            time.sleep(0.005)
            now = time.monotonic()
            if now - self.beat < HELD_AFTER:
                continue
            frame = sys._current_frames().get(loop_thread)
            if frame is None:
                continue
            bucket = int(now / BUCKET)
            self.held.setdefault(bucket, collections.Counter())[_where(frame)] += 1
            for old in [b for b in self.held if b < bucket - RING]:
                del self.held[old]

    def held_in(self, start: float, end: float, most: int = 3) -> str:
        """Where the loop was held longest between ``start`` and ``end`` (5 ms samples)."""
        found: collections.Counter[str] = collections.Counter()
        for bucket in range(int(start / BUCKET), int(end / BUCKET) + 2):
            found.update(self.held.get(bucket, {}))
        return "; ".join(f"{where} x{n}" for where, n in found.most_common(most)) or "nowhere"

    async def stop(self) -> None:
        self._watching = False
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _tick(self) -> None:
        waited = _run_delay()
        while True:
            expected = time.monotonic() + 0.005
            await asyncio.sleep(0.005)
            now = self.beat = time.monotonic()
            bucket = int(now / BUCKET)
            i = bucket % RING
            late = max(0.0, now - expected)
            before, waited = waited, _run_delay()
            if self.ids[i] != bucket:
                self.ids[i], self.lags[i], self.waits[i] = bucket, late, 0.0
            elif late > self.lags[i]:
                self.lags[i] = late
            self.waits[i] += waited - before

    def preempted(self, start: float, end: float) -> float:
        """Time this thread was ready to run but waited for a CPU, between ``start`` and
        ``end`` (the kernel's ``run_delay``): the machine's doing, not the loop's."""
        return sum(
            self.waits[b % RING] for b in range(int(start / BUCKET), int(end / BUCKET) + 2)
            if self.ids[b % RING] == b
        )  # fmt: skip

    def stall(self, start: float, end: float) -> float:
        return max(
            (self.lags[b % RING] for b in range(int(start / BUCKET), int(end / BUCKET) + 2)
             if self.ids[b % RING] == b),
            default=0.0,
        )  # fmt: skip


class LagMonitor:
    """A separate process that measures how late it wakes up: time this machine ran no
    process at all. A call is allowed that much more than its deadline + 50 ms; time the
    campaign's own process spent on the CPU (the library blocking the loop included) is
    never excused."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ids = ctx.Array("q", RING, lock=False)
        self._lags = ctx.Array("d", RING, lock=False)
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=_lag_child, args=(self._ids, self._lags, self._stop), daemon=True
        )

    def __enter__(self) -> LagMonitor:
        self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()

    def stall(self, start: float, end: float) -> float:
        """The longest stall the machine had between ``start`` and ``end``."""
        worst = 0.0
        for bucket in range(int(start / BUCKET), int(end / BUCKET) + 2):
            i = bucket % RING
            if self._ids[i] == bucket:
                worst = max(worst, self._lags[i])
        return worst


# -- shapes ------------------------------------------------------------------------------


@dataclass
class Shape:
    """The stacks under test (two for the near cache: a second instance writes the same
    keys), the stack to read back at quiescent points, and the parts the campaign watches."""

    name: str
    instances: list[CacheProtocol]
    reader: CacheProtocol
    backend: Any
    breaker: CircuitBreakerLayer | None
    deadline: float
    bulk_deadline: float
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                await close()


def _silent_logger() -> Any:
    def drop(*_: object) -> Any:
        raise structlog.DropEvent

    return structlog.wrap_logger(None, processors=[drop])


def _settings(
    deployment: Deployment, shape: str, namespace: str, socket_timeout: float | None = None
) -> CacheSettings:
    fields: dict[str, Any] = {
        **deployment.settings(),
        "namespace": namespace,
        "name": f"torture-{shape}",
        "breaker": BREAKER,
        "observability": {"tracing": False},
    }
    redis: dict[str, Any] = {}
    if socket_timeout is not None:  # redis-py's own timeouts (and cluster refreshes after them)
        redis["socket_timeout"] = socket_timeout
    if shape == "coalesce":
        redis["coalesce_reads"] = True
    if redis:
        fields["redis"] = redis
    if shape == "near_cache":
        fields["near_cache"] = {"enabled": True}
    elif shape == "compression":
        fields["compression"] = {"enabled": True, "threshold": 64}
    elif shape == "encryption":
        fields["encryption"] = {
            "keys": {"k1": ENCRYPTION_KEY}, "current": "k1", "allow_plaintext_counters": True,
        }  # fmt: skip
    return CacheSettings(**fields)


def build_shape(
    deployment: Deployment,
    shape: str,
    namespace: str,
    on_invalidation: Callable[[int, Sequence[str] | None], None],
    socket_timeout: float | None = None,
) -> Shape:
    settings = _settings(deployment, shape, namespace, socket_timeout)
    if shape == "adapter":
        adapter = build_backend(settings)
        return Shape(shape, [adapter], adapter, adapter, None, settings.deadline,
                     settings.bulk_deadline, [adapter.aclose])  # fmt: skip
    stacks = [
        build_cache(settings, registry=CollectorRegistry(), logger=_silent_logger())
        for _ in range(2 if shape == "near_cache" else 1)
    ]
    for n, stack in enumerate(stacks):
        near = stack.find(NearCacheLayer)
        if near is not None:
            near.source.add_listener(functools.partial(on_invalidation, n))
    first = stacks[0]
    near = first.find(NearCacheLayer)
    reader = near.inner if near is not None else first
    return Shape(shape, list(stacks), reader, backend_of(first), first.find(CircuitBreakerLayer),
                 settings.deadline, settings.bulk_deadline, [s.aclose for s in stacks])  # fmt: skip


# -- one worker's calls -------------------------------------------------------------------


@dataclass
class Stats:
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    worst_over_deadline: float = -1.0
    worst_call: str = ""
    excused: int = 0
    recoveries: list[float] = field(default_factory=list)
    cycles: int = 0
    seconds: float = 0.0
    first_violation_at: int | None = None
    """Calls made in this topology x shape when the first violation was seen."""
    first_by_invariant: dict[str, int] = field(default_factory=dict)

    @property
    def applied(self) -> int:
        """Faults applied (those that could not be, e.g. on a frozen node, not counted)."""
        return sum(n for kind, n in self.faults.items() if not kind.startswith("not_applied"))

    def as_json(self) -> dict[str, Any]:
        rec = sorted(self.recoveries)
        return {
            "calls": self.calls,
            "outcomes": dict(self.outcomes),
            "faults": dict(self.faults),
            "violations": dict(self.violations),
            "slowest_call_minus_deadline_ms": round(self.worst_over_deadline * 1000, 1),
            "slowest_call": self.worst_call,
            "calls_excused_by_machine_stalls": self.excused,
            "recovery_seconds": {
                "count": len(rec),
                "median": round(statistics.median(rec), 3) if rec else None,
                "max": round(rec[-1], 3) if rec else None,
            },
            "cycles": self.cycles,
            "seconds": round(self.seconds, 1),
            "first_violation_at_call": self.first_violation_at,
            "first_violation_at_call_by_invariant": self.first_by_invariant,
        }


class Run:
    """One topology x shape: its model, stats and violations."""

    def __init__(
        self, topology: str, shape: Shape, model: Model, lag: LagMonitor, seed: int
    ) -> None:
        self.topology = topology
        self.shape = shape
        self.model = model
        self.lag = lag
        self.seed = seed
        self.stats = Stats()
        self.violations: list[Violation] = []
        self.next_id = 0
        self.active: dict[int, tuple[str, float]] = {}  # faults under way: id -> kind, start
        self.recent: list[tuple[str, float, float]] = []  # faults of this cycle
        self.loop_lag = LoopLag()
        self.in_flight: dict[int, Op] = {}
        self.ended: collections.deque[Op] = collections.deque(maxlen=256)

    def overlapping(self, op: Op, most: int = 6) -> str:
        """The longest other calls that ran while ``op`` did (what held the event loop)."""
        now = time.monotonic()
        others = [
            other for other in (*self.in_flight.values(), *self.ended)
            if other is not op and other.start <= op.end and min(other.end, now) >= op.start
        ]  # fmt: skip
        others.sort(key=lambda o: min(o.end, now) - o.start, reverse=True)
        return (
            ", ".join(
                f"#{o.id} {o.method}{f' ({o.note})' if o.note else ''} "
                f"{(min(o.end, now) - o.start) * 1000:.0f} ms"
                for o in others[:most]
            )
            or "none"
        )

    def faults_during(self, start: float, end: float) -> str:
        found = [
            f"{kind} [{s:.3f}, {e:.3f}]" for kind, s, e in self.recent if s <= end and e >= start
        ]
        found += [f"{kind} [{s:.3f}, ...]" for kind, s in self.active.values() if s <= end]
        return ", ".join(found) or "none"

    def violation(
        self, invariant: str, detail: str, history: Sequence[str] = (), excess: float = 0.0
    ) -> None:
        if self.stats.first_violation_at is None:
            self.stats.first_violation_at = self.stats.calls
        self.stats.first_by_invariant.setdefault(invariant, self.stats.calls)
        self.stats.violations[invariant] += 1
        self.violations.append(Violation(invariant, detail, tuple(history), excess))

    def op(self, instance: int, method: str) -> Op:
        self.next_id += 1
        return Op(self.next_id, instance, method, time.monotonic())


@functools.cache
def _incompressible() -> str:
    """100 KB that no codec shrinks: 200 of them pass ``max_batch_bytes`` in any shape."""
    return base64.b64encode(random.Random(0).randbytes(75_000)).decode()


def _value(rng: random.Random, key: str, op_id: int) -> str:
    token = f"{key}|{op_id}|"
    roll = rng.random()
    if roll < 0.02:
        return ""
    if roll < 0.82:
        return token + "v" * rng.randint(0, 100)
    if roll < 0.988:
        return token + "m" * rng.randint(100, 5000)
    if roll < 0.998:
        return token + "L" * rng.randint(10_000, 200_000)
    # at the size limit, or one byte past it (refused, never applied)
    return token + "X" * (defaults.MAX_VALUE_BYTES - len(token) + rng.choice((0, 0, 1)))


class Worker:
    """Issues random calls on one instance until told to stop."""

    def __init__(self, run: Run, instance: int, rng: random.Random) -> None:
        self.run = run
        self.instance = instance
        self.cache = run.shape.instances[instance]
        self.rng = rng

    async def loop(self, stop: asyncio.Event) -> None:
        methods = list(METHODS)
        weights = list(METHODS.values())
        while not stop.is_set():
            method = self.rng.choices(methods, weights)[0]
            await self.call(method)
            if self.rng.random() < 0.05:
                await asyncio.sleep(0)

    def _plan(  # noqa: PLR0915 - one branch per method of the protocol
        self, op: Op
    ) -> tuple[Callable[[], Awaitable[Any]], Callable[[Any], None]]:
        """The call to make and how to record its Success."""
        rng, cache, m = self.rng, self.cache, op.method
        if m == "get":
            key = rng.choice(STRING_KEYS + COUNTER_KEYS)
            op.key = key
            return (lambda: cache.get(key)), lambda v: op.reads.__setitem__(
                key, v if v is None else ident(v)
            )
        if m == "get_json":
            key = rng.choice(JSON_KEYS)
            op.key = key

            def got_json(v: Any) -> None:
                op.reads[key] = None if v is None else v["t"]

            return (lambda: cache.get_json(key)), got_json
        if m == "set":
            key = rng.choice(STRING_KEYS)
            op.key = key
            value = _value(rng, key, op.id)
            op.writes[key] = ident(value)
            op.ttl = rng.choice((None, None, 1, 2, 3))
            return (lambda: cache.set(key, value, op.ttl)), lambda v: None
        if m == "set_json":
            key = rng.choice(JSON_KEYS)
            op.key = key
            token = f"{key}|{op.id}|"
            op.writes[key] = token
            op.ttl = rng.choice((None, None, 2))
            doc: dict[str, JsonValue] = {
                "t": token, "n": [rng.random() for _ in range(rng.randint(0, 20))],
            }  # fmt: skip
            return (lambda: cache.set_json(key, doc, op.ttl)), lambda v: None
        if m == "delete":
            key = rng.choice(STRING_KEYS + JSON_KEYS)
            op.key = key
            op.writes[key] = None
            return (lambda: cache.delete(key)), lambda v: None
        if m == "exists":
            key = rng.choice(STRING_KEYS + JSON_KEYS)
            op.key = key
            return (lambda: cache.exists(key)), lambda v: op.reads.__setitem__(key, v)
        if m == "expire":
            key = rng.choice(STRING_KEYS)
            op.key = key
            op.expire_key = key
            op.expire_seconds = rng.choice((1, 2, 3))
            return (lambda: cache.expire(key, op.expire_seconds or 1)), lambda v: None
        if m in ("increment", "decrement"):
            key = rng.choice(COUNTER_KEYS)
            op.key = key
            amount = rng.randint(1, 100)
            op.deltas[key] = amount if m == "increment" else -amount

            def counted(v: Any) -> None:
                op.counter_reply = v

            call = cache.increment if m == "increment" else cache.decrement
            return (lambda: call(key, amount)), counted
        if m == "ttl":
            key = rng.choice(STRING_KEYS + JSON_KEYS)
            op.key = key

            def ttl_ok(v: Any) -> None:
                if v is not None and not 0 <= v <= 3:
                    self.run.violation("value", f"ttl({key!r}) = {v}, no ttl above 3 s is set")

            return (lambda: cache.ttl(key)), ttl_ok
        if m == "ping":
            return cache.ping, lambda v: None
        if m == "flush":
            op.pattern = "*"
            return cache.flush, lambda v: None
        if m == "delete_pattern":
            pattern = rng.choice(PATTERNS)
            op.pattern = pattern
            return (lambda: cache.delete_pattern(pattern)), lambda v: None
        if m == "get_many":
            roll = rng.random()
            if roll < 0.003:  # beyond the batch limit: refused before anything is sent
                keys = list(FILLER)
                op.note = f"huge batch of {len(keys)} keys"
            elif roll < 0.006:  # at the limit: must fit the deadline
                keys = list(FILLER[: defaults.MAX_BATCH_KEYS])
                op.note = f"batch of {len(keys)} keys"
            else:
                keys = rng.sample(STRING_KEYS, rng.randint(1, 10))

            def got_many(v: Any) -> None:
                for key in keys:
                    if key in v and key.startswith("s:"):
                        op.reads[key] = None if v[key] is None else ident(v[key])
                    elif key.startswith("x:") and v.get(key) is not None:
                        self.run.violation("value", f"get_many read {key!r}, never written")

            return (lambda: cache.get_many(keys)), got_many
        # set_many
        ttl = rng.choice((None, None, 2))
        op.ttl = ttl
        if rng.random() < 0.01:  # beyond max_batch_bytes: refused before anything is sent
            entries = dict.fromkeys(FILLER[:200], _incompressible())
            op.note = "huge: 200 values of 100 KB"
        else:
            entries = {}
            for key in rng.sample(STRING_KEYS, rng.randint(1, 6)):
                entries[key] = _value(rng, key, op.id)
                op.writes[key] = ident(entries[key])
        return (lambda: cache.set_many(entries, ttl)), lambda v: None

    async def call(self, method: str) -> None:
        run = self.run
        op = run.op(self.instance, method)
        run.in_flight[op.id] = op
        try:
            await self._call(op)
        finally:
            del run.in_flight[op.id]
            run.ended.append(op)
            run.model.record(op)

    async def _call(self, op: Op) -> None:  # noqa: PLR0915 - one call, judged
        run, rng, method = self.run, self.rng, op.method
        make, on_success = self._plan(op)
        deadline = (
            run.shape.bulk_deadline
            if method in ("flush", "delete_pattern")
            else (run.shape.deadline)
        )
        style = rng.random()
        cancel_after: float | None = None
        if style < 0.06:
            cancel_after = rng.uniform(0.0, deadline * 1.2)
        if cancel_after is not None:
            how = "timeout" if style < 0.02 else "wait_for" if style < 0.04 else "task.cancel"
            op.note = f"{op.note + '; ' if op.note else ''}{how} at {cancel_after * 1000:.1f} ms"
        op.start = time.monotonic()
        result: Any = None
        cancelled = False
        swallowed = False
        ours = True  # a TimeoutError/CancelledError here is the caller's own
        try:
            if cancel_after is None:
                ours = False
                result = await make()
            elif style < 0.02:
                scope = asyncio.timeout(cancel_after)
                try:
                    async with scope:
                        result = await make()
                finally:
                    ours = scope.expired()
                swallowed = scope.expired()
            elif style < 0.04:
                pending = False

                async def call() -> Any:
                    nonlocal pending
                    reply = await make()
                    task = asyncio.current_task()
                    pending = task is not None and task.cancelling() > 0
                    return reply

                began = time.monotonic()
                try:
                    result = await asyncio.wait_for(call(), cancel_after)
                finally:
                    ours = time.monotonic() - began >= cancel_after * 0.999
                swallowed = pending  # wait_for cancelled it, and it returned a reply
            else:
                task = asyncio.ensure_future(make())
                done, _ = await asyncio.wait({task}, timeout=cancel_after)
                asked = False
                if not done:
                    asked = task.cancel()
                ours = asked
                try:
                    result = await task
                except asyncio.CancelledError:
                    cancelled = True
                swallowed = asked and not cancelled
        except (TimeoutError, asyncio.CancelledError) as exc:
            # the caller's own timeout or cancellation; any other is a violation
            if not ours:
                op.end = time.monotonic()
                op.outcome = "raised"
                run.violation("exception", f"{op.describe()} raised {exc!r}, which its caller "
                              "did not cause")  # fmt: skip
                return
            cancelled = True
        except Exception as exc:
            op.end = time.monotonic()
            op.outcome = "raised"
            op.error = repr(exc)
            run.violation("exception", f"{op.describe()} raised {exc!r}")
            return
        op.end = time.monotonic()
        run.stats.calls += 1
        elapsed = op.end - op.start
        bound = deadline if cancel_after is None else min(deadline, cancel_after)
        over = elapsed - bound
        if over > run.stats.worst_over_deadline:
            run.stats.worst_over_deadline = over
            run.stats.worst_call = f"{method}: {elapsed * 1000:.1f} ms, bound {bound * 1000:.0f} ms"
        if over > SLACK:
            # time this process could not run the call: the machine ran no process at all,
            # or the garbage collector held it (its pauses grow with the whole heap, the
            # campaign's model included): measured, reported, excused
            machine = max(run.lag.stall(op.start, op.end),
                          run.loop_lag.preempted(op.start, op.end))  # fmt: skip
            stall = machine + run.loop_lag.gc_pause(op.start, op.end)
            if over > SLACK + stall:
                run.violation(
                    "deadline",
                    f"{op.describe()} took {elapsed * 1000:.1f} ms, its bound is "
                    f"{bound * 1000:.0f} ms + {SLACK * 1000:.0f} ms (machine stall "
                    f"{stall * 1000:.1f} ms, event loop stall "
                    f"{run.loop_lag.stall(op.start, op.end) * 1000:.1f} ms, of which garbage "
                    f"collection {run.loop_lag.gc_pause(op.start, op.end) * 1000:.1f} ms)"
                    f"{' after the caller cancelled' if cancelled else ''}; faults: "
                    f"{run.faults_during(op.start, op.end)}; calls alongside: "
                    f"{run.overlapping(op)}; the loop held in: "
                    f"{run.loop_lag.held_in(op.start, op.end)}",
                    excess=over - SLACK - stall,
                )
            else:
                run.stats.excused += 1
        if swallowed:
            run.violation("cancellation", f"{op.describe()}: the caller's cancellation was "
                          "swallowed (the call returned a result instead)")  # fmt: skip
        if cancelled:
            op.outcome = "cancelled"
            run.stats.outcomes["cancelled"] += 1
            return
        if isinstance(result, Success):
            op.outcome = "ok"
            try:
                on_success(result.value)
            except Exception as exc:
                run.violation("type", f"{op.describe()} returned {result!r}: {exc!r}")
        elif isinstance(result, Failure):
            error = result.error
            op.outcome = "maybe" if error.maybe_applied else "refused"
            op.error = error.code.value
            run.stats.outcomes[f"failure:{error.code.value}"] += 1
        else:
            op.outcome = "raised"
            run.violation("type", f"{op.describe()} returned {result!r}, not a Result")
            return
        run.stats.outcomes[op.outcome] += 1
        if op.note.startswith("huge") and op.outcome == "ok":
            run.violation("limits", f"{op.describe()}: a batch beyond the limits succeeded")


# -- cycles --------------------------------------------------------------------------------


def _resources() -> dict[str, int]:
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return {
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_mb": rss_pages * os.sysconf("SC_PAGE_SIZE") // (1 << 20),
    }


def _fds() -> dict[str, str]:
    """This process's open descriptors: number -> what it is (a socket with its ports)."""
    found: dict[str, str] = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    sockets: dict[str, str] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                sockets[f"socket:[{inode}]"] = (
                    f"tcp :{int(local.rsplit(':')[1], 16)} -> :{int(remote.rsplit(':')[1], 16)}"
                    f" state {state}"
                )  # fmt: skip
    return {fd: sockets.get(target, target) for fd, target in found.items()}


async def _faults(run: Run, deployment: Deployment, rng: random.Random, span: float) -> list[Fault]:
    """Zero to three faults at random times within ``span`` seconds, some overlapping."""
    kinds = list(deployment.faults)
    weights = [deployment.faults[k][0] for k in kinds]
    count = rng.choice((0, 1, 1, 1, 2, 2, 3))
    chosen: list[tuple[float, str, float]] = []
    process_faults = 0
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        if not kind.startswith(("toxic", "proxy", "client_kill")):
            process_faults += 1
            if process_faults > 1:
                continue  # one fault on the processes at a time; toxics stack freely
        chosen.append((rng.uniform(0, span * 0.6), kind, rng.uniform(0.05, 1.5)))

    async def one(at: float, kind: str, seconds: float) -> Fault | None:
        await asyncio.sleep(at)
        started = time.monotonic()
        run.active[id(kind) ^ int(at * 1e6)] = (kind, started)
        try:
            return await deployment.faults[kind][1](deployment, rng, seconds)
        except Exception:
            run.stats.faults[f"not_applied:{kind}"] += 1
            return None
        finally:
            del run.active[id(kind) ^ int(at * 1e6)]
            run.recent.append((kind, started, time.monotonic()))

    done = await asyncio.gather(*(one(*c) for c in chosen))
    return [f for f in done if f is not None]


def _toxiproxy_state(deployment: Deployment) -> str:
    """Whether the deployment's toxiproxy-server still runs, and the end of its log."""
    server = getattr(deployment, "toxiproxy", None)
    if server is None or server.proc is None:
        return "no toxiproxy-server"
    code = server.proc.poll()
    state = "still running" if code is None else f"exited with {code}"
    kept = keep_log(server)
    lines = kept.read_text().splitlines()[-40:]
    return f"toxiproxy-server {state}; its log kept in {kept}; it ends:\n" + "\n".join(lines)


async def _heal(run: Run, deployment: Deployment) -> None:
    """Repair the deployment, then time the stack's return (``ping`` every 10 ms)."""
    revivals = deployment.revivals
    try:
        events = await asyncio.to_thread(deployment.heal)
    except ToxiproxyError as exc:  # the campaign's own tool failed, not the library
        raise RuntimeError(f"{exc}\n{_toxiproxy_state(deployment)}") from exc
    if deployment.revivals > revivals:  # a tool's crash, not the library's: counted apart
        run.stats.faults["toxiproxy_panic_revived"] += deployment.revivals - revivals
    for event in events:
        run.model.event(event)
    for why in await asyncio.to_thread(deployment.unplanned):
        now = time.monotonic()
        run.model.event(Event("lossy", run.model.cycle_start, now, why))
        run.stats.faults["unplanned_failover"] += 1
    healed = time.monotonic()
    shape = run.shape
    open_time = shape.breaker.open_time if shape.breaker is not None else 0.0
    # a breaker may have opened just now: it stays open its open time; then one call
    # (two without a breaker: the first may find a connection the fault broke)
    bound = open_time + (1 if shape.breaker is not None else 2) * shape.deadline + SLACK
    cache = shape.instances[0]
    while True:
        started = time.monotonic()
        result = await cache.ping()
        if isinstance(result, Success):
            break
        if time.monotonic() - healed > bound + 10:
            break
        await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - started)))
    took = time.monotonic() - healed
    run.stats.recoveries.append(took)
    stall = max(
        run.lag.stall(healed, time.monotonic()), run.loop_lag.preempted(healed, time.monotonic())
    )
    if took > bound + stall:
        run.violation(
            "heal",
            f"the stack answered {took:.3f} s after the faults stopped; the bound is the "
            f"breaker's open time {open_time:.2f} s + deadline + 50 ms = {bound:.3f} s",
            excess=took - bound - stall,
        )


async def _read_back(run: Run) -> dict[str, tuple[Any, float | None]]:
    """The quiescent point: every key read through the stack below any near cache."""
    reader = run.shape.reader
    observed: dict[str, tuple[Any, float | None]] = {}
    for key in MODEL_KEYS:
        for attempt in range(20):
            op = run.op(-1, "get_json" if key.startswith("j:") else "get")
            if key.startswith("j:"):
                result: Any = await reader.get_json(key)
            elif key.startswith("c:"):
                result = await run.shape.backend.get(key)
            else:
                result = await reader.get(key)
            ttl = await reader.ttl(key)
            op.end = time.monotonic()
            if isinstance(result, Success) and isinstance(ttl, Success):
                op.outcome = "ok"
                value = result.value
                if key.startswith("j:") and value is not None:
                    value = value["t"]
                elif key.startswith("s:") and value is not None:
                    value = ident(value)
                op.reads[key] = value
                remaining = ttl.value
                observed[key] = (value, None if remaining is None else max(remaining - 1, 0))
                run.model.record(op)
                break
            op.outcome = "refused"
            await asyncio.sleep(0.05 * attempt)
        else:
            run.violation("heal", f"{key!r} could not be read back after the faults stopped: "
                          f"{result!r} / {ttl!r}")  # fmt: skip
    return observed


async def run_shape(  # noqa: PLR0917
    deployment: Deployment, shape_name: str, seed: int, seconds: float, lag: LagMonitor,
    workers: int, max_calls: int | None = None, socket_timeout: float | None = None,
) -> Run:  # fmt: skip
    """Cycles of calls and faults on one shape for ``seconds``; the run's verdicts."""
    rng = random.Random(f"{seed}:{deployment.name}:{shape_name}")
    namespace = f"torture-{shape_name}-{rng.randrange(1 << 32):08x}"
    model = Model(MODEL_KEYS, near_cache=shape_name == "near_cache")

    def on_invalidation(instance: int, keys: Sequence[str] | None) -> None:
        model.invalidated(instance, keys, time.monotonic())

    gc.collect()
    before = _resources()
    fds_before = _fds()
    shape = build_shape(deployment, shape_name, namespace, on_invalidation, socket_timeout)
    run = Run(deployment.name, shape, model, lag, seed)
    samples: list[dict[str, int]] = []
    began = time.monotonic()
    run.loop_lag.start()
    try:
        # a first quiescent point: the namespace is empty
        model.rebase(await _read_back(run), time.monotonic())
        while time.monotonic() - began < seconds:
            if max_calls is not None and run.stats.calls >= max_calls:
                break
            await _cycle(run, deployment, rng, workers)
            samples.append(_resources())
    finally:
        gc.unfreeze()
        await run.loop_lag.stop()
        await shape.aclose()
    run.stats.seconds = time.monotonic() - began
    await asyncio.sleep(0.1)
    gc.collect()
    after = _resources()
    left = {fd: what for fd, what in _fds().items() if fds_before.get(fd) != what}
    _judge_resources(run, before, after, samples, left)
    return run


def _judge_resources(
    run: Run,
    before: dict[str, int],
    after: dict[str, int],
    samples: list[dict[str, int]],
    new_fds: dict[str, str],
) -> None:
    """Nothing outlives the stack: once closed, as many tasks and descriptors as before;
    and nothing grows from cycle to cycle (compared from the second quiescent point on)."""
    for what in ("tasks", "fds"):
        if after[what] > before[what]:
            run.violation(
                "leak",
                f"{after[what] - before[what]} {what} left after aclose() "
                f"({before[what]} before the stack was built, {after[what]} after)"
                + (f": {new_fds}" if what == "fds" else ""),
            )
    if len(samples) >= 6:
        first, last = samples[1], samples[-1]
        limits = {"tasks": 4, "fds": 40, "rss_mb": 150}
        for what, limit in limits.items():
            if last[what] - first[what] > limit:
                run.violation(
                    "leak",
                    f"{what} grew from {first[what]} to {last[what]} over "
                    f"{len(samples) - 1} fault cycles (allowed: {limit})",
                )


async def _cycle(run: Run, deployment: Deployment, rng: random.Random, workers: int) -> None:
    model = run.model
    span = rng.uniform(1.0, 3.5)
    stop = asyncio.Event()
    instances = len(run.shape.instances)
    pool = [
        Worker(run, n % instances, random.Random(rng.randrange(1 << 62))) for n in range(workers)
    ]
    tasks = [asyncio.create_task(w.loop(stop)) for w in pool]
    fault_rng = random.Random(rng.randrange(1 << 62))
    try:
        faults, _ = await asyncio.gather(_faults(run, deployment, fault_rng, span),
                                         asyncio.sleep(span))  # fmt: skip
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    for fault in faults:
        run.stats.faults[fault.kind] += 1
        for event in fault.events:
            model.event(event)
    await _heal(run, deployment)
    await asyncio.sleep(0.1)  # a write still on its way lands
    observed = await _read_back(run)
    for violation in model.check_cycle():
        run.violation(violation.invariant, violation.detail, violation.history)
    model.rebase(observed, time.monotonic())
    run.recent.clear()
    # what survives a cycle stays (the model, the stacks): no collection walks it again
    gc.collect()
    gc.freeze()
    run.stats.cycles += 1


# -- the whole campaign --------------------------------------------------------------------


def make_deployment(topology: str) -> Deployment:
    redis_binary = require_binary_path("redis-server", "RESILIENT_CACHE_REDIS_SERVER")
    if topology == "standalone":
        return Standalone(
            redis_binary,
            require_binary_path("toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER"),
        )
    if topology == "cluster":
        return Cluster(
            redis_binary, require_binary_path("redis-cli", "RESILIENT_CACHE_REDIS_CLI"),
            require_binary_path("toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER"),
        )  # fmt: skip
    if topology == "sentinel":
        return Sentinel(redis_binary)
    raise ValueError(f"unknown topology {topology!r}; choose from {', '.join(TOPOLOGIES)}")


@dataclass
class Report:
    seed: int
    runs: list[Run] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def calls(self) -> int:
        return sum(r.stats.calls for r in self.runs)

    @property
    def faults(self) -> int:
        return sum(r.stats.applied for r in self.runs)

    @property
    def violations(self) -> list[Violation]:
        return [v for r in self.runs for v in r.violations]

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 1),
            "calls": self.calls,
            "faults": self.faults,
            "violations": len(self.violations),
            "runs": [
                {
                    "topology": r.topology,
                    "shape": r.shape.name,
                    **r.stats.as_json(),
                    "violation_details": [v.render() for v in r.violations[:20]],
                }
                for r in self.runs
            ],
        }

    def table(self) -> str:
        by_kind: Counter[str] = Counter()
        lines = [
            "| topology | shape | calls | of which Success | cycles | faults | violations "
            "| slowest call - its bound | recovery median / max |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.runs:
            s = r.stats.as_json()
            by_kind.update(r.stats.faults)
            rec = s["recovery_seconds"]
            lines.append(
                f"| {r.topology} | {r.shape.name} | {s['calls']:,} "
                f"| {r.stats.outcomes['ok']:,} | {s['cycles']} "
                f"| {r.stats.applied} | {len(r.violations)} "
                f"| {s['slowest_call_minus_deadline_ms']:+.1f} ms "
                f"| {rec['median']} s / {rec['max']} s |"
            )
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
        invariants: Counter[str] = Counter()
        for r in self.runs:
            invariants.update(r.stats.violations)
        found = ", ".join(f"{k} {n}" for k, n in sorted(invariants.items())) or "none"
        return "\n".join(lines) + f"\n\nfaults by kind: {kinds}\nviolations by invariant: {found}"

    def final_line(self) -> str:
        return (f"torture: {self.calls} calls, {self.faults} faults, "
                f"{len(self.violations)} violations")  # fmt: skip


async def campaign(
    seed: int,
    *,
    seconds_per_run: float,
    topologies: Sequence[str] = TOPOLOGIES,
    shapes: Sequence[str] = SHAPES,
    workers: int = 8,
    echo: Callable[[str], None] = print,
    socket_timeout: float | None = None,
) -> Report:
    """Every topology x shape for ``seconds_per_run`` each, driven by ``seed``."""
    report = Report(seed)
    began = time.monotonic()
    with LagMonitor() as lag:
        for topology in topologies:
            deployment = make_deployment(topology)
            await asyncio.to_thread(deployment.start)
            try:
                for shape in shapes:
                    if (topology, shape) in NOT_APPLICABLE:
                        echo(f"{topology:>10} x {shape:<11} not applicable: "
                             f"{NOT_APPLICABLE[topology, shape]}")  # fmt: skip
                        continue
                    run = await run_shape(
                        deployment, shape, seed, seconds_per_run, lag, workers,
                        socket_timeout=socket_timeout,
                    )  # fmt: skip
                    report.runs.append(run)
                    echo(
                        f"{topology:>10} x {shape:<11} {run.stats.calls:>8,} calls "
                        f"{run.stats.applied:>4} faults {len(run.violations):>3} "
                        f"violations ({run.stats.cycles} cycles, {run.stats.seconds:.0f} s)"
                    )
                    if run.stats.first_violation_at is not None:
                        echo(f"  first violation after {run.stats.first_violation_at:,} calls")
                    for violation in run.violations[:5]:
                        echo(f"  seed {seed} {topology} x {shape}: {violation.render()}")
            finally:
                await asyncio.to_thread(deployment.cleanup)
    report.seconds = time.monotonic() - began
    return report

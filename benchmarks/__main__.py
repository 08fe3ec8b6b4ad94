"""Time and memory of RedisAdapter and of the whole stack relative to raw redis-py.

One private redis-server; the stack is ``build_cache`` with its defaults (metrics into a
private registry, tracing through the OpenTelemetry API without an SDK, logging, retry,
breaker).

Prints ratios (adapter / raw redis-py) from a single run: absolute numbers depend on the
machine, the ratio is what this library adds. Run with ``make bench``.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from resilient_cache import CacheSettings, RedisAdapter, build_cache
from resilient_cache.testing import RedisServer

SEQUENTIAL = 5_000
CONCURRENT_TASKS = 50
CONCURRENT_ROUNDS = 100
REPEATS = 5

Op = Callable[[int], Awaitable[object]]


async def sequential(op: Op) -> float:
    started = time.perf_counter()
    for i in range(SEQUENTIAL):
        await op(i)
    return (time.perf_counter() - started) / SEQUENTIAL


async def concurrent(op: Op) -> float:
    started = time.perf_counter()
    for _ in range(CONCURRENT_ROUNDS):
        await asyncio.gather(*(op(i) for i in range(CONCURRENT_TASKS)))
    return (time.perf_counter() - started) / (CONCURRENT_ROUNDS * CONCURRENT_TASKS)


async def peak_memory(op: Op) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        await asyncio.gather(*(op(i) for i in range(CONCURRENT_TASKS)))
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


async def best(measure: Callable[[Op], Awaitable[float]], op: Op) -> float:
    """The median of a few repeats: steadier than one, less flattering than the minimum."""
    return statistics.median([await measure(op) for _ in range(REPEATS)])


async def run(url: str) -> list[tuple[str, float, float, float]]:
    """Rows of (case, raw redis-py, RedisAdapter alone, the whole build_cache stack)."""
    raw = aioredis.Redis.from_url(url)
    adapter = RedisAdapter.from_url(url)
    stack = build_cache(CacheSettings(redis_url=url), registry=CollectorRegistry())
    await raw.set("bench:key", "x" * 100)
    clients: tuple[Any, Any, Any] = (raw, adapter, stack)
    cases: list[tuple[str, Callable[[Any], Op]]] = [
        ("get (hit)", lambda c: lambda i: c.get("bench:key")),
        ("set", lambda c: lambda i: c.set(f"bench:{i}", "v")),
    ]
    rows: list[tuple[str, float, float, float]] = []
    for measure, how in (
        (sequential, "sequential"),
        (concurrent, f"{CONCURRENT_TASKS} concurrent"),
    ):
        for name, make in cases:
            a, b, c = [await best(measure, make(client)) for client in clients]
            rows.append((f"{name}, {how}", a, b, c))
    get = cases[0][1]
    a, b, c = [await peak_memory(get(client)) for client in clients]
    rows.append((f"peak memory, {CONCURRENT_TASKS} concurrent gets", a, b, c))
    await raw.aclose()
    await stack.aclose()
    await adapter.aclose()
    return rows


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: run scripts/install-deps.sh", file=sys.stderr)
        return 1
    with RedisServer(binary) as server:
        rows = asyncio.run(run(server.url))
    print(f"{'case':<40} {'redis-py':>11} {'adapter':>11} {'ratio':>6} {'stack':>11} {'ratio':>6}")
    for name, raw, adapter, stack in rows:
        unit = "KiB" if "memory" in name else "us"
        scale = 1 / 1024 if "memory" in name else 1e6
        a, b, c = (f"{v * scale:.1f} {unit}" for v in (raw, adapter, stack))
        print(f"{name:<40} {a:>11} {b:>11} {adapter / raw:>5.2f}x {c:>11} {stack / raw:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

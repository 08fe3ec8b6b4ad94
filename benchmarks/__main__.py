"""Time and memory of RedisAdapter relative to raw redis-py, against one private redis-server.

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

import redis.asyncio as aioredis

from resilient_cache import RedisAdapter
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


async def run(url: str) -> list[tuple[str, float, float]]:
    raw = aioredis.Redis.from_url(url)
    cache = RedisAdapter.from_url(url)
    await raw.set("bench:key", "x" * 100)
    cases: list[tuple[str, Op, Op]] = [
        ("get (hit), sequential", lambda i: raw.get("bench:key"), lambda i: cache.get("bench:key")),
        (
            "set, sequential",
            lambda i: raw.set(f"bench:{i}", "v"),
            lambda i: cache.set(f"bench:{i}", "v"),
        ),
    ]
    rows: list[tuple[str, float, float]] = []
    for name, raw_op, cache_op in cases:
        rows.append((name, await best(sequential, raw_op), await best(sequential, cache_op)))
    for name, raw_op, cache_op in cases:
        label = name.replace("sequential", f"{CONCURRENT_TASKS} concurrent")
        rows.append((label, await best(concurrent, raw_op), await best(concurrent, cache_op)))
    get_raw, get_cache = cases[0][1], cases[0][2]
    raw_mem, cache_mem = await peak_memory(get_raw), await peak_memory(get_cache)
    rows.append((f"peak memory, {CONCURRENT_TASKS} concurrent gets", raw_mem, cache_mem))
    await raw.aclose()
    await cache.aclose()
    return rows


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: run scripts/install-deps.sh", file=sys.stderr)
        return 1
    with RedisServer(binary) as server:
        rows = asyncio.run(run(server.url))
    print(f"{'case':<40} {'redis-py':>12} {'adapter':>12} {'ratio':>7}")
    for name, raw, adapter in rows:
        shown = [
            f"{v / 1024:.1f} KiB" if "memory" in name else f"{v * 1e6:.1f} us"
            for v in (raw, adapter)
        ]
        print(f"{name:<40} {shown[0]:>12} {shown[1]:>12} {adapter / raw:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

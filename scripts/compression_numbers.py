"""Compression ratio and CPU cost per KB of CompressionLayer, for docs/ (compression section).

Typical JSON payloads (API-like records: ids, names, e-mails, timestamps, floats, enums) of
1 KB, 10 KB and 100 KB, through the layer's own encode/decode (compression + base64, the
stored form), for zstd (level 3) and zlib (level 6). Run: ``.venv/bin/python
scripts/compression_numbers.py``. Single-threaded; the best of 5 rounds is reported.
"""

from __future__ import annotations

import base64
import json
import platform
import random
import time
from collections.abc import Callable
from functools import partial

from resilient_cache import MemoryCache
from resilient_cache.layers.compression import Algorithm, CompressionLayer

SIZES = (1024, 10 * 1024, 100 * 1024)
ALGORITHMS: tuple[Algorithm, ...] = ("zstd", "zlib")


def payload(size: int, seed: int = 7) -> str:
    """A JSON list of records, cut at a record boundary to about ``size`` bytes."""
    rng = random.Random(seed)
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
    records: list[str] = []
    total = 2
    while True:
        name = rng.choice(names)
        record = json.dumps(
            {
                "id": rng.randrange(10**9),
                "name": f"{name.title()} {rng.choice(names).title()}",
                "email": f"{name}.{rng.randrange(10**4)}@example.com",
                "created_at": f"2026-{rng.randrange(1, 13):02}-{rng.randrange(1, 29):02}T"
                f"{rng.randrange(24):02}:{rng.randrange(60):02}:{rng.randrange(60):02}Z",
                "score": round(rng.random() * 100, 3),
                "status": rng.choice(["active", "pending", "disabled"]),
                "tags": rng.sample(["admin", "beta", "eu", "us", "trial", "paid"], 2),
            },
            separators=(",", ":"),
        )
        if total + len(record) + 1 > size:
            return "[" + ",".join(records) + "]"
        records.append(record)
        total += len(record) + 1


def best_of(rounds: int, repeat: int, fn: Callable[[], object]) -> float:
    """Seconds per call, best of ``rounds`` rounds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def main() -> None:
    print(f"Python {platform.python_version()}, {platform.machine()}, zstandard + zlib")
    print("size    algo  frame/plain  stored/plain  compress us/KB  decompress us/KB")
    for size in SIZES:
        value = payload(size)
        raw = value.encode()
        kb = len(raw) / 1024
        for algorithm in ALGORITHMS:
            layer = CompressionLayer(MemoryCache(), threshold=0, algorithm=algorithm)
            stored = layer._encode(value, raw)
            assert stored.startswith(f"z1:{algorithm}:")
            assert layer._decode(stored) == value
            repeat = max(10, int(20_000 / kb))
            write = best_of(5, repeat, partial(layer._encode, value, raw))
            read = best_of(5, repeat, partial(layer._decode, stored))
            frame = len(base64.b64decode(stored.split(":", 2)[2]))
            print(
                f"{round(kb):>3} KB  {algorithm}  {frame / len(raw):11.3f}"
                f"  {len(stored) / len(raw):12.3f}"
                f"  {write / kb * 1e6:14.2f}  {read / kb * 1e6:16.2f}"
            )


if __name__ == "__main__":
    main()

"""The demo's service: cache-aside requests against a slow origin, and what they saw.

Each request looks a hot-key-distributed user up in the cache; a miss or a cache failure
goes to the origin (a simulated database, ~20 ms a lookup). A miss is written back; after a
cache failure the write-back is skipped (the cache is known to be unavailable), so a
request never waits for two failing cache calls.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Success

ORIGIN_SECONDS: Final = 0.02
KEYS: Final = 2_000


@dataclass
class Second:
    """What the requests made during one second of the run, and of one phase, saw.

    A phase that starts mid-second starts a bucket of its own for that second: every
    request counts in the phase it was made in, whenever it ends.
    """

    t: int
    phase: str
    requests: int = 0
    failed: int = 0
    hits: int = 0
    misses: int = 0
    fallbacks: int = 0
    origin: int = 0
    latencies: list[float] = field(default_factory=list)
    cache_latency_max: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    breaker: str = "closed"

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of request latency in this second (0 when idle)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups, fallbacks counted as misses (what the origin saw)."""
        lookups = self.hits + self.misses + self.fallbacks
        return self.hits / lookups if lookups else 0.0


class Recorder:
    """Collects per-second statistics of the workload."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.seconds: list[Second] = []
        self.phase = "starting"
        self.breaker = "closed"
        self.phase_starts: dict[str, float] = {}
        self.transitions: list[tuple[float, str]] = []
        self.ended: float | None = None

    def end(self) -> None:
        """Mark the end of the run (the last phase's end)."""
        self.ended = self.elapsed()

    def spans(self) -> dict[str, tuple[float, float]]:
        """Each phase's start and end, in seconds of the run (a phase ends where the next
        begins; the last at the end of the run, or now)."""
        starts = list(self.phase_starts.items())
        last = self.ended if self.ended is not None else self.elapsed()
        ends = [start for _, start in starts[1:]] + [last]
        return {name: (start, end) for (name, start), end in zip(starts, ends, strict=True)}

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self._clock() - self.started

    def start_phase(self, name: str) -> None:
        """Mark the beginning of a phase."""
        self.phase = name
        self.phase_starts[name] = self.elapsed()

    def breaker_moved(self, state: str) -> None:
        """Note a breaker transition, with its time."""
        self.breaker = state
        self.transitions.append((self.elapsed(), state))
        self.now().breaker = state

    def now(self) -> Second:
        """The bucket of this second and this phase (a new one when either changed)."""
        t = int(self.elapsed())
        seconds = self.seconds
        while not seconds or seconds[-1].t < t:  # idle seconds too: the time axis is even
            after = seconds[-1].t + 1 if seconds else 0
            seconds.append(Second(after, self.phase, breaker=self.breaker))
        second = seconds[-1]
        if second.phase != self.phase:  # the phase began mid-second: a bucket of its own
            second = Second(t, self.phase, breaker=self.breaker)
            seconds.append(second)
        if self.breaker != "closed":
            second.breaker = self.breaker  # any non-closed moment marks the bucket
        return second


class Workload:
    """Concurrent cache-aside requests at a target rate, until stopped."""

    def __init__(
        self, cache: CacheProtocol, recorder: Recorder, *, rate: int = 400, workers: int = 64
    ) -> None:
        self._cache = cache
        self._recorder = recorder
        self._interval = workers / rate
        self._workers = workers
        self._stop = asyncio.Event()
        self._store = {f"user:{i}": f"profile of user {i}" for i in range(KEYS)}
        self._random = random.Random(42)

    def _key(self) -> str:
        # a hot-key distribution: a few users get most of the traffic
        return f"user:{min(KEYS - 1, int(self._random.paretovariate(1.2)) - 1)}"

    async def _origin(self, key: str, second: Second) -> str:
        second.origin += 1
        await asyncio.sleep(ORIGIN_SECONDS)  # the simulated database's own latency
        return self._store[key]

    async def request(self) -> None:
        """One request: cache first, origin on a miss or a failure; always an answer.

        It counts in the bucket of the second and phase it was made in."""
        key = self._key()
        started = time.monotonic()
        second = self._recorder.now()
        try:
            result = await self._cache.get(key)
            second.cache_latency_max = max(second.cache_latency_max, time.monotonic() - started)
            match result:
                case Success(str()):
                    second.hits += 1
                case Success(None):
                    second.misses += 1
                    value = await self._origin(key, second)
                    await self._cache.set(key, value, ttl=60)
                case Failure(error):
                    second.fallbacks += 1
                    second.errors[error.code.value] += 1
                    await self._origin(key, second)  # fail-open: the origin answers
        except Exception:  # the promise is that this never happens
            second.failed += 1
            raise
        finally:
            second.requests += 1
            second.latencies.append(time.monotonic() - started)

    async def _worker(self) -> None:
        next_at = time.monotonic() + self._random.random() * self._interval
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += self._interval
            try:
                await self.request()
            except Exception:
                continue

    async def run(self) -> None:
        """Run the workers until :meth:`stop`."""
        await asyncio.gather(*(self._worker() for _ in range(self._workers)))

    def stop(self) -> None:
        """Let the workers finish their current request and return."""
        self._stop.set()

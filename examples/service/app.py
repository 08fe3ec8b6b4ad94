"""An example FastAPI service on resilient-cache, for the docker-compose demo stack.

* ``GET /users/{user_id}``: cache-aside through :func:`resilient_cache.get_or_set`, over a
  deliberately slow fake database; also counts the user's views with ``increment``. When
  Redis is down or slow, the route still answers, from the "database" (fail-open).
* ``GET /metrics``: Prometheus metrics (``resilient_cache_*`` and the process's own).
* ``GET /healthz``: always 200 while the process serves requests; it reports the cache's
  state but does not fail with it, since the service works without its cache.

The cache is built by :func:`resilient_cache.build_cache` from the ``CACHE_*`` environment
variables (``CACHE_REDIS_URL``, ``CACHE_NAME``, ``CACHE_DEADLINE``, ...). The example's own
settings, all optional:

* ``EXAMPLE_TRAFFIC_RPS``: when > 0, a background loop makes that many lookups per second
  through the same code as the route, so the dashboard has data without a load generator
  (the compose file sets it);
* ``EXAMPLE_USERS``: how many distinct users the traffic asks for (skewed: a few are hot);
* ``EXAMPLE_LOADER_DELAY``: seconds the fake database takes per load;
* ``EXAMPLE_TTL``: seconds a cached user lives (short, so misses keep happening).

Run it locally with ``uvicorn app:app --port 8000`` from this directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request

from resilient_cache import CacheProtocol, Failure, Layer, Success, build_cache, get_or_set
from resilient_cache.metrics import asgi_app

MAX_IN_FLIGHT = 100  # traffic requests running at once, at most


@dataclass(frozen=True)
class ExampleSettings:
    """The example's own knobs (the cache's come from ``CACHE_*``)."""

    traffic_rps: float = 0.0
    users: int = 1000
    loader_delay: float = 0.05
    ttl: int = 30

    @classmethod
    def from_env(cls) -> ExampleSettings:
        env = os.environ
        return cls(
            traffic_rps=float(env.get("EXAMPLE_TRAFFIC_RPS", cls.traffic_rps)),
            users=int(env.get("EXAMPLE_USERS", cls.users)),
            loader_delay=float(env.get("EXAMPLE_LOADER_DELAY", cls.loader_delay)),
            ttl=int(env.get("EXAMPLE_TTL", cls.ttl)),
        )


async def load_user_name(user_id: int, delay: float) -> str:
    """Stands for a slow database query."""
    await asyncio.sleep(delay)
    return f"user {user_id}"


async def lookup_user(
    cache: CacheProtocol, user_id: int, settings: ExampleSettings
) -> dict[str, object]:
    """What ``GET /users/{user_id}`` answers: always, whatever the cache's health."""
    name = await get_or_set(
        cache,
        f"user:{user_id}:name",
        lambda: load_user_name(user_id, settings.loader_delay),
        ttl=settings.ttl,
    )
    match await cache.increment(f"user:{user_id}:views"):
        case Success(int() as views):
            counted: int | None = views
        case _:
            counted = None  # the cache is unavailable: not counted, not an error
    return {"id": user_id, "name": name, "views": counted}


def pick_user(rng: random.Random, users: int) -> int:
    """A skewed choice (a few hot users, a long tail), so the hit ratio is realistic."""
    return min(int(rng.paretovariate(1.2)), users)


async def traffic(cache: CacheProtocol, settings: ExampleSettings) -> None:
    """Look users up at ``settings.traffic_rps`` per second until cancelled.

    One in ten iterations fetches a page of ten users with ``get_many`` instead.
    """
    rng = random.Random()
    interval = 1.0 / settings.traffic_rps
    running: set[asyncio.Task[object]] = set()

    async def page() -> object:
        ids = [pick_user(rng, settings.users) for _ in range(10)]
        return await cache.get_many([f"user:{user_id}:name" for user_id in ids])

    try:
        while True:
            if len(running) < MAX_IN_FLIGHT:
                if rng.random() < 0.1:
                    task: asyncio.Task[object] = asyncio.create_task(page())
                else:
                    user_id = pick_user(rng, settings.users)
                    task = asyncio.create_task(lookup_user(cache, user_id, settings))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(interval)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def create_app(settings: ExampleSettings | None = None) -> FastAPI:
    """The application; the cache is built when it starts, from ``CACHE_*``."""
    example = settings or ExampleSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_cache() as cache:  # nothing connects yet; closes the pool at shutdown
            app.state.cache = cache
            loop = None
            if example.traffic_rps > 0:
                loop = asyncio.create_task(traffic(cache, example))
            try:
                yield
            finally:
                if loop is not None:
                    loop.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await loop

    app = FastAPI(title="resilient-cache example service", lifespan=lifespan)
    app.mount("/metrics", asgi_app())  # multiprocess-aware (PROMETHEUS_MULTIPROC_DIR)

    def cache_of(request: Request) -> Layer:
        cache: Layer = request.app.state.cache
        return cache

    @app.get("/users/{user_id}")
    async def read_user(user_id: int, request: Request) -> dict[str, object]:
        return await lookup_user(cache_of(request), user_id, example)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, str]:
        match await cache_of(request).ping():
            case Failure(error):
                cache_state = f"unavailable ({error.code.value})"
            case _:
                cache_state = "ok"
        return {"status": "ok", "cache": cache_state}

    return app


app = create_app()

"""The clients under test, each behind the same four calls.

Every wrapper answers ``True`` when the call did what was asked (a get found the value that
is known to be there; a write was acknowledged) and ``False`` otherwise, so that the harness
counts failures the same way for every client: a ``Failure`` of this library, an exception
of redis-py or aiocache, or the ``None`` that cashews returns when it suppresses an error.

The peers (cashews, aiocache) are untyped at this boundary: they are imported by name with
:func:`importlib.import_module` and used as ``Any``, so that this package type-checks with or
without them installed.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.asyncio import BlockingConnectionPool

from resilient_cache import (
    BreakerState,
    CacheSettings,
    CircuitBreakerLayer,
    Layer,
    RedisAdapter,
    RedisSettings,
    Success,
    build_cache,
)

POOL_SIZE = 50
"""Connections per client: the adapter's default, given to every other client too."""

COALESCE_SETTING = "coalesce_reads"
PIPELINE_SETTING = "pipeline_commands"


class Client(ABC):
    """One client under test. ``name`` is its column in the report."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def get(self, key: str) -> bool:
        """GET an existing key: ``True`` when its value came back."""

    @abstractmethod
    async def set(self, key: str, value: str) -> bool:
        """SET a key: ``True`` when acknowledged."""

    @abstractmethod
    async def get_many(self, keys: list[str]) -> int:
        """Read existing keys in one call: how many values came back."""

    @abstractmethod
    async def set_many(self, mapping: dict[str, str]) -> bool:
        """Write several keys in one call: ``True`` when acknowledged."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the client's connections."""

    async def recover(self) -> str | None:
        """Undo what a measurement left behind (an open circuit); say what, if anything."""
        return None


class RawClient(Client):
    """redis-py's asyncio client, used directly: the baseline."""

    def __init__(self, name: str, client: aioredis.Redis) -> None:
        super().__init__(name)
        self._client = client

    async def get(self, key: str) -> bool:
        return await self._client.get(key) is not None

    async def set(self, key: str, value: str) -> bool:
        return bool(await self._client.set(key, value))

    async def get_many(self, keys: list[str]) -> int:
        values = await self._client.mget(keys)
        return sum(value is not None for value in values)

    async def set_many(self, mapping: dict[str, str]) -> bool:
        return bool(await self._client.mset(mapping))

    async def aclose(self) -> None:
        await self._client.aclose()


class CacheClient(Client):
    """Anything with this library's ``CacheProtocol``: the adapter alone, or a stack."""

    def __init__(self, name: str, cache: Layer | RedisAdapter) -> None:
        super().__init__(name)
        self.cache = cache

    async def get(self, key: str) -> bool:
        result = await self.cache.get(key)
        return type(result) is Success and result.value is not None

    async def set(self, key: str, value: str) -> bool:
        return type(await self.cache.set(key, value)) is Success

    async def get_many(self, keys: list[str]) -> int:
        result = await self.cache.get_many(keys)
        if type(result) is not Success:
            return 0
        return sum(value is not None for value in result.value.values())

    async def set_many(self, mapping: dict[str, str]) -> bool:
        return type(await self.cache.set_many(mapping)) is Success

    async def aclose(self) -> None:
        await self.cache.aclose()


class StackClient(CacheClient):
    """A ``build_cache`` stack; rebuilt when a measurement left its circuit open."""

    def __init__(self, name: str, build: Callable[[], Layer]) -> None:
        self._build = build
        self.stack = build()
        super().__init__(name, self.stack)
        self.breaker_trips = 0

    async def recover(self) -> str | None:
        breaker = self.stack.find(CircuitBreakerLayer)
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return None
        self.breaker_trips += 1
        state = breaker.state.value
        await self.stack.aclose()
        self.stack = self.cache = self._build()
        return f"circuit {state} after the measurement: stack rebuilt"


class CashewsClient(Client):
    """cashews with its defaults (values pickled, errors suppressed), 50 connections."""

    def __init__(self, name: str, cache: Any) -> None:
        super().__init__(name)
        self._cache = cache

    async def get(self, key: str) -> bool:
        return await self._cache.get(key) is not None

    async def set(self, key: str, value: str) -> bool:
        return bool(await self._cache.set(key, value))

    async def get_many(self, keys: list[str]) -> int:
        values = await self._cache.get_many(*keys)
        return sum(value is not None for value in values)

    async def set_many(self, mapping: dict[str, str]) -> bool:
        await self._cache.set_many(mapping)
        return True

    async def aclose(self) -> None:
        await self._cache.close()


class AiocacheClient(Client):
    """aiocache's RedisCache with its defaults (JSON values, 5 s timeout), 50 connections."""

    def __init__(self, name: str, cache: Any) -> None:
        super().__init__(name)
        self._cache = cache

    async def get(self, key: str) -> bool:
        return await self._cache.get(key) is not None

    async def set(self, key: str, value: str) -> bool:
        return bool(await self._cache.set(key, value))

    async def get_many(self, keys: list[str]) -> int:
        values = await self._cache.multi_get(keys)
        return sum(value is not None for value in values)

    async def set_many(self, mapping: dict[str, str]) -> bool:
        return bool(await self._cache.multi_set(list(mapping.items())))

    async def aclose(self) -> None:
        await self._cache.close()


# -- how each one is built ---------------------------------------------------------------


def stack_settings(url: str, *, coalesce: bool = False, pipeline: bool = True) -> CacheSettings:
    """The default settings of ``build_cache``, optionally with read coalescing on or
    command pipelining off."""
    redis: dict[str, bool] = {}
    if coalesce:
        redis[COALESCE_SETTING] = True
    if not pipeline:
        redis[PIPELINE_SETTING] = False
    return CacheSettings(redis_url=url, redis=RedisSettings.model_validate(redis))


def build_stack(url: str, *, coalesce: bool = False, pipeline: bool = True, **kwargs: Any) -> Layer:
    """The whole default stack, its metrics in a private registry."""
    return build_cache(
        stack_settings(url, coalesce=coalesce, pipeline=pipeline),
        registry=CollectorRegistry(),
        **kwargs,
    )


def coalescing_available() -> bool:
    """Whether this version of the library has the read-coalescing setting."""
    return COALESCE_SETTING in RedisSettings.model_fields


def _peer(module: str) -> Any:
    return importlib.import_module(module)


async def _raw(url: str) -> Client:
    return RawClient("redis-py", aioredis.Redis.from_url(url, max_connections=POOL_SIZE))


async def _raw_blocking(url: str) -> Client:
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE)
    return RawClient("redis-py blocking", aioredis.Redis(connection_pool=pool))


async def _adapter(url: str) -> Client:
    return CacheClient("adapter", RedisAdapter.from_url(url))


async def _stack(url: str) -> Client:
    return StackClient("stack", lambda: build_stack(url))


async def _stack_unpipelined(url: str) -> Client:
    return StackClient("stack unpipelined", lambda: build_stack(url, pipeline=False))


async def _stack_coalesce(url: str) -> Client:
    return StackClient("stack+coalesce", lambda: build_stack(url, coalesce=True))


async def _cashews(url: str) -> Client:
    cache = _peer("cashews").Cache()
    cache.setup(url, max_connections=POOL_SIZE)
    await cache.init()
    return CashewsClient("cashews", cache)


async def _aiocache(url: str) -> Client:
    aiocache = _peer("aiocache")
    parts = urlsplit(url)
    cache = aiocache.RedisCache(
        endpoint=parts.hostname,
        port=parts.port,
        db=int(parts.path.strip("/") or 0),
        pool_max_size=POOL_SIZE,
        connection_pool_class=BlockingConnectionPool,
    )
    return AiocacheClient("aiocache", cache)


@dataclass(frozen=True)
class Contender:
    """A client to build, and what it is, for the report."""

    name: str
    description: str
    build: Callable[[str], Awaitable[Client]]
    missing: Callable[[], str | None] = lambda: None
    """Why it cannot run in this environment, checked before building it."""


def _no_coalescing() -> str | None:
    if coalescing_available():
        return None
    return f"RedisSettings has no {COALESCE_SETTING!r} setting in this version"


def _not_installed(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            _peer(module)
        except Exception as exc:
            return (
                f"cannot import {module} ({type(exc).__name__}: {exc}); "
                "pip install 'resilient-cache[bench]'"
            )
        return None

    return check


BASELINE = "redis-py"
BLOCKING_BASELINE = "redis-py blocking"

CONTENDERS: tuple[Contender, ...] = (
    Contender(
        BASELINE,
        f"redis.asyncio.Redis.from_url(url, max_connections={POOL_SIZE}), hiredis: the baseline",
        _raw,
    ),
    Contender(
        BLOCKING_BASELINE,
        f"redis-py on a BlockingConnectionPool(max_connections={POOL_SIZE}): the baseline where "
        "the plain pool refuses the load",
        _raw_blocking,
    ),
    Contender("adapter", "RedisAdapter.from_url(url)", _adapter),
    Contender(
        "stack",
        "build_cache(CacheSettings(redis_url=url)): metrics, tracing (no OpenTelemetry SDK), "
        "logging, retry, circuit breaker, adapter",
        _stack,
    ),
    Contender(
        "stack unpipelined",
        f"the same stack with redis={{{PIPELINE_SETTING!r}: False}}: one command per round trip",
        _stack_unpipelined,
        lambda: (
            None
            if PIPELINE_SETTING in RedisSettings.model_fields
            else f"RedisSettings has no {PIPELINE_SETTING!r} setting in this version"
        ),
    ),
    Contender(
        "stack+coalesce",
        f"the same stack with redis={{{COALESCE_SETTING!r}: True}}",
        _stack_coalesce,
        _no_coalescing,
    ),
    Contender(
        "cashews",
        f"cashews Cache().setup(url, max_connections={POOL_SIZE}); its defaults otherwise",
        _cashews,
        _not_installed("cashews"),
    ),
    Contender(
        "aiocache",
        f"aiocache.RedisCache(pool_max_size={POOL_SIZE}, blocking pool); its defaults otherwise",
        _aiocache,
        _not_installed("aiocache"),
    ),
)

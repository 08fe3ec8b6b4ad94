"""resilient-cache: an async cache client whose every call returns a Result.

When Redis is slow, down or misbehaving, calls return a fast ``Failure`` instead of
raising, so the service embedding the cache keeps working.
"""

import importlib as _importlib
import typing as _typing

from resilient_cache.adapters.memory import MemoryCache
from resilient_cache.adapters.redis_adapter import RedisAdapter
from resilient_cache.adapters.redis_cluster import RedisClusterAdapter
from resilient_cache.adapters.redis_options import RedisOptions, redact_url
from resilient_cache.adapters.tracking import RedisTrackingSource
from resilient_cache.domain.backend import Endpoint, PoolStats
from resilient_cache.domain.errors import CacheError, ConfigurationError, DetailValue, ErrorCode
from resilient_cache.domain.near_cache import InvalidationSource
from resilient_cache.domain.protocol import CacheEntry, CacheProtocol, JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result, Success, UnwrapError
from resilient_cache.domain.scripts import CacheScript, ScriptRunner
from resilient_cache.domain.validation import Limits
from resilient_cache.keys import KeyHasher, cache_key, hash_identifier
from resilient_cache.layers.base import Layer
from resilient_cache.layers.circuit_breaker import BreakerState, CircuitBreakerLayer
from resilient_cache.layers.compression import CompressionLayer
from resilient_cache.layers.encryption import EncryptionLayer, generate_encryption_key
from resilient_cache.layers.logs import LoggingLayer
from resilient_cache.layers.metrics import MetricsLayer
from resilient_cache.layers.near_cache import NearCacheLayer
from resilient_cache.layers.retry import RetryBudget, RetryLayer
from resilient_cache.layers.tracing import TracingLayer
from resilient_cache.patterns import (
    EarlyRefresh,
    Outbox,
    RateLimit,
    RateLimiter,
    ServeStale,
    SessionStore,
    TokenCache,
    WarmReport,
    cached,
    invalidate,
    warm,
)
from resilient_cache.patterns.cache_aside import get_or_set, get_or_set_json
from resilient_cache.redaction import SecretScrubber, scrub_secrets
from resilient_cache.version import __version__

if _typing.TYPE_CHECKING:  # imported when first used (below): pydantic-settings alone is ~0.25 s
    from resilient_cache.bootstrap import build_backend, build_cache, get_cache
    from resilient_cache.settings import (
        BreakerSettings,
        CacheSettings,
        ObservabilitySettings,
        RedisSettings,
        RetrySettings,
    )

_LAZY: _typing.Final = {
    **dict.fromkeys(("build_backend", "build_cache", "get_cache"), "resilient_cache.bootstrap"),
    **dict.fromkeys(
        (
            "BreakerSettings",
            "CacheSettings",
            "ObservabilitySettings",
            "RedisSettings",
            "RetrySettings",
        ),
        "resilient_cache.settings",
    ),
}
"""Names exported here whose modules are imported on first use, keeping ``import
resilient_cache`` close to ``import redis.asyncio`` (the settings need pydantic)."""


if not _typing.TYPE_CHECKING:  # for type checkers the imports above are the truth: a
    # misspelt name is an error there, not an Any

    def __getattr__(name: str) -> _typing.Any:
        module = _LAZY.get(name)
        if module is None:
            if name in ("settings", "bootstrap"):  # the submodules, as an import made them
                return _importlib.import_module(f"resilient_cache.{name}")
            raise AttributeError(f"module 'resilient_cache' has no attribute {name!r}")
        value = getattr(_importlib.import_module(module), name)
        globals()[name] = value  # once: the next lookup does not come here
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})  # not __all__: a name must exist to be listed


__all__ = [
    "BreakerSettings",
    "BreakerState",
    "CacheEntry",
    "CacheError",
    "CacheProtocol",
    "CacheScript",
    "CacheSettings",
    "CircuitBreakerLayer",
    "CompressionLayer",
    "ConfigurationError",
    "DetailValue",
    "EarlyRefresh",
    "EncryptionLayer",
    "Endpoint",
    "ErrorCode",
    "Failure",
    "InvalidationSource",
    "JsonInput",
    "JsonValue",
    "KeyHasher",
    "Layer",
    "Limits",
    "LoggingLayer",
    "MemoryCache",
    "MetricsLayer",
    "NearCacheLayer",
    "ObservabilitySettings",
    "Outbox",
    "PoolStats",
    "RateLimit",
    "RateLimiter",
    "RedisAdapter",
    "RedisClusterAdapter",
    "RedisOptions",
    "RedisSettings",
    "RedisTrackingSource",
    "Result",
    "RetryBudget",
    "RetryLayer",
    "RetrySettings",
    "ScriptRunner",
    "SecretScrubber",
    "ServeStale",
    "SessionStore",
    "Success",
    "TokenCache",
    "TracingLayer",
    "UnwrapError",
    "WarmReport",
    "__version__",
    "build_backend",
    "build_cache",
    "cache_key",
    "cached",
    "generate_encryption_key",
    "get_cache",
    "get_or_set",
    "get_or_set_json",
    "hash_identifier",
    "invalidate",
    "redact_url",
    "scrub_secrets",
    "warm",
]

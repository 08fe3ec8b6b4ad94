"""resilient-cache: an async cache client whose every call returns a Result.

When Redis is slow, down or misbehaving, calls return a fast ``Failure`` instead of
raising, so the service embedding the cache keeps working.
"""

from importlib.metadata import PackageNotFoundError, version

from resilient_cache.adapters.memory import MemoryCache
from resilient_cache.adapters.redis_adapter import RedisAdapter
from resilient_cache.adapters.redis_options import PoolStats, RedisOptions, redact_url
from resilient_cache.domain.errors import CacheError, ConfigurationError, DetailValue, ErrorCode
from resilient_cache.domain.protocol import CacheEntry, CacheProtocol, JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result, Success, UnwrapError
from resilient_cache.domain.validation import Limits

try:
    __version__ = version("resilient-cache")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "CacheEntry",
    "CacheError",
    "CacheProtocol",
    "ConfigurationError",
    "DetailValue",
    "ErrorCode",
    "Failure",
    "JsonInput",
    "JsonValue",
    "Limits",
    "MemoryCache",
    "PoolStats",
    "RedisAdapter",
    "RedisOptions",
    "Result",
    "Success",
    "UnwrapError",
    "__version__",
    "redact_url",
]

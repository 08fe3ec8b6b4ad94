"""Cache patterns that stay correct through outages: decorators, stale copies, rate limits.

What applications write on top of :class:`~resilient_cache.CacheProtocol`, made part of the
library so that each holds up when Redis fails (docs/patterns.md):

* :func:`cached`: cache-aside for async functions, with single-flight, probabilistic early
  refresh (:class:`EarlyRefresh`) and serve-stale-on-error (:class:`ServeStale`);
* :func:`invalidate` and :class:`Outbox`: invalidations that a Redis outage does not lose,
  and that reach ``@cached``'s in-process state (computations in flight, stale copies);
* :class:`RateLimiter`: fixed and sliding windows, one atomic script per check;
* :class:`SessionStore` and :class:`TokenCache`: sessions and provider tokens;
* :func:`warm`: pre-populate a cache at start-up, bounded in time and memory.
"""

from __future__ import annotations

from resilient_cache.patterns._cached import (
    JSON,
    CachedFunction,
    EarlyRefresh,
    JsonSerializer,
    Serializer,
    ServeStale,
    cached,
)
from resilient_cache.patterns.invalidation import Outbox, OverflowAction, invalidate, outbox_for
from resilient_cache.patterns.ratelimit import RateLimit, RateLimiter
from resilient_cache.patterns.sessions import SessionStore, TokenCache
from resilient_cache.patterns.warming import StopReason, WarmItem, WarmProgress, WarmReport, warm

__all__ = [
    "JSON",
    "CachedFunction",
    "EarlyRefresh",
    "JsonSerializer",
    "Outbox",
    "OverflowAction",
    "RateLimit",
    "RateLimiter",
    "Serializer",
    "ServeStale",
    "SessionStore",
    "StopReason",
    "TokenCache",
    "WarmItem",
    "WarmProgress",
    "WarmReport",
    "cached",
    "invalidate",
    "outbox_for",
    "warm",
]

"""The composition root: :func:`build_cache` assembles the stack from settings.

The order, outermost first, and why::

    caller -> RetryLayer -> CircuitBreakerLayer -> RedisAdapter -> Redis
              deadline,     state machine,         pool, one attempt
              budget        half-open probes       per call, no retry

Retry sits OUTSIDE the breaker (Resilience4j's default aspect order, Polly's standard
pipeline): an open breaker answers CIRCUIT_OPEN, which is not retryable, so retries stop
at once instead of hammering a Redis that is known to be down; and the deadline bounds
everything, breaker included. Telemetry layers will sit outermost, to record what the
caller sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import cache

from resilient_cache.adapters.redis_adapter import RedisAdapter
from resilient_cache.layers._base import Layer
from resilient_cache.layers.circuit_breaker import CircuitBreakerLayer
from resilient_cache.layers.retry import RetryBudget, RetryLayer
from resilient_cache.settings import CacheSettings


def build_cache(
    settings: CacheSettings | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Layer:
    """Build the resilient cache stack; nothing connects until the first call.

    Args:
        settings: the settings (default: read ``CACHE_*`` from the environment).
        clock: the monotonic clock of the breaker and the retry budget (a test seam).
        sleep: the retry backoff's sleep (a test seam).

    Returns:
        The outermost layer: a ``CacheProtocol``, an async context manager with
        ``aclose()``, whose ``layers`` names the stack from the outside in.

    Raises:
        ConfigurationError: a bad setting, named.
    """
    settings = settings or CacheSettings.from_env()
    adapter = RedisAdapter.from_url(
        settings.redis_url,
        namespace=settings.namespace,
        **settings.redis.options(deadline=settings.deadline),
    )
    b, r = settings.breaker, settings.retry
    breaker = CircuitBreakerLayer(
        adapter,
        fail_max=b.fail_max,
        reset_timeout=b.reset_timeout,
        reset_timeout_max=b.reset_timeout_max,
        success_threshold=b.success_threshold,
        half_open_permits=b.half_open_permits,
        count_out_of_memory=b.count_out_of_memory,
        clock=clock,
    )
    return RetryLayer(
        breaker,
        attempts=r.attempts,
        backoff_base=r.backoff_base,
        backoff_max=r.backoff_max,
        deadline=settings.deadline,
        budget=RetryBudget(r.budget_ratio, r.budget_min_per_second, r.budget_window, clock),
        sleep=sleep,
    )


@cache
def get_cache() -> Layer:
    """The application's cache, built once from the environment (``CACHE_*``).

    Close it at shutdown with ``await get_cache().aclose()``.
    """
    return build_cache()

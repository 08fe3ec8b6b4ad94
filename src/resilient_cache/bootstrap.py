"""The composition root: :func:`build_cache` assembles the stack from settings.

The order, outermost first, and why::

    caller
      -> MetricsLayer         what callers see: RED, hits/misses/fallbacks
      -> TracingLayer         one OpenTelemetry CLIENT span per call
      -> LoggingLayer         failures, retries, breaker transitions
      -> NearCacheLayer       only with CACHE_NEAR_CACHE__ENABLED: hot keys from memory,
                              dropped on any write announced by Redis client tracking
      -> CompressionLayer     only with CACHE_COMPRESSION__ENABLED: large values compressed
      -> RetryLayer           the deadline over the whole call; safe retries; retry budget
      -> CircuitBreakerLayer  closed / open / half-open; probes; no I/O while open
      -> EncryptionLayer      only with CACHE_ENCRYPTION__KEYS: AES-GCM per value
      -> RedisAdapter         the pool; one network attempt per call; errors mapped
      -> Redis

Retry sits OUTSIDE the breaker (Resilience4j's default aspect order, Polly's standard
pipeline): an open breaker answers CIRCUIT_OPEN, which is not retryable, so retries stop
at once instead of hammering a Redis that is known to be down; and the deadline bounds
everything, breaker included. Telemetry sits outermost and records what the caller sees;
per-attempt events (retries, budget, breaker transitions) reach it through listeners, so
nothing is wrapped twice. Each telemetry layer can be switched off in the settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from resilient_cache.adapters.redis_adapter import RedisAdapter
from resilient_cache.adapters.redis_cluster import RedisClusterAdapter
from resilient_cache.adapters.tracking import RedisTrackingSource
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.layers.base import Layer
from resilient_cache.layers.circuit_breaker import CircuitBreakerLayer
from resilient_cache.layers.compression import CompressionLayer
from resilient_cache.layers.encryption import EncryptionLayer
from resilient_cache.layers.logs import LoggingLayer
from resilient_cache.layers.metrics import MetricsLayer
from resilient_cache.layers.near_cache import NearCacheLayer
from resilient_cache.layers.retry import RetryBudget, RetryLayer
from resilient_cache.layers.tracing import TracingLayer
from resilient_cache.settings import CacheSettings


def build_cache(
    settings: CacheSettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    credential_provider: object | None = None,
) -> Layer:
    """Build the resilient cache stack; nothing connects until the first call.

    Args:
        settings: the settings (default: read ``CACHE_*`` from the environment).
        registry: the Prometheus registry (default: prometheus-client's global one).
        tracer_provider: OpenTelemetry tracer provider (default: the global one).
        meter_provider: OpenTelemetry meter provider (default: the global one).
        logger: a structlog logger (default: :func:`resilient_cache.log.get_logger`, silent until
            the application configures logging or structlog).
        clock: the monotonic clock of the breaker and the retry budget (a test seam).
        sleep: the retry backoff's sleep (a test seam).
        credential_provider: a redis-py ``CredentialProvider`` asked for the username and
            password of each new connection (rotation without a restart); instead of
            credentials in the URL or ``CACHE_REDIS__USERNAME``/``__PASSWORD``.

    Returns:
        The outermost layer: a ``CacheProtocol``, an async context manager with
        ``aclose()``, whose ``layers`` names the stack from the outside in.

    Raises:
        ConfigurationError: a bad setting, named.
    """
    settings = settings or CacheSettings.from_env()
    b, r, o = settings.breaker, settings.retry, settings.observability
    adapter = build_backend(settings, credential_provider)
    inner: CacheProtocol = adapter
    if settings.encryption.keys:  # innermost: its failures are seen by every other layer
        inner = EncryptionLayer(
            adapter, namespace=settings.namespace, **settings.encryption.layer_options()
        )
    breaker = CircuitBreakerLayer(inner, **b.model_dump(), clock=clock)  # same names
    retry = RetryLayer(
        breaker,
        **r.model_dump(exclude={"budget_ratio", "budget_min_per_second", "budget_window"}),
        deadline=settings.deadline,
        bulk_deadline=settings.bulk_deadline,
        budget=RetryBudget(r.budget_ratio, r.budget_min_per_second, r.budget_window, clock),
        sleep=sleep,
    )
    stack: Layer = retry
    if settings.compression.enabled:  # outside retry: a retried write is compressed once
        stack = CompressionLayer(stack, **settings.compression.layer_options())
    near = settings.near_cache
    if near.enabled:  # outside compression: a hit is never decompressed again
        stack = NearCacheLayer(
            stack,
            RedisTrackingSource.for_adapter(adapter, ping_interval=near.ping_interval),
            max_entries=near.max_entries, max_bytes=near.max_bytes, max_age=near.max_age,
            cache_name=settings.name, registry=registry,
        )  # fmt: skip
    if o.logging:
        stack = logs = LoggingLayer(
            stack, cache_name=settings.name, logger=logger,
            log_keys=o.log_keys, debug=o.log_successes,
        )  # fmt: skip
        _listen(logs, retry, breaker)
    if o.tracing:
        endpoint = adapter.endpoint
        server: dict[str, str | int] = {
            "server.address": endpoint.address,
            "db.namespace": str(endpoint.db),
        }
        if endpoint.port is not None:
            server["server.port"] = endpoint.port
        stack = tracing = TracingLayer(
            stack, server=server, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        retry.add_retry_listener(tracing.on_retry)
    if o.metrics:
        stack = metrics = MetricsLayer(stack, cache_name=settings.name, registry=registry)
        _listen(metrics, retry, breaker)
        metrics.watch_pool(adapter.pool_stats)
    return stack


def build_backend(
    settings: CacheSettings, credential_provider: object | None = None
) -> RedisAdapter | RedisClusterAdapter:
    """The backend alone (no layers) for the settings' topology; nothing connects yet.

    Connection options come from ``CACHE_REDIS__*``; ``build_cache`` wraps this backend,
    and ``resilient-cache ping`` asks it directly.

    ``CACHE_REDIS_URL`` is used by the standalone topology only; cluster and sentinel take
    their addresses from ``CACHE_CLUSTER__NODES`` / ``CACHE_SENTINEL__ADDRESSES``.
    """
    options = settings.redis.options(deadline=settings.deadline)
    if credential_provider is not None:
        options["credential_provider"] = credential_provider
    if settings.topology == "cluster":
        for standalone_only in ("coalesce_reads", "pipeline_commands"):
            # refused by the cluster adapter when asked for; pipelining is on by default
            if standalone_only not in settings.redis.model_fields_set:
                options.pop(standalone_only, None)
        return RedisClusterAdapter.from_nodes(
            settings.cluster.nodes,
            namespace=settings.namespace,
            hash_tag_namespace=settings.cluster.hash_tag_namespace,
            tls=settings.cluster.tls,
            **options,
        )
    if settings.topology == "sentinel":
        sentinel = settings.sentinel
        assert sentinel.service_name is not None  # CacheSettings checks it
        password = sentinel.password.get_secret_value() if sentinel.password else None
        return RedisAdapter.from_sentinel(
            sentinel.addresses,
            sentinel.service_name,
            sentinel_username=sentinel.username,
            sentinel_password=password,
            tls=sentinel.tls,
            namespace=settings.namespace,
            **options,
        )
    return RedisAdapter.from_url(settings.redis_url, namespace=settings.namespace, **options)


def _listen(
    listener: LoggingLayer | MetricsLayer, retry: RetryLayer, breaker: CircuitBreakerLayer
) -> None:
    """Per-attempt events reach the outer telemetry layers through hooks, not re-wrapping."""
    retry.add_retry_listener(listener.on_retry)
    retry.add_budget_listener(listener.on_budget_exhausted)
    breaker.add_listener(listener.on_breaker_transition)


@cache
def get_cache() -> Layer:
    """The application's cache, built once from the environment (``CACHE_*``).

    Close it at shutdown with ``await get_cache().aclose()``.
    """
    return build_cache()

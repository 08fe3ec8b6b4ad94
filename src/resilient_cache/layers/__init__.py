"""Layers: each wraps ONE inner CacheProtocol and is one itself.

Stacked by :func:`resilient_cache.build_cache` in this order (outermost first)::

    caller -> RetryLayer -> CircuitBreakerLayer -> RedisAdapter -> Redis
"""

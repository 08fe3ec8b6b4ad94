"""Layers: each wraps ONE inner CacheProtocol and is one itself.

Stacked by :func:`resilient_cache.build_cache` in this order (outermost first)::

    caller -> MetricsLayer -> TracingLayer -> LoggingLayer
           -> [NearCacheLayer] -> [CompressionLayer]
           -> RetryLayer -> CircuitBreakerLayer -> [EncryptionLayer] -> adapter -> Redis

(bracketed layers only when their settings turn them on; the order and its reasons are in
:mod:`resilient_cache.bootstrap`).
"""

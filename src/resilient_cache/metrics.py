"""Serving the metrics: helpers for applications. The library never starts a server itself.

* In an ASGI app (FastAPI, Starlette)::

      app.mount("/metrics", resilient_cache.metrics.asgi_app())

* Anywhere else, prometheus-client's own ``start_http_server(port)`` serves the default
  registry from a thread.
* Under gunicorn/uvicorn workers (prometheus-client's multiprocess mode: set
  ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the workers start),
  :func:`asgi_app` and :func:`render` aggregate every worker's samples.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["ASGIApp", "asgi_app", "render"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
"""An ASGI application (structurally the same type as Starlette's ``ASGIApp``)."""


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return REGISTRY


def asgi_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app serving the metrics in the Prometheus text format.

    Args:
        registry: what to serve (default: the global registry, or every worker's samples
            in multiprocess mode).
    """
    app: ASGIApp = make_asgi_app(_registry(registry))
    return app


def render(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The metrics as ``(body, content_type)``, for a route in any web framework."""
    return generate_latest(_registry(registry)), CONTENT_TYPE_LATEST

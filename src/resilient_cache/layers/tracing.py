"""TracingLayer: OpenTelemetry spans and the standard client duration histogram.

Depends on ``opentelemetry-api`` only; the application installs the SDK (or not). One
CLIENT span per logical call, named after the Redis command, with the database semantic
conventions (``db.system.name``, ``db.operation.name``, ``db.namespace``,
``server.address``, ``server.port``; ``error.type`` on failure); each retry is an event on
that span. Every call is also recorded in ``db.client.operation.duration`` (seconds).
While no SDK is installed (the global provider is still the API's proxy), no span is made
at all; an SDK installed later takes effect within a second (the layer looks at the global
providers at most once a second until one is installed: looking costs more than a call's
own work in the layer).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import (
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)
from opentelemetry.util.types import AttributeValue

from resilient_cache.domain.errors import CacheError
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result
from resilient_cache.layers.base import Call, Layer
from resilient_cache.version import __version__

T = TypeVar("T")

INSTRUMENTATION: Final = "resilient_cache"

COMMANDS: Final[Mapping[str, str]] = {
    "get": "GET",
    "get_json": "GET",
    "set": "SET",
    "set_json": "SET",
    "delete": "UNLINK",
    "exists": "EXISTS",
    "expire": "EXPIRE",
    "increment": "INCRBY",
    "decrement": "DECRBY",
    "ttl": "PTTL",
    "flush": "SCAN",
    "ping": "PING",
    "delete_pattern": "SCAN",
    "get_many": "MGET",
    "set_many": "MSET",
    "run_script": "EVALSHA",
}
"""The Redis command each operation sends (its first one, for multi-command operations)."""


_SPANS: Final = 2
_HISTOGRAM: Final = 1
_NOTHING: Final = 0
_RECHECK: Final = 1.0
"""Seconds between looks at the global providers while no SDK is installed."""


def _is_api_proxy(provider: object) -> bool:
    """Whether ``provider`` is the API's placeholder, in place until an SDK is installed."""
    return type(provider).__name__ == "_ProxyMeterProvider"


DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""The semantic conventions' advice for ``db.client.operation.duration``."""


class TracingLayer(Layer):
    """One OpenTelemetry CLIENT span per call, and the client duration histogram.

    Args:
        inner: the cache to trace.
        server: ``server.address``, ``server.port`` and ``db.namespace`` attributes.
        tracer_provider: default: the global one (a no-op until an SDK is installed).
        meter_provider: default: the global one.
        clock: a monotonic clock, for the once-a-second look at the global providers.
    """

    name = "tracing"

    def __init__(
        self,
        inner: CacheProtocol,
        *,
        server: Mapping[str, AttributeValue] | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)

        self._tracer = trace.get_tracer(INSTRUMENTATION, __version__, tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION, __version__, meter_provider)
        self._duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._base: dict[str, AttributeValue] = {"db.system.name": "redis", **(server or {})}
        self._global_tracer = tracer_provider is None
        self._global_meter = meter_provider is None
        self._clock = clock
        self._mode = _SPANS
        self._mode_until = -math.inf

    def _current_mode(self) -> int:
        """What to record: spans, the histogram only, or nothing (no SDK installed yet)."""
        now = self._clock()
        if now < self._mode_until:
            return self._mode
        if self._global_tracer and isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
            # a span would be a no-op, and costs ~5 us to make
            no_meter = self._global_meter and _is_api_proxy(metrics.get_meter_provider())
            self._mode, self._mode_until = (_NOTHING if no_meter else _HISTOGRAM), now + _RECHECK
        else:  # a real provider: the API lets it be installed once, for good
            self._mode, self._mode_until = _SPANS, math.inf
        return self._mode

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        mode = self._mode if self._clock() < self._mode_until else self._current_mode()
        if mode != _SPANS:
            if mode == _NOTHING:
                return await call()  # nothing would record anything
            started = time.perf_counter()
            result = await call()
            attributes = self._attributes(operation, result)
            self._duration.record(time.perf_counter() - started, attributes)
            return result
        command = COMMANDS.get(operation, operation.upper())
        attributes = {**self._base, "db.operation.name": command}
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            command, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            result = await call()
            if isinstance(result, Failure):
                error_type = result.error.code.value
                attributes["error.type"] = error_type
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR, result.error.message))
        self._duration.record(time.perf_counter() - started, attributes)
        return result

    def _attributes(
        self, operation: str, result: Result[object, CacheError]
    ) -> dict[str, AttributeValue]:
        attributes = {**self._base, "db.operation.name": COMMANDS.get(operation, operation)}
        if isinstance(result, Failure):
            attributes["error.type"] = result.error.code.value
        return attributes

    def on_retry(self, operation: str, error: CacheError) -> None:
        """Add a ``retry`` event to the current call's span."""
        trace.get_current_span().add_event(
            "retry", {"error.type": error.code.value, "db.operation.name": COMMANDS[operation]}
        )

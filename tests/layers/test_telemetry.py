"""Metrics, tracing and logging layers: fresh registry per test, in-memory OTel, captured logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from resilient_cache import (
    CacheSettings,
    ErrorCode,
    Failure,
    LoggingLayer,
    MetricsLayer,
    Success,
    TracingLayer,
    build_cache,
)
from resilient_cache.testing import LOOPBACK, ManualClock, ScriptedCache, free_port


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def down_url() -> str:
    return f"redis://{LOOPBACK}:{free_port()}/0"


# -- metrics -------------------------------------------------------------------------------


async def test_lookups_are_counted_per_key(registry: CollectorRegistry) -> None:
    scripted = ScriptedCache()
    cache = MetricsLayer(scripted, cache_name="users", registry=registry)
    await cache.set("a", "1")
    await cache.get("a")  # hit
    await cache.get("nope")  # miss
    await cache.get_many(["a", "b", "c"])  # 1 hit, 2 misses
    scripted.fail(ErrorCode.CONNECTION)
    await cache.get_many(["a", "b"])  # 2 fallbacks
    scripted.fail(ErrorCode.TIMEOUT)
    await cache.get_json("a")  # 1 fallback
    gets = "resilient_cache_gets_total"
    assert sample(registry, gets, cache="users", result="hit") == 2
    assert sample(registry, gets, cache="users", result="miss") == 3
    assert sample(registry, gets, cache="users", result="fallback") == 3


async def test_outcomes_durations_and_errors(registry: CollectorRegistry) -> None:
    scripted = ScriptedCache()
    cache = MetricsLayer(scripted, registry=registry)
    await cache.set("k", "v")
    scripted.fail(ErrorCode.CIRCUIT_OPEN)
    await cache.set("k", "v")
    await cache.set("", "v")  # VALIDATION: the caller's error, not the cache's health
    count = "resilient_cache_operation_duration_seconds_count"
    for outcome in ("success", "fallback", "error"):
        assert sample(registry, count, cache="default", operation="set", outcome=outcome) == 1
    errors = "resilient_cache_errors_total"
    labels = {"cache": "default", "operation": "set"}
    assert sample(registry, errors, **labels, error_type="circuit_open") == 1
    assert sample(registry, errors, **labels, error_type="validation") == 1
    bucket = "resilient_cache_operation_duration_seconds_bucket"
    assert sample(registry, bucket, **labels, outcome="success", le="10.0") == 1


async def test_two_caches_share_one_registry(registry: CollectorRegistry) -> None:
    first = MetricsLayer(ScriptedCache(), cache_name="a", registry=registry)
    second = MetricsLayer(ScriptedCache(), cache_name="b", registry=registry)
    await first.get("k")
    await second.get("k")
    await second.get("k")
    assert sample(registry, "resilient_cache_gets_total", cache="a", result="miss") == 1
    assert sample(registry, "resilient_cache_gets_total", cache="b", result="miss") == 2


async def test_retries_budget_breaker_and_pool_reach_the_metrics(
    registry: CollectorRegistry,
) -> None:
    settings = CacheSettings(redis_url=down_url(), name="orders")
    cache = build_cache(settings, registry=registry, clock=ManualClock())
    for _ in range(3):
        await cache.get("k")
    labels = {"cache": "orders"}
    assert (
        sample(
            registry,
            "resilient_cache_retries_total",
            **labels,
            operation="get",
            error_type="connection",
        )
        == 3
    )  # the 3rd call's retry meets the open circuit
    state = "resilient_cache_circuit_breaker_state"
    assert sample(registry, state, **labels, state="open") == 1
    assert sample(registry, state, **labels, state="closed") == 0
    transitions = "resilient_cache_circuit_breaker_transitions_total"
    assert sample(registry, transitions, **labels, from_state="closed", to_state="open") == 1
    pool = "resilient_cache_pool_connections"
    assert sample(registry, pool, **labels, state="used") == 0
    assert registry.get_sample_value(pool, {**labels, "state": "idle"}) is not None
    await cache.aclose()


async def test_budget_exhaustion_is_counted(registry: CollectorRegistry) -> None:
    settings = CacheSettings.model_validate(
        {"redis_url": down_url(), "retry": {"budget_ratio": 0, "budget_min_per_second": 0},
         "breaker": {"fail_max": 100}}
    )  # fmt: skip
    cache = build_cache(settings, registry=registry)
    await cache.get("k")
    exhausted = "resilient_cache_retry_budget_exhausted_total"
    assert sample(registry, exhausted, cache="default") == 1
    await cache.aclose()


# -- tracing -------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_one_client_span_per_call_with_semantic_attributes(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    scripted = ScriptedCache()
    server: dict[str, str | int] = {
        "server.address": "cache.internal", "server.port": 6380, "db.namespace": "2"
    }  # fmt: skip
    cache = TracingLayer(scripted, server=server, tracer_provider=provider, meter_provider=meters)
    assert await cache.set("k", "v") == Success(None)
    scripted.fail(ErrorCode.TIMEOUT)
    await cache.get_many(["k"])
    first, second = exporter.get_finished_spans()
    assert first.name == "SET"
    assert first.kind is SpanKind.CLIENT
    assert dict(first.attributes or {}) == {
        "db.system.name": "redis", "db.operation.name": "SET", **server
    }  # fmt: skip
    assert second.name == "MGET"
    assert (second.attributes or {})["error.type"] == "timeout"
    assert second.status.status_code is StatusCode.ERROR
    data = reader.get_metrics_data()
    assert data is not None
    metric_names = [
        m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    ]
    assert metric_names == ["db.client.operation.duration"]
    meters.shutdown()


async def test_an_sdk_installed_later_is_picked_up_within_a_second(
    spans: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, exporter = spans
    clock = ManualClock()
    cache = TracingLayer(ScriptedCache(), clock=clock)  # the global providers: API only
    await cache.get("k")
    # the application installs its SDK after building the cache (as the API's set-once
    # global; restored after the test)
    monkeypatch.setattr(otel_trace, "_TRACER_PROVIDER", provider)
    await cache.get("k")
    assert exporter.get_finished_spans() == ()  # not looked at again yet: cheap calls
    clock.advance(1.0)
    await cache.get("k")
    assert [span.name for span in exporter.get_finished_spans()] == ["GET"]


async def test_retries_are_span_events(
    spans: tuple[TracerProvider, InMemorySpanExporter], registry: CollectorRegistry
) -> None:
    provider, exporter = spans
    cache = build_cache(
        CacheSettings(redis_url=down_url()), registry=registry, tracer_provider=provider
    )
    result = await cache.get("k")
    assert isinstance(result, Failure)
    (span,) = exporter.get_finished_spans()
    assert [event.name for event in span.events] == ["retry"]
    assert (span.events[0].attributes or {})["error.type"] == "connection"
    assert (span.attributes or {})["server.address"] == LOOPBACK
    assert (span.attributes or {})["error.type"] == "connection"
    await cache.aclose()


# -- logging -------------------------------------------------------------------------------


async def test_failures_are_logged_without_values_or_keys() -> None:
    scripted = ScriptedCache()
    cache = LoggingLayer(scripted, cache_name="sessions")
    with structlog.testing.capture_logs() as logs:
        await cache.set("user:42", "secret-value")
        scripted.fail(ErrorCode.CONNECTION)
        await cache.set("user:42", "secret-value")
    assert logs == [
        {
            "event": "resilient_cache.call_failed",
            "log_level": "warning",
            "cache": "sessions",
            "operation": "set",
            "error_type": "connection",
            "error": "scripted fault",
            "maybe_applied": False,
            "duration_s": logs[0]["duration_s"],
        }
    ]
    assert "secret-value" not in repr(logs)
    assert "user:42" not in repr(logs)


async def test_keys_and_successes_are_logged_only_when_asked() -> None:
    scripted = ScriptedCache()
    cache = LoggingLayer(scripted, log_keys=True, debug=True)
    with structlog.testing.capture_logs() as logs:
        await cache.get("user:42")
        scripted.fail(ErrorCode.TIMEOUT)
        await cache.get("user:42")
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("resilient_cache.call_succeeded", "debug"),
        ("resilient_cache.call_failed", "warning"),
    ]
    assert logs[1]["key"] == "user:42"


async def test_retries_and_breaker_transitions_are_logged(registry: CollectorRegistry) -> None:
    clock = ManualClock()
    cache = build_cache(CacheSettings(redis_url=down_url()), registry=registry, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(4):
            await cache.get("k")
    events = [e["event"] for e in logs]
    assert events.count("resilient_cache.call_retried") == 3
    assert events.count("resilient_cache.circuit_opened") == 1
    opened = next(e for e in logs if e["event"] == "resilient_cache.circuit_opened")
    assert opened == {
        "event": "resilient_cache.circuit_opened", "log_level": "error",
        "cache": "default", "from_state": "closed", "to_state": "open",
    }  # fmt: skip
    # no flood while open: rejections are not logged unless debug is on
    assert not [e for e in logs if e.get("error_type") == "circuit_open"]
    debug_cache = LoggingLayer(ScriptedCache(), debug=True)
    debug_cache.inner.fail(ErrorCode.CIRCUIT_OPEN)  # type: ignore[attr-defined]
    with structlog.testing.capture_logs() as debug_logs:
        await debug_cache.get("k")
    assert [(e["error_type"], e["log_level"]) for e in debug_logs] == [("circuit_open", "debug")]
    await cache.aclose()


# -- exposition ------------------------------------------------------------------------------


async def test_render_and_asgi_app_serve_the_registry(registry: CollectorRegistry) -> None:
    import httpx  # noqa: PLC0415

    from resilient_cache.metrics import asgi_app, render  # noqa: PLC0415

    await MetricsLayer(ScriptedCache(), registry=registry).get("k")
    body, content_type = render(registry)
    assert b'resilient_cache_gets_total{cache="default",result="miss"} 1.0' in body
    assert content_type.startswith("text/plain")
    transport = httpx.ASGITransport(app=asgi_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert "resilient_cache_operation_duration_seconds_bucket" in response.text


async def test_rejected_lookups_are_errors_not_fallbacks(registry: CollectorRegistry) -> None:
    cache = MetricsLayer(ScriptedCache(), registry=registry)
    await cache.get("")
    await cache.get_many(["a", "a", ""])
    gets = "resilient_cache_gets_total"
    assert sample(registry, gets, cache="default", result="fallback") == 0
    errors = "resilient_cache_errors_total"
    assert sample(registry, errors, cache="default", operation="get", error_type="validation") == 1
    await cache.get_many(["a", "a", "b"])
    assert sample(registry, gets, cache="default", result="miss") == 2  # distinct keys


async def test_metrics_never_raise_on_bad_batch_input(registry: CollectorRegistry) -> None:
    cache = MetricsLayer(ScriptedCache(), registry=registry)
    result = await cache.get_many([["not", "a", "key"]])  # type: ignore[list-item]
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.VALIDATION

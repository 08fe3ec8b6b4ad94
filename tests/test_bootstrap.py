"""Settings from the environment, the composition root, and the cache-aside helper."""

from __future__ import annotations

import json
import time

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from resilient_cache import (
    BreakerState,
    CacheSettings,
    CircuitBreakerLayer,
    ConfigurationError,
    ErrorCode,
    Failure,
    ObservabilitySettings,
    RedisAdapter,
    Success,
    build_cache,
    generate_encryption_key,
    get_cache,
    get_or_set,
    get_or_set_json,
)
from resilient_cache.testing import ManualClock, ScriptedCache
from tests.servers import LOOPBACK, RedisServer, free_port


def test_settings_come_from_cache_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("CACHE_DEADLINE", "0.3")
    monkeypatch.setenv("CACHE_NAMESPACE", "checkout")
    monkeypatch.setenv("CACHE_RETRY__ATTEMPTS", "3")
    monkeypatch.setenv("CACHE_BREAKER__RESET_TIMEOUT", "10")
    monkeypatch.setenv("CACHE_REDIS__PASSWORD", "pa55")
    monkeypatch.setenv("CACHE_REDIS__SOCKET_TIMEOUT", "0.1")
    settings = CacheSettings.from_env()
    assert settings.redis_url == "redis://cache.internal:6380/2"
    assert settings.deadline == 0.3
    assert settings.namespace == "checkout"
    assert settings.retry.attempts == 3
    assert settings.breaker.reset_timeout == 10
    assert settings.redis_options().password == "pa55"
    assert settings.redis_options().operation_timeout == 0.3  # bounded by the deadline
    assert "pa55" not in repr(settings)
    assert "cache.internal" not in repr(settings)  # the URL may hold a password too


def test_defaults_match_the_design() -> None:
    settings = CacheSettings()
    assert settings.deadline == 0.5
    assert (settings.retry.attempts, settings.retry.backoff_base, settings.retry.backoff_max) == (
        2, 0.01, 0.1
    )  # fmt: skip
    assert (settings.retry.budget_ratio, settings.retry.budget_min_per_second) == (0.2, 10)
    b = settings.breaker
    assert (b.fail_max, b.reset_timeout, b.reset_timeout_max) == (5, 5.0, 60.0)
    assert (b.success_threshold, b.half_open_permits) == (2, 1)
    assert (settings.redis.socket_timeout, settings.redis.connect_timeout) == (None, 0.5)
    assert settings.redis_options().socket_timeout is None  # the deadline bounds each call
    assert settings.redis_options().operation_timeout == 0.5
    assert settings.redis.max_connections == 50


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CACHE_DEADLINE", "-1"),
        ("CACHE_DEADLINE", "soon"),
        ("CACHE_REDIS_URL", "http://user:s3cret@x"),
        ("CACHE_REDIS_URL", "redis://x/0?ssl_cert_reqs=none"),
        ("CACHE_RETRY__ATTEMPTS", "0"),
        ("CACHE_RETRY__BUDGET_RATIO", "1.5"),
        ("CACHE_BREAKER__FAIL_MAX", "0"),
        ("CACHE_REDIS__MAX_CONNECTIONS", "0"),
        ("CACHE_REDIS__SOCKET_TIMEOUT", "0.6"),  # longer than the 0.5 s deadline
        ("CACHE_BREAKER__RESET_TIMEOUT", "120"),  # beyond reset_timeout_max
        ("CACHE_REDIS__SSL_CA_CERTS", "/etc/ca.pem"),  # with a redis:// URL
        ("CACHE_DEADLIN", "0.3"),  # a near miss is not silently ignored
        ("CACHE_RETRY__ATEMPTS", "3"),
        ("CACHE_NAMESPACE", "a:b"),  # the separator: two tenants could overlap
        ("CACHE_REDIS__SSL_CERT_REQS", "none"),  # needs allow_insecure_tls
    ],
)
def test_a_bad_variable_fails_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        build_cache()
    assert info.value.setting == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert "s3cret" not in str(info.value)


def test_other_cache_variables_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIR", "/var/cache/app")  # some other software's
    assert CacheSettings.from_env().deadline == 0.5


def test_the_stack_order_is_telemetry_then_retry_then_breaker_then_redis() -> None:
    cache = build_cache(CacheSettings(), registry=CollectorRegistry())
    assert cache.layers == (
        "metrics", "tracing", "logging", "retry", "circuit_breaker", "RedisAdapter"
    )  # fmt: skip


def test_telemetry_layers_can_be_switched_off() -> None:
    settings = CacheSettings(
        observability=ObservabilitySettings(metrics=False, tracing=False, logging=False)
    )
    assert build_cache(settings).layers == ("retry", "circuit_breaker", "RedisAdapter")


def test_get_cache_is_one_instance_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_NAMESPACE", "app")
    get_cache.cache_clear()
    try:
        assert get_cache() is get_cache()
    finally:
        get_cache.cache_clear()


async def test_the_built_stack_works_against_redis(redis_server: RedisServer) -> None:
    settings = CacheSettings(redis_url=redis_server.url, namespace="t")
    async with build_cache(settings, registry=CollectorRegistry()) as cache:
        assert await cache.set("k", "v", ttl=10) == Success(None)
        assert await cache.get("k") == Success("v")
        assert await cache.increment("n") == Success(1)


async def test_a_down_redis_opens_the_breaker_and_calls_fail_fast() -> None:
    clock = ManualClock()
    settings = CacheSettings(redis_url=f"redis://{LOOPBACK}:{free_port()}/0")
    cache = build_cache(settings, clock=clock, registry=CollectorRegistry())
    breaker = cache.find(CircuitBreakerLayer)
    assert breaker is not None
    for _ in range(3):  # 2 attempts each: the 5th failure opens the circuit
        result = await cache.get("k")
        assert isinstance(result, Failure)
    assert breaker.state is BreakerState.OPEN
    started = time.perf_counter()
    result = await cache.get("k")
    assert time.perf_counter() - started < 0.001
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.CIRCUIT_OPEN
    await cache.aclose()


async def test_get_or_set_treats_every_failure_as_a_miss() -> None:
    scripted = ScriptedCache()
    loads: list[str] = []

    async def loader() -> str:
        loads.append("db")
        return "from the database"

    assert await get_or_set(scripted, "k", loader, ttl=60) == "from the database"
    assert await get_or_set(scripted, "k", loader, ttl=60) == "from the database"
    assert loads == ["db"]  # the second came from the cache
    scripted.fail_always(ErrorCode.CONNECTION)
    assert await get_or_set(scripted, "k", loader) == "from the database"
    assert loads == ["db", "db"]


async def test_get_or_set_lets_loader_errors_through() -> None:
    async def broken() -> str:
        raise LookupError("no such user")

    with pytest.raises(LookupError):
        await get_or_set(ScriptedCache(), "k", broken)


async def test_get_or_set_json_round_trips() -> None:
    cache = ScriptedCache()

    async def loader() -> dict[str, int]:
        return {"a": 1}

    assert await get_or_set_json(cache, "j", loader) == {"a": 1}
    assert await cache.get_json("j") == Success({"a": 1})
    cache.fail_always(ErrorCode.TIMEOUT)
    assert await get_or_set_json(cache, "j", loader) == {"a": 1}


def test_an_adapter_is_built_with_the_deadline_as_operation_timeout() -> None:
    cache = build_cache(CacheSettings(deadline=0.3), registry=CollectorRegistry())
    adapter = cache.find(RedisAdapter)
    assert adapter is not None
    assert adapter._timeout == 0.3


async def test_bulk_operations_get_the_bulk_deadline(redis_server: RedisServer) -> None:
    assert redis_server.command("DEBUG", "POPULATE", "200000", "bulk") == "+OK"
    settings = CacheSettings(redis_url=redis_server.url, deadline=0.05)
    async with build_cache(settings, registry=CollectorRegistry()) as cache:
        started = time.monotonic()
        result = await cache.delete_pattern("bulk:*")
        elapsed = time.monotonic() - started
    assert result == Success(200_000)
    assert elapsed > settings.deadline  # the per-call deadline alone would have cut it
    assert elapsed < settings.bulk_deadline


# -- encryption from the settings -------------------------------------------------------


async def test_encryption_keys_in_the_environment_encrypt_every_value(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    old, new = generate_encryption_key(), generate_encryption_key()
    monkeypatch.setenv("CACHE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("CACHE_NAMESPACE", "enc")
    monkeypatch.setenv("CACHE_ENCRYPTION__KEYS", json.dumps({"2026-10": old, "2026-11": new}))
    monkeypatch.setenv("CACHE_ENCRYPTION__CURRENT", "2026-11")
    settings = CacheSettings.from_env()
    assert new not in repr(settings) and new not in str(settings.model_dump())
    async with build_cache(settings, registry=CollectorRegistry()) as cache:
        assert cache.layers[-2:] == ("encryption", "RedisAdapter")
        assert await cache.set("k", "secret value") == Success(None)
        assert await cache.get("k") == Success("secret value")
        raw = aioredis.Redis.from_url(redis_server.url)
        stored = await raw.get("enc:k")
        await raw.aclose()
        assert isinstance(stored, bytes) and stored.startswith(b"enc:v1:2026-11:")
        assert b"secret value" not in stored


def test_encryption_keys_need_a_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_ENCRYPTION__KEYS", json.dumps({"k1": generate_encryption_key()}))
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.from_env()
    assert info.value.setting == "CACHE_ENCRYPTION__CURRENT"


# -- topologies -------------------------------------------------------------------------


def test_cluster_and_sentinel_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_TOPOLOGY", "cluster")
    monkeypatch.setenv("CACHE_CLUSTER__NODES", "10.0.0.1:7000, 10.0.0.2:7001")
    settings = CacheSettings.from_env()
    assert (settings.topology, settings.cluster.nodes) == (
        "cluster", ["10.0.0.1:7000", "10.0.0.2:7001"]
    )  # fmt: skip
    monkeypatch.setenv("CACHE_TOPOLOGY", "sentinel")
    monkeypatch.delenv("CACHE_CLUSTER__NODES")
    monkeypatch.setenv("CACHE_SENTINEL__ADDRESSES", '["10.0.0.5:26379"]')
    monkeypatch.setenv("CACHE_SENTINEL__SERVICE_NAME", "cache")
    monkeypatch.setenv("CACHE_SENTINEL__PASSWORD", "s3ntinel-pw")
    settings = CacheSettings.from_env()
    assert settings.sentinel.addresses == ["10.0.0.5:26379"]
    assert "s3ntinel-pw" not in repr(settings)


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"CACHE_TOPOLOGY": "cluster"}, "CACHE_CLUSTER__NODES"),
        ({"CACHE_TOPOLOGY": "cluster", "CACHE_CLUSTER__NODES": "nohost"}, "CACHE_CLUSTER__NODES"),
        ({"CACHE_CLUSTER__NODES": "h:7000"}, "CACHE_CLUSTER__NODES"),  # topology standalone
        ({"CACHE_TOPOLOGY": "sentinel", "CACHE_SENTINEL__ADDRESSES": "h:26379"},
         "CACHE_SENTINEL__SERVICE_NAME"),
        ({"CACHE_TOPOLOGY": "sentinel"}, "CACHE_SENTINEL__ADDRESSES"),
        ({"CACHE_TOPOLOGY": "mesh"}, "CACHE_TOPOLOGY"),
        ({"CACHE_ENCRYPTION__KEYS": "{not json"}, "CACHE_ENCRYPTION__*"),
    ],
)  # fmt: skip
def test_topology_mistakes_are_named(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], variable: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.from_env()
    assert info.value.setting == variable


def test_every_default_is_the_one_of_domain_defaults() -> None:
    """The settings and the layers' constructors take their defaults from one module."""
    import inspect  # noqa: PLC0415

    from resilient_cache import RetryBudget, RetryLayer  # noqa: PLC0415
    from resilient_cache.domain import defaults  # noqa: PLC0415

    def keyword_defaults(callable_: object) -> dict[str, object]:
        parameters = inspect.signature(callable_).parameters.values()  # type: ignore[arg-type]
        return {p.name: p.default for p in parameters if p.default is not p.empty}

    settings = CacheSettings()
    assert keyword_defaults(CircuitBreakerLayer) | {"clock": None} == {
        **settings.breaker.model_dump(), "clock": None
    }  # fmt: skip
    retry = keyword_defaults(RetryLayer)
    assert {name: retry[name] for name in ("attempts", "backoff_base", "backoff_max")} == (
        settings.retry.model_dump(include={"attempts", "backoff_base", "backoff_max"})
    )
    assert (retry["deadline"], retry["bulk_deadline"]) == (
        settings.deadline, settings.bulk_deadline
    ) == (defaults.DEADLINE, defaults.BULK_DEADLINE)  # fmt: skip
    budget = keyword_defaults(RetryBudget)
    assert (budget["ratio"], budget["min_per_second"], budget["window"]) == (
        settings.retry.budget_ratio, settings.retry.budget_min_per_second,
        settings.retry.budget_window,
    )  # fmt: skip
    assert settings.redis_options().max_connections == defaults.MAX_CONNECTIONS

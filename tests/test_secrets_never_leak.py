"""A password given to the library appears in no log, span, metric, error or repr.

End to end, against a real redis-server started with ``--requirepass``: the whole stack
from ``build_cache`` with every telemetry layer on, the password given in each way the
settings accept (URL user info with and without a user name, URL query, ``redis.password``),
and the paths on which a password could slip out:

* (a) a wrong password: the server refuses AUTH on every connection;
* (b) the right password, then the server stops: resets, refused connections, retries,
  the retry budget, the breaker opening and then answering CIRCUIT_OPEN;
* (c) the ``resilient-cache info`` and ``ping`` commands, run in process.

Everything each path produced is then searched for the password (and the wrong one): every
structlog event (as ``repr`` and as JSON), stdlib log records, everything printed, warnings,
every span (attributes, events, status, as JSON), the OpenTelemetry metrics, the Prometheus
exposition, every ``CacheError`` (``repr``, ``str``, message, details) and its ``cause``
(``str``, ``repr``, arguments, the whole formatted traceback chain), and the ``repr`` of the
settings, the stack and the adapter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
import warnings
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError
from structlog.testing import capture_logs

from resilient_cache import (
    CacheError,
    CacheSettings,
    ConfigurationError,
    ErrorCode,
    Failure,
    Layer,
    RedisAdapter,
    SecretScrubber,
    Success,
    build_cache,
    scrub_secrets,
)
from resilient_cache.cli import main as cli_main
from tests.servers import RedisServer

PASSWORD = "Canary-Pw-7f3Qz9xK"
"""The server's password: distinctive, so that any appearance of it is a leak."""

WRONG = "Wrong-Canary-4hT8mVq2"
"""A wrong password: also a secret (often a typo of the real one), never to be shown."""

CANARIES = (PASSWORD, WRONG)


@pytest.fixture
def secured(redis_binary: str) -> Iterator[RedisServer]:
    """A private redis-server that requires ``PASSWORD``; free to be stopped."""
    server = RedisServer(redis_binary, "--requirepass", PASSWORD)
    server.start()
    yield server
    server.cleanup()


def settings_for(server: RedisServer, password: str, form: str, **more: Any) -> CacheSettings:
    """Settings giving ``password`` in one of the forms the library accepts."""
    where = server.url.removeprefix("redis://")
    urls = {
        "url-userinfo": f"redis://:{password}@{where}",
        "url-user-and-password": f"redis://default:{password}@{where}",
        "url-query": f"{server.url}?password={password}",
        "settings-password": server.url,
    }
    extra: dict[str, Any] = {"redis": {"password": password}} if form == "settings-password" else {}
    return CacheSettings(redis_url=urls[form], name="leaks", **extra, **more)


FORMS = ["url-userinfo", "url-user-and-password", "url-query", "settings-password"]


@dataclass
class Seen:
    """Everything a scenario produced, to be searched for a secret."""

    texts: list[tuple[str, str]] = field(default_factory=list)  # (where, text)
    errors: list[CacheError] = field(default_factory=list)

    def add(self, where: str, value: object) -> None:
        self.texts.append((where, value if isinstance(value, str) else repr(value)))

    def add_error(self, error: CacheError) -> None:
        self.errors.append(error)
        self.add("CacheError repr", repr(error))
        self.add("CacheError str", str(error))
        self.add("CacheError message", error.message)
        self.add("CacheError details", dict(error.details))
        self.add("CacheError key", error.key)
        cause = error.cause
        met: set[int] = set()
        while cause is not None and id(cause) not in met:
            met.add(id(cause))
            self.add("cause str", str(cause))
            self.add("cause repr", repr(cause))
            self.add("cause args", cause.args)
            self.add("cause notes", getattr(cause, "__notes__", None))
            self.add("cause traceback", "".join(traceback.format_exception(cause)))
            cause = cause.__cause__ or cause.__context__

    def leaks(self, *secrets: str) -> list[str]:
        return [f"{where}: {text[:300]}" for where, text in self.texts if shows(text, *secrets)]


FRAGMENT = 8
"""Characters of a secret that already count as a leak (a truncated repr shows a prefix)."""


def shows(text: str, *secrets: str) -> bool:
    """Whether ``text`` holds any secret, percent-encoded or not, or 8 characters of one."""
    for secret in secrets:
        for form in (secret, quote(secret, safe="")):
            if any(form[i : i + FRAGMENT] in text for i in range(len(form) - FRAGMENT + 1)):
                return True
    return False


class Telemetry:
    """A private Prometheus registry, in-memory spans and metrics: nothing global."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def build(self, settings: CacheSettings) -> Layer:
        return build_cache(
            settings,
            registry=self.registry,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            logger=structlog.get_logger("resilient_cache"),
        )

    def collect(self, seen: Seen) -> None:
        for span in self.spans.get_finished_spans():
            seen.add("span name", span.name)
            seen.add("span attributes", dict(span.attributes or {}))
            seen.add("span status", span.status.description)
            for event in span.events:
                seen.add("span event", (event.name, dict(event.attributes or {})))
            seen.add("span json", span.to_json())
        data = self.reader.get_metrics_data()
        if data is not None:
            seen.add("otel metrics", data.to_json())
        seen.add("prometheus", generate_latest(self.registry).decode())

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


async def every_operation(cache: Layer, seen: Seen) -> list[ErrorCode]:
    """Call each protocol method once; record every failure; return the error codes."""
    results = [
        await cache.ping(),
        await cache.set("user:1", "Ada", 60),
        await cache.get("user:1"),
        await cache.set_json("user:2", {"name": "Bob"}),
        await cache.get_json("user:2"),
        await cache.exists("user:1"),
        await cache.expire("user:1", 30),
        await cache.ttl("user:1"),
        await cache.increment("visits"),
        await cache.decrement("visits"),
        await cache.get_many(["user:1", "user:2"]),
        await cache.set_many({"a": "1", "b": "2"}),
        await cache.delete("user:1"),
        await cache.delete_pattern("user:*"),
        await cache.flush(),
    ]
    codes = []
    for result in results:
        if isinstance(result, Failure):
            seen.add_error(result.error)
            codes.append(result.error.code)
    return codes


def observe_reprs(seen: Seen, settings: CacheSettings, cache: Layer) -> None:
    seen.add("settings repr", repr(settings))
    seen.add("settings str", str(settings))
    seen.add("settings redis", repr(settings.redis))
    seen.add("redis options", repr(settings.redis_options()))
    seen.add("stack repr", repr(cache))
    adapter = cache.find(RedisAdapter)
    assert adapter is not None
    seen.add("adapter repr", repr(adapter))
    seen.add("adapter endpoint", repr(adapter.endpoint))


def observe_logs(
    seen: Seen, events: list[MutableMapping[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    for event in events:
        seen.add("log event repr", repr(event))
        seen.add("log event json", json.dumps(event, default=str))
    for record in caplog.records:
        seen.add("stdlib log", record.getMessage())
        if record.exc_info:
            seen.add("stdlib log traceback", "".join(traceback.format_exception(*record.exc_info)))


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.close()


# -- (a) the server refuses the password -----------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_a_wrong_password_is_shown_nowhere(
    form: str,
    secured: RedisServer,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = Seen()
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        settings = settings_for(secured, WRONG, form)
        cache = telemetry.build(settings)
        codes = await every_operation(cache, seen)
        observe_reprs(seen, settings, cache)
        await cache.aclose()
    assert codes and set(codes) == {ErrorCode.AUTH}  # refused, and said so: the path ran
    assert all("invalid username-password pair" in e.message for e in seen.errors)
    assert any(e["event"] == "resilient_cache.call_failed" for e in events)
    observe_logs(seen, events, caplog)
    seen.add("warnings", [str(w.message) for w in warned])
    output = capsys.readouterr()
    seen.add("stdout", output.out)
    seen.add("stderr", output.err)
    telemetry.collect(seen)
    assert any(where == "span status" and "invalid" in text for where, text in seen.texts)
    assert seen.leaks(*CANARIES) == []


# -- (b) the right password, then the server goes away ---------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_the_password_is_shown_nowhere_when_the_server_goes_away(
    form: str,
    secured: RedisServer,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = Seen()
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        # the breaker opens after 20 failures: most operations fail on the network first
        settings = settings_for(secured, PASSWORD, form, breaker={"fail_max": 20})
        cache = telemetry.build(settings)
        assert await every_operation(cache, seen) == []  # authenticated: all good
        secured.stop(kill=True)  # pooled connections now reset; new ones are refused
        codes: list[ErrorCode] = []
        for _ in range(4):
            codes += await every_operation(cache, seen)
        observe_reprs(seen, settings, cache)
        await cache.aclose()
    assert ErrorCode.CONNECTION in codes
    assert ErrorCode.CIRCUIT_OPEN in codes  # the breaker opened, then answered for Redis
    names = {event["event"] for event in events}
    assert {"resilient_cache.call_retried", "resilient_cache.circuit_opened"} <= names
    observe_logs(seen, events, caplog)
    seen.add("warnings", [str(w.message) for w in warned])
    output = capsys.readouterr()
    seen.add("stdout", output.out)
    seen.add("stderr", output.err)
    telemetry.collect(seen)
    assert "resilient_cache_circuit_breaker_transitions_total" in seen.texts[-1][1]
    assert seen.leaks(*CANARIES) == []


async def test_an_adapter_alone_shows_no_password_either(secured: RedisServer) -> None:
    seen = Seen()
    for password in CANARIES:
        adapter = RedisAdapter.from_url(secured.url, password=password)
        seen.add("adapter repr", repr(adapter))
        await every_operation_on_adapter(adapter, seen)
        await adapter.aclose()
    assert seen.errors and all(e.code is ErrorCode.AUTH for e in seen.errors)
    assert seen.leaks(*CANARIES) == []


async def every_operation_on_adapter(adapter: RedisAdapter, seen: Seen) -> None:
    for result in (await adapter.get("k"), await adapter.set("k", "v"), await adapter.ping()):
        if isinstance(result, Failure):
            seen.add_error(result.error)


# -- (c) the command line --------------------------------------------------------------------


def test_the_command_line_shows_no_password(
    secured: RedisServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen()
    where = secured.url.removeprefix("redis://")
    for url, code in (
        (f"redis://:{PASSWORD}@{where}", 0),
        (f"redis://default:{WRONG}@{where}", 1),  # info asks the server: refused
        (f"{secured.url}?password={PASSWORD}", 0),
    ):
        assert cli_main(["info", "--redis-url", url]) == code
        shown = json.loads(capsys.readouterr().out)
        assert shown["layers"][-1] == "RedisAdapter"
        seen.add("info", shown)
    monkeypatch.setenv("CACHE_REDIS__PASSWORD", WRONG)
    assert cli_main(["info", "--redis-url", secured.url]) == 1
    assert cli_main(["ping", "--redis-url", secured.url]) == 1  # refused: the wrong password
    monkeypatch.setenv("CACHE_REDIS__PASSWORD", PASSWORD)
    assert cli_main(["ping", "--redis-url", secured.url]) == 0
    # a configuration error repeats the URL: redacted
    assert cli_main(["info", "--redis-url", f"redis://:{PASSWORD}@{where}x"]) == 2
    output = capsys.readouterr()
    assert "FAIL" in output.out and "OK" in output.out and "configuration error" in output.err
    seen.add("stdout", output.out)
    seen.add("stderr", output.err)
    assert seen.leaks(*CANARIES) == []


# -- settings errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:1/notanumber",
        f"redis://:{PASSWORD}@127.0.0.1:1/0?ssl_cert_reqs=none",
        f"http://user:{PASSWORD}@127.0.0.1:1/0",
    ],
)
def test_a_bad_url_from_the_environment_is_reported_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.from_env(redis_url=url)
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)
    assert info.value.setting == "CACHE_REDIS_URL"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@h/notanumber",  # short: shown whole
        f"redis://:{PASSWORD}@cache.internal.example.com:6379/x",  # long: a prefix
    ],
    ids=["short", "long"],
)
def test_a_bad_url_given_in_code_is_reported_without_its_password(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        CacheSettings(redis_url=url)
    assert not shows(str(info.value), PASSWORD)
    assert not shows(repr(info.value), PASSWORD)


# -- the processor for the application's own events ------------------------------------------


def test_the_scrubber_hides_the_password_in_an_application_event(secured: RedisServer) -> None:
    where = secured.url.removeprefix("redis://")
    url = f"redis://default:{PASSWORD}@{where}"
    scrubber = SecretScrubber([PASSWORD])
    with capture_logs(processors=[structlog.processors.format_exc_info, scrubber]) as events:
        log = structlog.get_logger("app")
        log.info("cache configured", url=url, settings={"redis": {"password": PASSWORD}})
        log.warning(f"could not reach {url}", password_used=PASSWORD, attempt=2)
        try:
            raise ConnectionError(f"Redis at {url} said no ({PASSWORD})")
        except ConnectionError:
            log.exception("giving up")
    rendered = [json.dumps(event, default=str) for event in events]
    assert len(rendered) == 3
    assert not [line for line in rendered if PASSWORD in line]
    assert events[0]["url"] == f"redis://default:***@{where}"
    assert events[0]["settings"] == {"redis": {"password": "***"}}
    assert events[1]["password_used"] == "***" and events[1]["attempt"] == 2
    assert "ConnectionError: Redis at redis://default:***@" in events[2]["exception"]


def test_without_registering_it_the_url_password_is_still_hidden() -> None:
    event = {"event": "connect", "url": f"redis://:{PASSWORD}@cache:6379/0"}
    assert PASSWORD not in repr(scrub_secrets(None, "info", event))


async def test_library_events_stay_clean_through_the_scrubber(
    secured: RedisServer, telemetry: Telemetry
) -> None:
    """The library's own events go through the same chain unharmed: nothing to hide there."""
    with capture_logs(processors=[SecretScrubber([PASSWORD, WRONG])]) as events:
        cache = telemetry.build(settings_for(secured, WRONG, "url-userinfo"))
        await cache.get("k")
        await cache.aclose()
    [event] = events
    assert event["event"] == "resilient_cache.call_failed"
    assert event["error_type"] == "auth"
    assert "***" not in json.dumps(event)  # the library never needed the scrubber


def test_secured_server_really_requires_the_password(secured: RedisServer) -> None:
    assert secured.command("GET", "k") == "-NOAUTH Authentication required."
    assert secured.command("AUTH", PASSWORD) == "+OK"


async def test_a_timeout_path_shows_no_password(secured: RedisServer) -> None:
    """A server that stops answering (busy in DEBUG SLEEP): TIMEOUT errors, no password."""
    seen = Seen()
    adapter = RedisAdapter.from_url(secured.url, password=PASSWORD, operation_timeout=0.2)
    assert isinstance(await adapter.ping(), Success)  # a pooled, authenticated connection
    other = aioredis.Redis.from_url(secured.url, password=PASSWORD)
    pause = asyncio.ensure_future(other.execute_command("DEBUG", "SLEEP", "0.6"))
    await asyncio.sleep(0.1)
    result = await adapter.get("k")
    await pause
    await other.aclose()
    await adapter.aclose()
    assert isinstance(result, Failure) and result.error.code is ErrorCode.TIMEOUT
    seen.add_error(result.error)
    assert seen.leaks(*CANARIES) == []

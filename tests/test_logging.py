"""The library is silent until the application configures logging, and then speaks through it.

Each case is a real program in a fresh interpreter (structlog's configuration is global, and
a test that captured logs has configured it) against a port where nothing listens: every
call fails, is retried, and opens the breaker, so the library has plenty to say.
"""

from __future__ import annotations

import json

from resilient_cache.testing import free_port
from tests.fresh_python import python_run

EVENTS = ("resilient_cache.call_retried", "resilient_cache.circuit_opened")


def program(setup: str) -> str:
    return f"""
import asyncio, logging, sys
import structlog
from resilient_cache import CacheSettings, build_cache
{setup}
async def main():
    cache = build_cache(CacheSettings(redis_url="redis://127.0.0.1:{free_port()}/0"))
    for _ in range(8):
        result = await cache.get("user:1")
        assert result.is_failure(), result
    await cache.aclose()
asyncio.run(main())
print("done")
"""


def test_nothing_configured_prints_nothing() -> None:
    """Before: structlog's default logger printed every event on stdout."""
    done = python_run(program(""))
    assert done.stdout == "done\n"
    assert done.stderr == ""


def test_logging_configured_gets_the_events_on_its_handlers() -> None:
    done = python_run(program("logging.basicConfig(level=logging.INFO)"))
    assert done.stdout == "done\n"  # stdout stays the program's
    for event in EVENTS:
        assert f"resilient_cache:{event} cache='default'" in done.stderr, done.stderr
    assert "WARNING:resilient_cache:resilient_cache.call_failed" in done.stderr


def test_logging_at_error_level_gets_only_errors() -> None:
    done = python_run(program("logging.basicConfig(level=logging.ERROR)"))
    assert "resilient_cache.circuit_opened" in done.stderr
    assert "call_retried" not in done.stderr and "call_failed" not in done.stderr


def test_the_keys_are_on_the_log_record() -> None:
    setup = """
class Keys(logging.Handler):
    def emit(self, record):
        if record.name == "resilient_cache" and hasattr(record, "event_dict"):
            print(record.levelname, sorted(record.event_dict.items()))
logging.getLogger().addHandler(Keys())
logging.getLogger().setLevel(logging.INFO)
"""
    done = python_run(program(setup))
    retried = next(line for line in done.stdout.splitlines() if "call_retried" in line)
    assert retried.startswith("INFO [")
    assert "('cache', 'default')" in retried and "('operation', 'get')" in retried


def test_structlog_configured_gets_structured_events_with_the_same_names_and_keys() -> None:
    setup = """
structlog.configure(processors=[structlog.processors.add_log_level,
                                structlog.processors.JSONRenderer()])
"""
    done = python_run(program(setup))
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    names = {event["event"] for event in events}
    assert set(EVENTS) <= names, names
    retried = next(e for e in events if e["event"] == "resilient_cache.call_retried")
    assert retried["cache"] == "default" and retried["operation"] == "get"
    assert retried["level"] == "info"
    assert done.stderr == ""


def test_a_capture_of_structlog_logs_leaves_the_library_silent() -> None:
    """``capture_logs()`` leaves structlog "configured" with its defaults (which print on
    stdout): that is not the application configuring structlog."""
    setup = """
from structlog.testing import capture_logs
with capture_logs():
    pass
"""
    done = python_run(program(setup))
    assert done.stdout == "done\n" and done.stderr == ""


def test_a_security_warning_reaches_stderr_without_logging_configured() -> None:
    """The one kind of event that must not stay silent: plaintext to another host."""
    code = """
from resilient_cache import RedisAdapter
RedisAdapter.from_url("redis://cache.example.com:6379/0")
print("done")
"""
    done = python_run(code)
    assert done.stdout == "done\n"
    assert "plaintext" in done.stderr and done.stderr.startswith("resilient-cache: warning: ")


def test_structlog_configured_after_the_cache_was_built_takes_effect_at_once() -> None:
    """The library's logger is made at import; it follows the configuration at each event,
    also one the application makes after its first calls (caching what it allows)."""
    done = python_run(f"""
import asyncio
import structlog
from resilient_cache import CacheSettings, build_cache
async def main():
    cache = build_cache(CacheSettings(redis_url="redis://127.0.0.1:{free_port()}/0"))
    assert (await cache.get("before")).is_failure()
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        cache_logger_on_first_use=True)
    for _ in range(8):
        assert (await cache.get("after")).is_failure()
    await cache.aclose()
asyncio.run(main())
""")
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert "resilient_cache.circuit_opened" in {event["event"] for event in events}, done
    assert done.stderr == ""

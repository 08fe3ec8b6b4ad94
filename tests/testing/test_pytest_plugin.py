"""The pytest plugin gives a service's own test suite real fault fixtures.

Each test runs a small user test suite (the example of docs/resilience.md) in a fresh pytest
process (``pytester``): the fixtures come from the installed package's ``pytest11`` entry
point, nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "resilience.md"
pytestmark = pytest.mark.slow


def user_tests() -> str:
    """The example suite of docs/resilience.md, "Testing your own service"."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Testing your own service") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_fixtures_run_a_users_fault_test(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    redis_binary: str,
    toxiproxy_binary: str,
) -> None:
    monkeypatch.setenv("RESILIENT_CACHE_REDIS_SERVER", redis_binary)
    monkeypatch.setenv("RESILIENT_CACHE_TOXIPROXY_SERVER", toxiproxy_binary)
    pytester.makepyfile(test_service=user_tests())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=3)


def test_a_missing_server_fails_under_ci_and_skips_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENT_CACHE_REDIS_SERVER", "")
    monkeypatch.setenv("PATH", str(pytester.path))  # no redis-server to be found
    pytester.makepyfile(test_service="def test_needs_redis(redis_server):\n    pass\n")
    monkeypatch.setenv("CI", "true")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(errors=1)
    monkeypatch.setenv("CI", "")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=1)

"""The Result type: pattern matching, helpers, typing."""

from __future__ import annotations

import dataclasses

import pytest

from resilient_cache import CacheError, ErrorCode, Failure, Result, Success, UnwrapError


def lookup(found: bool) -> Result[str | None, CacheError]:
    if found:
        return Success("value")
    return Failure(CacheError.of(ErrorCode.TIMEOUT, "slow", operation="get", key="k"))


def describe(result: Result[str | None, CacheError]) -> str:
    match result:
        case Success(None):
            return "miss"
        case Success(value):
            return f"hit {value}"
        case Failure(error):
            return f"error {error.code}"
    raise AssertionError("unreachable")  # pragma: no cover


def test_match_on_success_and_failure() -> None:
    assert describe(lookup(True)) == "hit value"
    assert describe(Success(None)) == "miss"
    assert describe(lookup(False)) == "error timeout"


def test_helpers() -> None:
    ok, bad = lookup(True), lookup(False)
    assert ok.is_success()
    assert not ok.is_failure()
    assert bad.is_failure()
    assert not bad.is_success()
    assert ok.unwrap_or("fallback") == "value"
    assert bad.unwrap_or("fallback") == "fallback"
    assert ok.map(lambda v: (v or "").upper()) == Success("VALUE")
    assert bad.map(lambda v: v) is bad
    assert ok.unwrap() == "value"
    with pytest.raises(UnwrapError) as info:
        bad.unwrap()
    assert isinstance(info.value.error, CacheError)


def test_results_are_frozen_slotted_values() -> None:
    ok = Success(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.value = 2  # type: ignore[misc]
    assert not hasattr(ok, "__dict__")
    assert Success(1) == Success(1)
    success: object = Success(1)
    assert success != Failure(1)
    assert hash(Success(1)) == hash(Success(1))

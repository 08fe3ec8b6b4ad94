"""CacheError: the code table drives retryable / trips_breaker."""

from __future__ import annotations

import pytest

from resilient_cache import CacheError, ConfigurationError, ErrorCode, Limits

RETRYABLE = {ErrorCode.CONNECTION, ErrorCode.TIMEOUT, ErrorCode.READONLY}
TRIPS = {ErrorCode.CONNECTION, ErrorCode.TIMEOUT, ErrorCode.TLS}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_flags_follow_the_code_table(code: ErrorCode) -> None:
    error = CacheError.of(code, "m", operation="get", key="k")
    assert error.retryable is (code in RETRYABLE)
    assert error.trips_breaker is (code in TRIPS)
    assert str(error) == f"get: {code.value}: m"


def test_codes_are_lower_case_names() -> None:
    assert {c.value for c in ErrorCode} == {c.name.lower() for c in ErrorCode}


@pytest.mark.parametrize("operation", ["increment", "decrement"])
def test_non_idempotent_operations_are_not_retryable_once_maybe_applied(operation: str) -> None:
    sent = CacheError.of(ErrorCode.TIMEOUT, "m", operation=operation, maybe_applied=True)
    not_sent = CacheError.of(ErrorCode.CONNECTION, "m", operation=operation)
    assert not sent.retryable
    assert not_sent.retryable
    assert CacheError.of(ErrorCode.TIMEOUT, "m", operation="set", maybe_applied=True).retryable


def test_details_are_read_only_and_cause_is_not_compared() -> None:
    error = CacheError.of(
        ErrorCode.VALIDATION, "m", operation="set", details={"limit": 3}, cause=ValueError()
    )
    with pytest.raises(TypeError):
        error.details["limit"] = 4  # type: ignore[index]
    assert error == CacheError.of(ErrorCode.VALIDATION, "m", operation="set", details={"limit": 3})
    assert "cause" not in repr(error)


@pytest.mark.parametrize("field", ["max_key_bytes", "max_value_bytes"])
@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_limits_reject_nonsense(field: str, bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        Limits(**{field: bad})  # type: ignore[arg-type]
    assert info.value.setting == field

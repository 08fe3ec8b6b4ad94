"""adapters/_errors.py: how a redis-py exception becomes a CacheError, for both adapters.

The exceptions are built here as redis-py raises them (its cluster client wraps the
command's own error); the real-server behaviour is in test_redis_adapter.py and
test_cluster.py.
"""

from __future__ import annotations

import pytest
from redis import exceptions as rx

from resilient_cache import ErrorCode
from resilient_cache.adapters._errors import not_sent, to_error


def unreachable_after(cause: BaseException) -> rx.RedisClusterUnreachableError:
    """What redis-py raises when the topology refresh after ``cause`` reached no node."""
    try:
        try:
            raise cause
        except type(cause) as inner:
            raise rx.RedisClusterUnreachableError("Cluster is unreachable") from inner
    except rx.RedisClusterUnreachableError as outer:
        return outer


@pytest.mark.parametrize(
    "cause",
    [
        rx.TimeoutError("Timeout reading from 127.0.0.1:7000"),
        rx.ConnectionError("Connection closed by server."),
    ],
    ids=["timeout", "closed"],
)
def test_a_cluster_error_wrapping_an_error_after_sending_may_have_applied(
    cause: BaseException,
) -> None:
    """An INCRBY sent, then its connection lost, then a failed refresh: redis-py raises
    RedisClusterUnreachableError from the command's own error. The increment may have been
    applied: never 'not applied, retryable' (a retry would count twice)."""
    exc = unreachable_after(cause)
    assert not not_sent(exc)
    error = to_error("increment", "n", exc, may_have_left=True, server="s", secrets=(), timeout=0.5)
    assert error.code is ErrorCode.CONNECTION
    assert error.maybe_applied
    assert not error.retryable


def test_a_cluster_error_before_sending_is_not_applied() -> None:
    for exc in (
        rx.RedisClusterUnreachableError("no seed answered"),
        unreachable_after(rx.ConnectionError("Error 111 connecting to 127.0.0.1:7000.")),
        rx.SlotNotCoveredError("slot 42 is not covered"),
    ):
        assert not_sent(exc), exc
        error = to_error(
            "increment", "n", exc, may_have_left=True, server="s", secrets=(), timeout=0.5
        )
        assert not error.maybe_applied and error.retryable, exc

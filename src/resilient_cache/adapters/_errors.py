"""How both Redis adapters turn a redis-py exception into a :class:`CacheError`.

One exception table, one rule for whether a failed command may have left the client, one
builder: :class:`~resilient_cache.RedisAdapter` and
:class:`~resilient_cache.RedisClusterAdapter` differ only in what they know about sending
(the standalone adapter takes its connection itself, so it knows whether it wrote the
command; redis-py's cluster client does not say, so :func:`not_sent` reads the exception).
What each code then means for retries, the breaker and ``maybe_applied`` is the domain's
policy table (:data:`resilient_cache.domain.errors.POLICY`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Final

from redis import exceptions as rx

from resilient_cache.adapters._pool import PoolClosedError
from resilient_cache.adapters._tls import tls_failure
from resilient_cache.domain.errors import CacheError, ErrorCode

MAX_MESSAGE: Final = 300
"""Longest error message kept (a server's message can be long)."""


class PoolTimeoutError(Exception):
    """Every pooled connection stayed busy for ``pool_timeout``."""


# Most specific first. Cluster errors (which only a cluster client raises) before the rest:
# ClusterDownError is a ResponseError, MaxConnectionsError a ConnectionError. Then:
# AuthenticationError is a ConnectionError, ReadOnlyError a ResponseError, redis' TimeoutError
# is not the builtin one.
EXCEPTION_TABLE: Final[tuple[tuple[type[BaseException], ErrorCode], ...]] = (
    (rx.ClusterDownError, ErrorCode.CONNECTION),  # CLUSTERDOWN, MASTERDOWN: unavailable
    (rx.SlotNotCoveredError, ErrorCode.CONNECTION),  # no node serves the slot (yet)
    (rx.ClusterCrossSlotError, ErrorCode.VALIDATION),  # CROSSSLOT: never works on a cluster
    (rx.CrossSlotTransactionError, ErrorCode.VALIDATION),
    (rx.AuthenticationError, ErrorCode.AUTH),
    (rx.AuthorizationError, ErrorCode.AUTH),
    (rx.NoPermissionError, ErrorCode.AUTH),
    (rx.AuthenticationWrongNumberOfArgsError, ErrorCode.AUTH),
    (rx.ConnectionError, ErrorCode.CONNECTION),  # incl. LOADING
    (PoolClosedError, ErrorCode.CONNECTION),
    (PoolTimeoutError, ErrorCode.CONNECTION),
    (rx.TimeoutError, ErrorCode.TIMEOUT),
    (TimeoutError, ErrorCode.TIMEOUT),  # operation_timeout (the adapter's own deadline)
    (rx.ReadOnlyError, ErrorCode.READONLY),
    (rx.OutOfMemoryError, ErrorCode.OUT_OF_MEMORY),
    (rx.ResponseError, ErrorCode.BACKEND),  # refined by RESPONSE_MARKERS
    (UnicodeDecodeError, ErrorCode.SERIALIZATION),  # a client with decode_responses=True
    (rx.RedisError, ErrorCode.BACKEND),  # InvalidResponse (protocol garbage) and the rest
    (OSError, ErrorCode.CONNECTION),
    (Exception, ErrorCode.BACKEND),  # a driver bug must not escape: fail open
)

# An error reply's code is its first word ("WRONGTYPE Operation against ..."). redis-py turns
# the codes it knows into the classes above (NOPERM is NoPermissionError, READONLY
# ReadOnlyError, ...) and leaves the others, and every code inside a script on Redis 6.2, as a
# plain ResponseError: the code read from the text, then.
REPLY_CODES: Final = {
    "WRONGTYPE": ErrorCode.WRONG_TYPE,
    "NOPERM": ErrorCode.AUTH,
    "NOAUTH": ErrorCode.AUTH,
    "WRONGPASS": ErrorCode.AUTH,
    "READONLY": ErrorCode.READONLY,
    "OOM": ErrorCode.OUT_OF_MEMORY,
}

# Redis 6.2 wraps an error inside a script: 'Error running script (call to f_<sha1>):
# @user_script:1: @user_script: 1: -OOM ...'; 7.0 and later keep the code in front and append
# ' script: <sha1>, on @user_script:1.'
_SCRIPT_WRAPPER: Final = re.compile(
    r"^Error running script \(call to f_[0-9a-f]+\): (?:@user_script:? ?\d+: )*-?"
)

# The wording, last: replies whose code is the generic ERR on every server.
RESPONSE_MARKERS: Final = (
    ("not an integer", ErrorCode.WRONG_TYPE),
    ("would overflow", ErrorCode.WRONG_TYPE),
    # the ACL, inside a script: Redis 6.2 and 7.0 / Redis 7.2 and Valkey
    ("The user executing the script can't", ErrorCode.AUTH),
    ("ACL failure in script", ErrorCode.AUTH),
)

# redis-py's Sentinel connections (a master_for() client) turn a READONLY reply into this
_DEMOTED_MASTER: Final = "The previous master is now a slave"

# Answers from a cluster saying "not here, not now" rather than "down": they do not trip
# the breaker (Redis answered), but a retry may well succeed.
_NO_NEWS: Final = (
    rx.TryAgainError,  # TRYAGAIN: a multi-key command on a slot being migrated
    rx.AskError,  # ASK/MOVED left over after 16 redirections
    rx.MaxConnectionsError,  # the client is saturated, not the server
)


def classify(exc: BaseException) -> tuple[ErrorCode, bool, BaseException]:
    """The error code of ``exc``, whether it may trip the breaker (``False`` overrides the
    code's policy; ``True`` keeps it), and the exception whose message tells what happened
    (redis-py wraps a refused ``CLUSTER SLOTS`` in a message saying "Cluster mode is not
    enabled")."""
    if isinstance(exc, _NO_NEWS) or (
        isinstance(exc, rx.ClusterError) and not isinstance(exc, rx.ClusterDownError)
    ):  # ClusterError("TTL exhausted."): a MOVED/TRYAGAIN storm
        return ErrorCode.CONNECTION, False, exc
    if isinstance(exc, rx.RedisClusterException) and not isinstance(exc, rx.SlotNotCoveredError):
        # client-side: no seed answered, or CLUSTER SLOTS refused, or a cross-slot command
        for inner in chain(exc):
            if inner is not exc and isinstance(inner, rx.RedisError):
                code = _code_of(inner)
                if code is ErrorCode.AUTH:  # WRONGPASS, or NOPERM on CLUSTER SLOTS/COMMAND
                    return code, True, inner
        text = str(exc)
        if "same key slot" in text or "same slot" in text:
            return ErrorCode.VALIDATION, True, exc
        if "Cluster mode is not enabled" in text:  # a seed that is not a cluster node
            return ErrorCode.BACKEND, True, exc
        return ErrorCode.CONNECTION, True, exc
    code = _code_of(exc)
    if code is ErrorCode.BACKEND and isinstance(exc, rx.ResponseError):
        text = str(exc)
        code = REPLY_CODES.get(reply_code(text)) or next(
            (c for marker, c in RESPONSE_MARKERS if marker in text), code
        )
    elif code is ErrorCode.CONNECTION and str(exc) == _DEMOTED_MASTER:
        code = ErrorCode.READONLY  # a failover, not an outage: do not trip the breaker
    return code, True, exc


def reply_code(text: str) -> str:
    """The code of an error reply as redis-py hands it over (it strips a leading ``ERR``):
    its first word when that is one in capitals, inside a script too; else ``ERR``."""
    word = _SCRIPT_WRAPPER.sub("", text, count=1).split(" ", 1)[0]
    return word if word.isalpha() and word.isupper() else "ERR"


def _code_of(exc: BaseException) -> ErrorCode:
    return next(code for kind, code in EXCEPTION_TABLE if isinstance(exc, kind))


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (cause, else context), at most 8."""
    node: BaseException | None = exc
    for _ in range(8):
        if node is None:
            return
        yield node
        node = node.__cause__ or node.__context__


def not_sent(exc: BaseException) -> bool:
    """Whether ``exc`` surely struck before the command could leave the client.

    A client-side cluster error (no seed reachable, slot not covered) that does not wrap
    the command's own failure, a full connection pool, or a failure to connect (redis-py
    says "connecting to"). Anything else, a deadline included, may have happened after the
    command was written.
    """
    if isinstance(exc, rx.RedisClusterException):
        # client-side, unless it wraps the command's own failure: after a connection error
        # redis-py refreshes the topology and, if that reaches no node, raises
        # RedisClusterUnreachableError from the command's error, sent or not
        inner = next(
            (e for e in chain(exc) if isinstance(e, rx.ConnectionError | rx.TimeoutError)), None
        )
        return inner is None or not_sent(inner)
    if isinstance(exc, rx.MaxConnectionsError):
        return True
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
        text = str(exc)
        return "connecting to" in text or "Timeout connecting to server" in text
    return False


def to_error(
    operation: str,
    key: str | None,
    exc: BaseException,
    *,
    may_have_left: bool,
    server: str,
    secrets: tuple[str, ...],
    timeout: float,
) -> CacheError:
    """The :class:`CacheError` for ``exc``, the one rule of both adapters.

    Args:
        may_have_left: the command was a write and may have been handed to the network
            (the adapter's own knowledge; :func:`not_sent` may still rule it out).
        server: where it happened, for the message and ``details["server"]``.
        secrets: passwords to hide from the message.
        timeout: the adapter's ``operation_timeout``, for the message of its own deadline.
    """
    code, may_trip, telling = classify(exc)
    text = str(telling) or type(telling).__name__
    tls = tls_failure(exc)
    if tls is not None:
        code, text = ErrorCode.TLS, f"{tls} ({server})"
    for secret in secrets:
        text = text.replace(secret, "***")
    if isinstance(exc, TimeoutError):
        text = f"no answer within operation_timeout={timeout}s"
    error = CacheError.of(
        code,
        text[:MAX_MESSAGE],
        operation=operation,
        key=key,
        details={"server": server},
        # an error reply means the server refused the command: not applied
        maybe_applied=may_have_left
        and code.policy.after_send
        and not isinstance(exc, rx.ResponseError)
        and not not_sent(exc),
        cause=exc,
    )
    return error if may_trip else replace(error, trips_breaker=False)


def is_noscript(error: CacheError) -> bool:
    """Whether Redis answered NOSCRIPT: it does not know the script (nothing ran)."""
    return isinstance(error.cause, rx.NoScriptError)


def partial(error: CacheError, deleted: int) -> CacheError:
    """Note in a bulk delete's error how many keys were already deleted."""
    if not deleted:
        return error
    return CacheError.of(
        error.code,
        f"{error.message} (after deleting {deleted} keys)",
        operation=error.operation,
        key=error.key,
        details={**error.details, "deleted": deleted},
        maybe_applied=True,
        cause=error.cause,
    )

"""What went wrong, as a value: :class:`CacheError` and :class:`ErrorCode`.

A ``CacheError`` is never raised; it travels inside a :class:`~resilient_cache.Failure`.
Its ``code`` names WHAT went wrong; ``operation`` says where. Two flags, derived from the
code by :meth:`CacheError.of`, tell the resilience layers what to do:

==============  ==========================================  =========  =============
ErrorCode       typical cause                               retryable  trips breaker
==============  ==========================================  =========  =============
CONNECTION      refused, reset, DNS, no free connection     yes (1)    yes
TIMEOUT         socket timeout, call deadline exceeded      yes (1)    yes
CIRCUIT_OPEN    breaker open, or no half-open permit        no         no
READONLY        failover in progress (a replica answered)   yes        no
OUT_OF_MEMORY   OOM command not allowed (maxmemory)         no         no (2)
AUTH            NOAUTH, WRONGPASS, NOPERM                   no         no
TLS             handshake: untrusted or wrong certificate,  no         yes
                client certificate missing, TLS mismatch
WRONG_TYPE      WRONGTYPE, not an integer, int64 overflow   no         no
SERIALIZATION   JSON encode/decode, stored bytes not UTF-8  no         no
VALIDATION      bad key, ttl, amount, value size            no         no
BACKEND         any other server or protocol error          no         no
==============  ==========================================  =========  =============

(1) Only while it is safe: a non-idempotent operation (``increment``, ``decrement``,
    ``run_script``) whose command may already have reached the server (``maybe_applied``)
    is never retryable, or a retry could count twice.
(2) The breaker layer can be configured to count it.

``maybe_applied`` is the honest-writes flag: ``True`` when the command may have reached
the server before the failure (a timeout or a connection lost mid-call), so a write may or
may not have happened. A failure raised before any byte was sent (validation, no
connection could be made) has ``maybe_applied=False``: nothing was applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeAlias

DetailValue: TypeAlias = str | int | float | bool | None
"""Values allowed in :attr:`CacheError.details`: plain scalars, safe to log."""


class ErrorCode(StrEnum):
    """What went wrong. The value is the lower-case name, used as a metric label."""

    CONNECTION = "connection"
    TIMEOUT = "timeout"
    CIRCUIT_OPEN = "circuit_open"
    READONLY = "readonly"
    OUT_OF_MEMORY = "out_of_memory"
    AUTH = "auth"
    TLS = "tls"
    WRONG_TYPE = "wrong_type"
    SERIALIZATION = "serialization"
    VALIDATION = "validation"
    BACKEND = "backend"

    @property
    def policy(self) -> Policy:
        """How the library treats this code (its row of :data:`POLICY`)."""
        return POLICY[self]


@dataclass(frozen=True, slots=True)
class Policy:
    """How the library treats one :class:`ErrorCode`: one row of :data:`POLICY`.

    Every decision that depends on the kind of failure reads it here, so that a new code
    is one new row, not a hunt through the layers.

    Attributes:
        retryable: repeating the call may succeed (see ``maybe_applied`` for the limit).
        trips_breaker: a circuit breaker counts it as a failure.
        from_redis: when it does not trip the breaker, it is still word from Redis (the
            server answered): the breaker counts the call as a success. ``False``: no news
            about Redis either way (the caller's input, the breaker itself).
        after_send: it can strike after the command left the client, so a write may have
            happened (``maybe_applied``); an error reply never can (Redis refused it).
        caller_error: caused by the request, not by the cache's health: telemetry's
            outcome ``error`` rather than ``fallback``.
        cache_down: the cache is unavailable, not one entry at fault: work that goes
            through entries (an outbox replay) stops, as the rest would fail alike.
    """

    retryable: bool
    trips_breaker: bool
    from_redis: bool
    after_send: bool
    caller_error: bool
    cache_down: bool


_ = False
Y = True
# the table in the module docstring, as data; read by CacheError.of, the adapters, the
# breaker and metrics layers, and the invalidation outbox
POLICY: Final[Mapping[ErrorCode, Policy]] = MappingProxyType(
    {  #                   retryable  trips  from_redis  after_send  caller_error  cache_down
        ErrorCode.CONNECTION: Policy(Y, Y, Y, Y, _, Y),
        ErrorCode.TIMEOUT: Policy(Y, Y, Y, Y, _, Y),
        ErrorCode.CIRCUIT_OPEN: Policy(_, _, _, _, _, Y),
        ErrorCode.READONLY: Policy(Y, _, Y, _, _, Y),
        ErrorCode.OUT_OF_MEMORY: Policy(_, _, Y, _, _, Y),
        ErrorCode.AUTH: Policy(_, _, Y, _, _, _),
        ErrorCode.TLS: Policy(_, Y, Y, _, _, Y),
        ErrorCode.WRONG_TYPE: Policy(_, _, Y, _, Y, _),
        ErrorCode.SERIALIZATION: Policy(_, _, _, _, Y, _),
        ErrorCode.VALIDATION: Policy(_, _, _, _, Y, _),
        ErrorCode.BACKEND: Policy(_, _, Y, Y, _, _),
    }
)  # fmt: skip
del _, Y

NON_IDEMPOTENT_OPERATIONS: Final = frozenset({"increment", "decrement", "run_script"})
"""Operations that must not be repeated once their command may have reached Redis."""

_EMPTY: Final[Mapping[str, DetailValue]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheError:
    """Why a cache call failed. Build one with :meth:`CacheError.of`.

    Attributes:
        code: what went wrong.
        message: a sentence for people; never contains the value or a password.
        operation: the protocol method that failed (``"get"``, ``"set_many"``, ...).
        key: the key as the caller passed it (without namespace), or ``None``.
        details: extra scalar facts (e.g. ``{"limit": 1024}``), safe to log.
        retryable: whether repeating the call may succeed and is safe.
        trips_breaker: whether a circuit breaker should count this failure.
        maybe_applied: whether a write may have taken effect despite the failure.
        cause: the original exception, for debugging; not part of equality.
    """

    code: ErrorCode
    message: str
    operation: str
    key: str | None = None
    details: Mapping[str, DetailValue] = field(default_factory=lambda: _EMPTY, hash=False)
    retryable: bool = False
    trips_breaker: bool = False
    maybe_applied: bool = False
    cause: BaseException | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        code: ErrorCode,
        message: str,
        *,
        operation: str,
        key: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
        maybe_applied: bool = False,
        cause: BaseException | None = None,
    ) -> CacheError:
        """Build an error whose ``retryable``/``trips_breaker`` follow the code table."""
        policy = POLICY[code]
        retryable, trips_breaker = policy.retryable, policy.trips_breaker
        if maybe_applied and operation in NON_IDEMPOTENT_OPERATIONS:
            retryable = False
        return cls(
            code=code,
            message=message,
            operation=operation,
            key=key if isinstance(key, str) else None,  # a bad key of another type: None
            details=MappingProxyType(dict(details)) if details else _EMPTY,
            retryable=retryable,
            trips_breaker=trips_breaker,
            maybe_applied=maybe_applied,
            cause=cause,
        )

    def __str__(self) -> str:
        return f"{self.operation}: {self.code.value}: {self.message}"


class ConfigurationError(ValueError):
    """Raised at start-up for a bad setting; the message names the setting.

    This is the one error the library raises: a misconfiguration is a programmer error
    that must stop the application from starting, not a runtime fault to fail open on.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting

"""RateLimiter: fixed- and sliding-window limits, ONE atomic round trip per check.

Each check is one server-side script (:mod:`resilient_cache.domain.scripts`): Redis counts,
expires and answers in one step, so no crash, timeout or concurrent client can come between
the increment and the expiry (the common hand-written ``INCR`` then ``EXPIRE`` leaves a
key without expiry when the process dies in between: that client is then limited forever).
The key gets its TTL in the same script, after every check.

Two algorithms:

* **fixed window** (default): a counter per key; the window starts with the key's first
  request and ends when the key expires (windows are per key, not aligned to the clock).
  Up to ``limit`` requests per window; a burst of ``2 * limit`` can straddle the boundary.
  Memory: one small string per active key. Needs no clock: the window is the key's TTL.
* **sliding window** (``sliding=True``): a log of the requests allowed in the last
  ``window`` seconds, in a sorted set (score: the time in microseconds). Exact: never more
  than ``limit`` in ANY window of that length. Memory: one sorted-set entry per request
  counted (rejected requests are not logged), about 20 bytes while the set is small (a
  listpack, up to 128 entries), about 80 beyond; a limit of 1,000 per window costs ~80 KB
  per busy key. For very large limits use the fixed window.

**Time** comes from Redis (``TIME``) inside the sliding-window script: one clock for every
process and host, so clients with skewed clocks agree. Redis 7 replicates a script's
effects, not the script, so a replica gets the ``ZADD`` with the computed score. MemoryCache
runs the same logic in Python on its own (injectable) clock.

**When the cache fails** (down, slow, breaker open, any ``Failure``), the check is decided
without it and says so (``error`` is set, ``degraded`` is true): fail-open (the default)
allows the request, fail-closed refuses it (see :class:`RateLimit`).
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.result import Failure
from resilient_cache.domain.scripts import (
    OPERATION,
    CacheScript,
    ErrorReply,
    ScriptArg,
    ScriptReply,
    ScriptRunner,
    ScriptStore,
)
from resilient_cache.domain.validation import MAX_TTL_SECONDS
from resilient_cache.layers.base import Layer

__all__ = ["FIXED_WINDOW", "SLIDING_WINDOW", "RateLimit", "RateLimiter"]

_MICROS: Final = 1_000_000
_DEGRADED_RETRY_AFTER: Final = 1.0
"""Seconds a fail-closed refusal asks to wait (or the window, if shorter), unless the
circuit breaker says when it probes Redis again."""

# Replies of both scripts: {allowed (1/0), remaining, retry after in microseconds}.

_FIXED_LUA: Final = """\
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local count = redis.call('INCRBY', KEYS[1], 0)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], window_ms)
  ttl = window_ms
end
if count >= limit then
  return {0, 0, ttl * 1000}
end
count = redis.call('INCRBY', KEYS[1], 1)
return {1, limit - count, 0}
"""

_SLIDING_LUA: Final = """\
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local ttl_ms = math.ceil(window / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  return {0, 0, tonumber(oldest[2]) + window - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return {1, limit - count - 1, 0}
"""

_INTEGER: Final = re.compile(r"0|-?[1-9][0-9]{0,18}")
_LOG: Final = "log:"  # MemoryCache's stand-in for a sorted set: "log:<t1> <t2> ..."
_WRONG_TYPE: Final = ErrorReply(
    ErrorCode.WRONG_TYPE, "WRONGTYPE Operation against a key holding the wrong kind of value"
)


def _fixed_window(
    store: ScriptStore, keys: Sequence[str], args: Sequence[str]
) -> ScriptReply | ErrorReply:
    """The fixed-window script, in Python (MemoryCache)."""
    key, limit, window_ms = keys[0], int(args[0]), int(args[1])
    raw = store.get(key)
    if raw is None:
        store.put(key, "0")
    elif not _INTEGER.fullmatch(raw):
        return ErrorReply(ErrorCode.WRONG_TYPE, "value is not an integer or out of range")
    count = int(raw or 0)
    ttl = store.pttl(key)
    if ttl < 0:
        store.pexpire(key, window_ms)
        ttl = window_ms
    if count >= limit:
        return [0, 0, ttl * 1000]
    store.put(key, str(count + 1))
    return [1, limit - count - 1, 0]


def _sliding_window(
    store: ScriptStore, keys: Sequence[str], args: Sequence[str]
) -> ScriptReply | ErrorReply:
    """The sliding-window script, in Python (MemoryCache); the log is a string there."""
    key, limit, window = keys[0], int(args[0]), int(args[1])
    now = round(store.now() * _MICROS)
    raw = store.get(key)
    if raw is not None and not raw.startswith(_LOG):
        return _WRONG_TYPE
    log = [int(stamp) for stamp in raw[len(_LOG) :].split()] if raw else []
    log = [stamp for stamp in log if stamp > now - window]
    allowed = len(log) < limit
    if allowed:
        log.append(now)
    store.put(key, _LOG + " ".join(map(str, log)))
    store.pexpire(key, math.ceil(window / 1000))
    if allowed:
        return [1, limit - len(log), 0]
    return [0, 0, log[0] + window - now]


FIXED_WINDOW: Final = CacheScript(
    name="fixed_window", source=_FIXED_LUA, keys=1, twin=_fixed_window
)
"""The fixed-window check: ``KEYS[1]``; ``ARGV``: limit, window in milliseconds."""

SLIDING_WINDOW: Final = CacheScript(
    name="sliding_window", source=_SLIDING_LUA, keys=1, twin=_sliding_window
)
"""The sliding-window check: ``KEYS[1]``; ``ARGV``: limit, window in microseconds, a
unique member for this request."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The answer to one check.

    Attributes:
        allowed: whether the request may proceed (if so and Redis decided, it was
            counted).
        limit: requests allowed per window (the limiter's setting).
        remaining: requests still allowed in the window after this one; 0 when refused.
        retry_after: seconds until a request can be allowed again; 0.0 when allowed (for
            a ``Retry-After`` header, round it up).
        error: why the cache could not decide, or ``None``. When set, the check was
            decided without Redis: fail-open answers ``allowed=True, remaining=limit,
            retry_after=0.0``; fail-closed answers ``allowed=False, remaining=0`` and a
            ``retry_after`` of the breaker's time to its next probe when it is open, else
            1 s (or the window, if shorter). ``remaining`` is then not a count: whether
            this request was counted depends on ``error.maybe_applied``: ``False`` (refused
            before sending, breaker open...) means it was not; ``True`` (a timeout after the
            script was sent) means Redis may have counted it, though it was decided without
            Redis's answer.
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    error: CacheError | None = None

    @property
    def degraded(self) -> bool:
        """Whether the check was decided without the cache (``error`` is set)."""
        return self.error is not None


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per key, checked in one round trip.

    >>> limiter = RateLimiter(cache, limit=100, window=60)  # doctest: +SKIP
    >>> decision = await limiter.check(cache_key("rate_limit", user_id, "search"))  # doctest: +SKIP

    Args:
        cache: RedisAdapter, MemoryCache, or a stack of layers over one of them (what
            :func:`~resilient_cache.build_cache` returns); keys are namespaced by it.
        limit: requests allowed per window, at least 1.
        window: the window, in seconds (fractions allowed, at least 1 ms).
        sliding: use the exact sliding window instead of the fixed one (see the module).
        fail_open: when the cache fails, allow (the default) or refuse the request.

    Raises:
        ConfigurationError: a bad ``limit`` or ``window``, or a cache that cannot run
            scripts (the setting is named).
    """

    def __init__(
        self,
        cache: ScriptRunner,
        *,
        limit: int,
        window: float,
        sliding: bool = False,
        fail_open: bool = True,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError("limit", f"must be an int >= 1, got {limit!r}")
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not 0.001 <= window <= MAX_TTL_SECONDS
        ):
            raise ConfigurationError(
                "window",
                f"must be a number of seconds from 0.001 to {MAX_TTL_SECONDS}, got {window!r}",
            )
        _check_runs_scripts(cache)
        self._cache = cache
        self._limit = limit
        self._window = float(window)
        self._sliding = sliding
        self._fail_open = fail_open
        if sliding:
            self._script, self._span = SLIDING_WINDOW, round(window * _MICROS)
        else:
            self._script, self._span = FIXED_WINDOW, round(window * 1000)
        self._member_prefix = secrets.token_hex(6)  # unique log entries across processes
        self._sequence = itertools.count()

    def __repr__(self) -> str:
        kind = "sliding" if self._sliding else "fixed"
        mode = "open" if self._fail_open else "closed"
        return f"RateLimiter(limit={self._limit}, window={self._window}, {kind}, fail-{mode})"

    @property
    def limit(self) -> int:
        """Requests allowed per window."""
        return self._limit

    @property
    def window(self) -> float:
        """The window, in seconds."""
        return self._window

    async def check(self, key: str) -> RateLimit:
        """Count one request under ``key`` if the limit allows it; never raises.

        ``key`` names what is limited, e.g. ``rate_limit:{user_id}:{endpoint}`` (build it
        with :func:`~resilient_cache.cache_key`). A bad key is a ``VALIDATION`` error,
        decided like any failure (fail-open or fail-closed), with ``error`` set.
        """
        args: list[ScriptArg] = [self._limit, self._span]
        if self._sliding:
            args.append(f"{self._member_prefix}:{next(self._sequence):x}")
        result = await self._cache.run_script(self._script, [key], args)
        if isinstance(result, Failure):
            return self._without_cache(result.error)
        match result.value:
            case [int() as allowed, int() as remaining, int() as wait]:
                if allowed:
                    return RateLimit(True, self._limit, max(0, remaining), 0.0)
                return RateLimit(False, self._limit, 0, max(wait, 1) / _MICROS)
        unexpected = CacheError.of(
            ErrorCode.BACKEND,
            f"unexpected reply from the {self._script.name} script",
            operation=OPERATION,
            key=key,
        )
        return self._without_cache(unexpected)

    def _without_cache(self, error: CacheError) -> RateLimit:
        """The decision when the cache could not make it: fail-open or fail-closed."""
        if self._fail_open:
            return RateLimit(True, self._limit, self._limit, 0.0, error)
        retry_in = error.details.get("retry_in")  # CIRCUIT_OPEN: the next probe
        if isinstance(retry_in, int | float) and not isinstance(retry_in, bool) and retry_in > 0:
            wait = float(retry_in)
        else:
            wait = min(self._window, _DEGRADED_RETRY_AFTER)
        return RateLimit(False, self._limit, 0, wait, error)


def _check_runs_scripts(cache: object) -> None:
    """Raise unless the backend under ``cache``'s layers can run scripts."""
    backend = cache
    while isinstance(backend, Layer):
        backend = backend.inner
    if not isinstance(cache, ScriptRunner) or not isinstance(backend, ScriptRunner):
        raise ConfigurationError(
            "cache",
            f"{type(backend).__name__} cannot run scripts; use RedisAdapter, MemoryCache or "
            "the stack build_cache() returns",
        )

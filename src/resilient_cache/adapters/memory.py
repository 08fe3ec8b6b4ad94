"""MemoryCache: a real in-process :class:`CacheProtocol`, and the fake for unit tests.

It honours the same contract as :class:`~resilient_cache.RedisAdapter` (the contract suite
runs against both, and a property test checks they agree): the same validation, Redis's
integer rules for ``increment``, Redis's glob language for ``delete_pattern``, TTLs read
from an injectable monotonic clock, and an optional LRU bound on the number of entries.
``run_script`` runs a script's Python twin (:mod:`resilient_cache.domain.scripts`).

Every method completes without awaiting, so each one is atomic under asyncio.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Self

from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.glob import glob_match
from resilient_cache.domain.protocol import CacheEntry, JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.scripts import (
    OPERATION,
    CacheScript,
    ErrorReply,
    ScriptArg,
    ScriptReply,
    check_script_call,
)
from resilient_cache.domain.validation import (
    DEFAULT_LIMITS,
    INT64_MAX,
    INT64_MIN,
    Limits,
    check_amount,
    check_namespace,
    check_pattern,
    check_seconds,
    check_ttl,
    dump_json,
    encode_key,
    encode_keys,
    encode_mapping,
    encode_value,
    load_json,
)

# Redis's string2ll: optional '-', no '+', no spaces, no leading zeros, "-0" refused.
_REDIS_INT = re.compile(r"0|-?[1-9][0-9]{0,19}")


class MemoryCache:
    """An in-process cache with Redis semantics.

    Args:
        namespace: confine keys to ``"<namespace>:"``, invisibly to callers; each
            instance has its own store, :meth:`namespaced` makes views sharing one.
        clock: a monotonic clock in seconds (default ``time.monotonic``); inject a fake
            one to test expiry without sleeping.
        max_entries: when set, the least recently used entry is evicted beyond it.
        limits: key and value size limits (see :class:`~resilient_cache.Limits`).
    """

    def __init__(
        self,
        *,
        namespace: str | None = None,
        clock: Callable[[], float] | None = None,
        max_entries: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        if max_entries is not None and (
            isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
        ):
            raise ConfigurationError(
                "max_entries", f"must be a positive int or None, got {max_entries!r}"
            )
        check_namespace(namespace)
        self._namespace = namespace
        self._prefix = f"{namespace}:" if namespace else ""
        self._clock = clock or time.monotonic
        self._max_entries = max_entries
        self._limits = limits or DEFAULT_LIMITS
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()

    def __repr__(self) -> str:
        return f"MemoryCache(namespace={self._namespace!r}, entries={len(self._data)})"

    async def aclose(self) -> None:
        """Nothing to release; here so that MemoryCache stands wherever RedisAdapter does."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def namespace(self) -> str | None:
        """The namespace every key is stored under, invisibly to callers (``None``: none)."""
        return self._namespace

    @property
    def limits(self) -> Limits:
        """The key and value size limits this cache checks before sending anything."""
        return self._limits

    def namespaced(self, namespace: str) -> MemoryCache:
        """Return a view of the same store confined to ``namespace``.

        Like two ``RedisAdapter`` objects with different namespaces on one database: each
        sees only its own keys, and the LRU bound counts the entries of all views.
        """
        view = MemoryCache(
            namespace=namespace,
            clock=self._clock,
            max_entries=self._max_entries,
            limits=self._limits,
        )
        view._data = self._data
        return view

    # -- internals ---------------------------------------------------------------

    def _live(self, full_key: str) -> CacheEntry | None:
        entry = self._data.get(full_key)
        if entry is None:
            return None
        expires_at = entry["expires_at"]
        if expires_at is not None and expires_at <= self._clock():
            del self._data[full_key]
            return None
        self._data.move_to_end(full_key)
        return entry

    def _store(self, full_key: str, value: str, ttl: int | None) -> None:
        now = self._clock()
        self._data[full_key] = CacheEntry(
            key=full_key,
            value=value,
            ttl=ttl,
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
        )
        self._data.move_to_end(full_key)
        if self._max_entries is not None:
            while len(self._data) > self._max_entries:
                self._data.popitem(last=False)

    def _key(self, operation: str, key: str) -> str | CacheError:
        raw = encode_key(operation, key, self._limits)
        return raw if isinstance(raw, CacheError) else self._prefix + key

    # -- CacheProtocol -----------------------------------------------------------

    async def get(self, key: str) -> Result[str | None, CacheError]:
        """Return the value, or ``Success(None)`` when the key is missing."""
        full = self._key("get", key)
        if isinstance(full, CacheError):
            return Failure(full)
        entry = self._live(full)
        return Success(None if entry is None else entry["value"])

    async def get_json(self, key: str) -> Result[JsonValue, CacheError]:
        """Return the decoded JSON value, ``Success(None)`` when missing."""
        full = self._key("get_json", key)
        if isinstance(full, CacheError):
            return Failure(full)
        entry = self._live(full)
        if entry is None:
            return Success(None)
        return load_json("get_json", key, entry["value"])

    async def set(self, key: str, value: str, ttl: int | None = None) -> Result[None, CacheError]:
        """Store ``value``, replacing any TTL with ``ttl`` (``None`` = no expiry)."""
        return self._set("set", key, value, ttl)

    async def set_json(
        self, key: str, value: JsonInput, ttl: int | None = None
    ) -> Result[None, CacheError]:
        """Store any JSON value."""
        text = dump_json("set_json", key, value)
        if isinstance(text, CacheError):
            return Failure(text)
        return self._set("set_json", key, text, ttl)

    def _set(self, operation: str, key: str, value: str, ttl: object) -> Result[None, CacheError]:
        full = self._key(operation, key)
        if isinstance(full, CacheError):
            return Failure(full)
        raw = encode_value(operation, key, value, self._limits)
        if isinstance(raw, CacheError):
            return Failure(raw)
        seconds = check_ttl(operation, key, ttl)
        if isinstance(seconds, CacheError):
            return Failure(seconds)
        self._store(full, value, seconds)
        return Success(None)

    async def delete(self, key: str) -> Result[bool, CacheError]:
        """Remove the key; tell whether it existed."""
        full = self._key("delete", key)
        if isinstance(full, CacheError):
            return Failure(full)
        existed = self._live(full) is not None
        self._data.pop(full, None)
        return Success(existed)

    async def exists(self, key: str) -> Result[bool, CacheError]:
        """Tell whether the key exists."""
        full = self._key("exists", key)
        if isinstance(full, CacheError):
            return Failure(full)
        return Success(self._live(full) is not None)

    async def expire(self, key: str, seconds: int) -> Result[bool, CacheError]:
        """Set a TTL on an existing key."""
        full = self._key("expire", key)
        if isinstance(full, CacheError):
            return Failure(full)
        checked = check_seconds("expire", key, seconds, name="seconds")
        if isinstance(checked, CacheError):
            return Failure(checked)
        entry = self._live(full)
        if entry is None:
            return Success(False)
        entry["ttl"] = checked
        entry["expires_at"] = self._clock() + checked
        return Success(True)

    async def increment(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Add ``amount`` atomically; a missing key counts as 0."""
        return self._add("increment", key, amount, 1)

    async def decrement(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Subtract ``amount`` atomically; a missing key counts as 0."""
        return self._add("decrement", key, amount, -1)

    def _add(self, operation: str, key: str, amount: object, sign: int) -> Result[int, CacheError]:
        full = self._key(operation, key)
        if isinstance(full, CacheError):
            return Failure(full)
        checked = check_amount(operation, key, amount)
        if isinstance(checked, CacheError):
            return Failure(checked)
        entry = self._live(full)
        current = 0
        if entry is not None:
            if not _REDIS_INT.fullmatch(entry["value"]) or not (
                INT64_MIN <= int(entry["value"]) <= INT64_MAX
            ):
                return Failure(
                    CacheError.of(
                        ErrorCode.WRONG_TYPE,
                        "value is not an integer or out of range",
                        operation=operation,
                        key=key,
                    )
                )
            current = int(entry["value"])
        new = current + sign * checked
        if not INT64_MIN <= new <= INT64_MAX:
            return Failure(
                CacheError.of(
                    ErrorCode.WRONG_TYPE,
                    "increment or decrement would overflow",
                    operation=operation,
                    key=key,
                )
            )
        if entry is None:
            self._store(full, str(new), None)
        else:
            entry["value"] = str(new)  # like INCRBY, keeps the key's TTL
        return Success(new)

    async def ttl(self, key: str) -> Result[int | None, CacheError]:
        """Seconds until expiry, rounded up; ``None`` if missing or persistent."""
        full = self._key("ttl", key)
        if isinstance(full, CacheError):
            return Failure(full)
        entry = self._live(full)
        if entry is None or entry["expires_at"] is None:
            return Success(None)
        return Success(max(1, math.ceil(entry["expires_at"] - self._clock())))

    async def flush(self) -> Result[None, CacheError]:
        """Remove this namespace's keys (or every key without a namespace)."""
        if self._prefix:
            for full in [k for k in self._data if k.startswith(self._prefix)]:
                del self._data[full]
        else:
            self._data.clear()
        return Success(None)

    async def ping(self) -> Result[bool, CacheError]:
        """Always ``Success(True)``."""
        return Success(True)

    async def delete_pattern(self, pattern: str) -> Result[int, CacheError]:
        """Delete the keys matching a Redis glob pattern, within the namespace."""
        raw = check_pattern("delete_pattern", pattern)
        if isinstance(raw, CacheError):
            return Failure(raw)
        prefix = self._prefix
        try:
            doomed = [
                full
                for full in list(self._data)
                if full.startswith(prefix)
                and self._live(full) is not None
                and glob_match(raw, full[len(prefix) :].encode())
            ]
        except RecursionError:  # thousands of '*' against a long key: the matcher recurses
            return Failure(
                CacheError.of(
                    ErrorCode.VALIDATION,
                    "pattern too complex to match (too many '*')",
                    operation="delete_pattern",
                )
            )
        for full in doomed:
            del self._data[full]
        return Success(len(doomed))

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """Return every requested key, ``None`` for the missing ones."""
        encoded = encode_keys("get_many", keys, self._limits)
        if isinstance(encoded, CacheError):
            return Failure(encoded)
        found: dict[str, str | None] = {}
        for key, _ in encoded:
            entry = self._live(self._prefix + key)
            found[key] = None if entry is None else entry["value"]
        return Success(found)

    async def set_many(
        self, mapping: dict[str, str], ttl: int | None = None
    ) -> Result[None, CacheError]:
        """Store every pair, all or nothing, each with ``ttl``."""
        rows = encode_mapping("set_many", mapping, self._limits)
        if isinstance(rows, CacheError):
            return Failure(rows)
        seconds = check_ttl("set_many", None, ttl)
        if isinstance(seconds, CacheError):
            return Failure(seconds)
        for key, _, value, _ in rows:
            self._store(self._prefix + key, value, seconds)
        return Success(None)

    # -- the script capability (resilient_cache.domain.scripts) -----------------------

    async def run_script(
        self, script: CacheScript, keys: Sequence[str], args: Sequence[ScriptArg] = ()
    ) -> Result[ScriptReply, CacheError]:
        """Run the script's Python twin on this store, atomically (nothing awaits).

        The twin sees the full keys (namespace included), the arguments as strings (as
        ``ARGV`` in Lua), and this cache's clock and TTLs.
        """
        checked = check_script_call(script, keys, args, self._limits)
        if isinstance(checked, CacheError):
            return Failure(checked)
        encoded, arguments = checked
        key = encoded[0][0] if encoded else None
        full = [self._prefix + name for name, _ in encoded]
        try:
            reply = script.twin(_ScriptStore(self), full, [str(arg) for arg in arguments])
        except Exception as exc:  # like a Lua runtime error: an error reply, writes kept
            return Failure(
                CacheError.of(
                    ErrorCode.BACKEND,
                    f"script {script.name!r} failed: {type(exc).__name__}",
                    operation=OPERATION,
                    key=key,
                    maybe_applied=True,
                    cause=exc,
                )
            )
        if isinstance(reply, ErrorReply):  # raised inside the script: writes before it stay
            return Failure(
                CacheError.of(
                    reply.code, reply.message, operation=OPERATION, key=key, maybe_applied=True
                )
            )
        return Success(reply)


class _ScriptStore:
    """A :class:`~resilient_cache.domain.scripts.ScriptStore` on a MemoryCache's entries."""

    __slots__ = ("_cache",)

    def __init__(self, cache: MemoryCache) -> None:
        self._cache = cache

    def now(self) -> float:
        return self._cache._clock()

    def get(self, key: str) -> str | None:
        entry = self._cache._live(key)
        return None if entry is None else entry["value"]

    def put(self, key: str, value: str) -> None:
        entry = self._cache._live(key)
        if entry is None:
            self._cache._store(key, value, None)
        else:
            entry["value"] = value

    def pttl(self, key: str) -> int:
        entry = self._cache._live(key)
        if entry is None:
            return -2
        expires_at = entry["expires_at"]
        if expires_at is None:
            return -1
        return max(0, math.ceil((expires_at - self._cache._clock()) * 1000))

    def pexpire(self, key: str, milliseconds: int) -> None:
        entry = self._cache._live(key)
        if entry is not None:
            entry["ttl"] = max(1, math.ceil(milliseconds / 1000))
            entry["expires_at"] = self._cache._clock() + milliseconds / 1000

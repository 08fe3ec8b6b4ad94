"""Server-side scripts: several commands on a few keys as ONE atomic round trip.

:class:`~resilient_cache.CacheProtocol` has no ``eval``, and stays so. Running a script is a
separate capability, :class:`ScriptRunner`, with one method, ``run_script``:

* :class:`~resilient_cache.RedisAdapter` sends ``EVALSHA <sha1>``, and ``EVAL <source>``
  when Redis answers ``NOSCRIPT`` (it restarted, failed over, or ran ``SCRIPT FLUSH``); the
  keys are namespaced like every key; errors map through the adapter's table.
* :class:`~resilient_cache.MemoryCache` runs the script's Python twin on its own store,
  with its own clock and TTLs, so that unit tests and in-process users get the same answers.
* every :class:`~resilient_cache.Layer` routes it through ``_around`` as the operation
  ``"run_script"``, so the deadline, the breaker, retries and telemetry apply to it. It is
  a non-idempotent write: once it may have reached Redis it is never retried (it could
  count twice), like ``increment``.

A script touches only the keys passed to it (``KEYS``): Redis checks them, and every
command the script runs, against the user's ACL, so the least-privilege ACL's key pattern
``~<namespace>:*`` still confines it (docs/security.md). A script must not build key names
of its own.

A :class:`CacheScript` carries both halves, side by side where it is defined::

    COUNT = CacheScript(
        name="count",
        source="return redis.call('INCRBY', KEYS[1], ARGV[1])",
        keys=1,
        twin=count_in_python,  # (store, keys, args) -> reply
    )
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.result import Result
from resilient_cache.domain.validation import Limits, encode_keys, invalid

ScriptReply: TypeAlias = int | str | list["ScriptReply"] | None
"""A script's answer: Redis's integer, bulk string (decoded as UTF-8), nil, or an array."""

ScriptArg: TypeAlias = str | int
"""An argument (``ARGV``); a script receives every argument as a string."""

OPERATION = "run_script"
"""The operation name of a script run, in errors, metrics, logs and spans."""


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """What a Python twin returns where its Lua script would fail with an error reply."""

    code: ErrorCode
    message: str


class ScriptStore(Protocol):
    """The few Redis commands a Python twin may use, on the store of a MemoryCache.

    Keys are the full keys the twin was given (namespace included); a twin touches no other.
    Values are strings, as in Redis; TTLs follow the store's clock.
    """

    def now(self) -> float:
        """The store's clock, in seconds (what ``TIME`` is to the Lua script)."""
        ...

    def get(self, key: str) -> str | None:
        """``GET``: the value, or ``None`` when the key is missing or expired."""
        ...

    def put(self, key: str, value: str) -> None:
        """Store ``value`` and keep the key's TTL, as ``INCRBY`` does (new keys: none)."""
        ...

    def pttl(self, key: str) -> int:
        """``PTTL``: milliseconds left, ``-1`` without expiry, ``-2`` when missing."""
        ...

    def pexpire(self, key: str, milliseconds: int) -> None:
        """``PEXPIRE``: expire the key (if it exists) that many milliseconds from now."""
        ...


Twin: TypeAlias = Callable[[ScriptStore, Sequence[str], Sequence[str]], ScriptReply | ErrorReply]
"""A script's Python twin: ``(store, keys, args) -> reply``, the same answers as the Lua."""


@dataclass(frozen=True, slots=True)
class CacheScript:
    """A server-side script: its Lua source for Redis and its Python twin for MemoryCache.

    Attributes:
        name: a short name for people (the operation is always ``"run_script"``).
        source: the Lua source; it must use only ``KEYS[1..keys]`` as key names.
        keys: how many keys each run takes (``KEYS``); the other arguments are ``ARGV``.
        twin: the Python implementation MemoryCache runs (see :data:`Twin`).
        sha1: the SHA-1 of ``source``, as ``EVALSHA`` wants it (computed).

    Raises:
        ConfigurationError: an empty name or source, or a negative number of keys.
    """

    name: str
    source: str
    keys: int
    twin: Twin = field(repr=False)
    sha1: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not self.source.strip():
            raise ConfigurationError("script", "needs a name and a Lua source")
        if isinstance(self.keys, bool) or not isinstance(self.keys, int) or self.keys < 0:
            raise ConfigurationError("script.keys", f"must be an int >= 0, got {self.keys!r}")
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha1", digest)


@runtime_checkable
class ScriptRunner(Protocol):
    """What can run a :class:`CacheScript`: RedisAdapter, MemoryCache and every Layer."""

    def run_script(
        self, script: CacheScript, keys: Sequence[str], args: Sequence[ScriptArg] = ()
    ) -> Awaitable[Result[ScriptReply, CacheError]]:
        """Run ``script`` atomically on ``keys`` with ``args``; never raises.

        A ``Failure`` that may have happened after the script ran says ``maybe_applied``;
        an error raised inside a script that had already written keeps those writes
        (Redis does not roll a script back), so such a failure says ``maybe_applied`` too.
        """
        ...


def check_script_call(
    script: object, keys: object, args: object, limits: Limits
) -> tuple[list[tuple[str, bytes]], list[ScriptArg]] | CacheError:
    """Check one run's arguments; return ``(key, key bytes)`` pairs and the arguments.

    The keys are checked like any key (and their number against ``script.keys``); an
    argument is a ``str`` (no larger than a value may be) or an ``int``.
    """
    if not isinstance(script, CacheScript):
        kind = type(script).__name__
        return invalid(OPERATION, None, f"script must be a CacheScript, got {kind}")
    encoded = encode_keys(OPERATION, keys, limits)
    if isinstance(encoded, CacheError):
        return encoded
    first = encoded[0][0] if encoded else None
    if len(encoded) != script.keys:
        return invalid(
            OPERATION, first, f"script {script.name!r} takes {script.keys} keys, got {len(encoded)}"
        )
    if isinstance(args, str | bytes) or not isinstance(args, list | tuple):
        return invalid(OPERATION, first, f"args must be a list, got {type(args).__name__}")
    checked: list[ScriptArg] = []
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, str | int):
            return invalid(OPERATION, first, f"args must be str or int, got {type(arg).__name__}")
        if isinstance(arg, str):
            try:
                size = len(arg.encode())
            except UnicodeEncodeError:
                return invalid(OPERATION, first, "an argument is not encodable as UTF-8")
            if size > limits.max_value_bytes:
                return invalid(
                    OPERATION, first, f"an argument is {size} bytes, larger than max_value_bytes"
                )
        checked.append(arg)
    return encoded, checked

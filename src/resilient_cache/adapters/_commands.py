"""What both Redis adapters share: keys, the lifecycle, the single-key commands, the checks.

:class:`RedisAdapter` and :class:`RedisClusterAdapter` differ in how a command reaches Redis
(their ``_call``), in ``connect``/``aclose``, and in how the many-key calls and the bulk
deletes are sent (``get_many``, ``set_many``, ``_delete_matching``); a ``SET``, an ``INCRBY``
or a ``PTTL`` on one key is the same on both, and so are the checks before a many-key call
and the decoding after it: written once, here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Final, Self

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection

from resilient_cache.adapters import _scripts
from resilient_cache.adapters._errors import is_noscript
from resilient_cache.adapters.redis_options import RedisOptions
from resilient_cache.domain.backend import Endpoint
from resilient_cache.domain.deadline import DeadlineTimer, Expiry, call_deadline
from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.glob import glob_escape
from resilient_cache.domain.protocol import JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.scripts import CacheScript, ScriptArg, ScriptReply
from resilient_cache.domain.validation import (
    DEFAULT_LIMITS,
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

SCAN_COUNT: Final = 1000
"""Keys asked of one ``SCAN`` step by ``delete_pattern`` and ``flush``."""

# redis-py 8 checks a pooled connection without reading; older releases only have the reading check
_HAS_CAN_READ: Final = hasattr(AbstractConnection, "can_read")


async def went_away(conn: Any) -> bool:
    """Whether a connected, idle connection has unread data or its end of stream: the server
    restarted, timed it out or killed it meanwhile, and a command sent on it would fail."""
    try:
        return bool(await (conn.can_read() if _HAS_CAN_READ else conn.can_read_destructive()))
    except (rx.ConnectionError, OSError):
        return True


def cancellations() -> int:
    """How many cancellations of the current task are pending (0 outside a task)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def swallowed(before: int, expiry: Expiry | None) -> bool:
    """After an error from redis-py: whether it hid a cancellation of the caller's (then the
    error is dropped and the caller's ``CancelledError`` raised instead; one of our own
    deadline is absorbed, and the error stands)."""
    if cancellations() <= before:
        return False
    return expiry is None or not expiry.cut()


def check_not_swallowed(before: int) -> None:
    """Raise ``CancelledError`` if the task was cancelled while redis-py ran and redis-py
    returned a reply instead (its cluster client does so with a ``socket_timeout``: more than
    a thousand times a second under a storm of cancellations). The reply is dropped: the
    caller asked for its call to end, and a cancelled call may have been applied anyway."""
    if cancellations() > before:
        raise asyncio.CancelledError


def info_fields(reply: Any) -> dict[str, str]:
    """``INFO``'s reply (its text, or redis-py's parsed dict) as ``field -> value`` strings."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items() if not isinstance(v, dict)}
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon and not line.startswith("#"):
            fields[name] = value.strip()
    return fields


class KeyCommands:
    """The half of the protocol that does not depend on the topology, on the adapter's
    ``_call``; :meth:`_init_keys` sets up what it needs."""

    _prefix: bytes
    _glob_prefix: bytes
    _limits: Limits
    _display: str
    _endpoint: Endpoint
    _namespace: str | None
    _timeout: float
    _timer: DeadlineTimer

    def _init_keys(
        self, namespace: str | None, prefix: str, limits: Limits | None, operation_timeout: float
    ) -> None:
        """Check and set the namespace (stored as ``prefix``, e.g. ``"ns:"``), the limits and
        the bound on a call.

        Raises:
            ConfigurationError: a bad namespace or ``operation_timeout``.
        """
        check_namespace(namespace)
        RedisOptions(operation_timeout=operation_timeout)  # validates it
        self._namespace = namespace
        self._prefix = prefix.encode() if namespace else b""
        self._glob_prefix = glob_escape(prefix).encode() if namespace else b""
        self._limits = limits or DEFAULT_LIMITS
        self._timeout = operation_timeout
        self._timer = DeadlineTimer()

    def _call(
        self, operation: str, key: str | None, *command: Any, write: bool = False
    ) -> Awaitable[Any]:
        """Run one command; the reply, or a :class:`CacheError` (each adapter's own)."""
        raise NotImplementedError

    def _deadline(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[float, float | None, Expiry | None]:
        """Start a call's bound: ``(bound, the caller's deadline, our timer or None)``.

        An earlier deadline of the caller's (RetryLayer) makes a timer of our own redundant.
        """
        bound = loop.time() + self._timeout
        outer = call_deadline.get()
        expiry = None if outer is not None and outer <= bound else self._timer.start(loop, bound)
        return bound, outer, expiry

    async def _delete_matching(self, operation: str, pattern: bytes) -> int | CacheError:
        """Delete the keys matching ``pattern`` (namespaced), every node's; the count."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------

    async def connect(self) -> Result[bool, CacheError]:
        """Check that Redis answers (a PING). Never raises.

        A ``Failure`` here does not stop anything: the adapter connects lazily, so calls
        fail open while Redis is down and succeed once it is back, without a restart.
        """
        return await self.ping()

    async def ping(self) -> Result[bool, CacheError]:
        """``Success(True)`` when Redis answers PING."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the adapter's connections; a later call connects again."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def namespace(self) -> str | None:
        """The namespace every key is stored under, invisibly to callers (``None``: none)."""
        return self._namespace

    @property
    def limits(self) -> Limits:
        """The key and value size limits this cache checks before sending anything."""
        return self._limits

    @property
    def endpoint(self) -> Endpoint:
        """Where this adapter connects (telemetry's ``server.address``/``server.port``).

        Behind Sentinel: the first sentinel's address, and the service name; on a cluster:
        the first seed node, database 0.
        """
        return self._endpoint

    # -- one key -------------------------------------------------------------------

    def get(self, key: str) -> Coroutine[Any, Any, Result[str | None, CacheError]]:
        """Return the value, or ``Success(None)`` when the key is missing."""
        return self._get("get", key)  # (a plain def: one coroutine frame less per call)

    async def _get(self, operation: str, key: str) -> Result[str | None, CacheError]:
        full = self._key(operation, key)
        if isinstance(full, CacheError):
            return Failure(full)
        reply = await self._call(operation, key, "GET", full)
        return self._decoded(operation, key, reply)

    def _decoded(self, operation: str, key: str, reply: Any) -> Result[str | None, CacheError]:
        if isinstance(reply, CacheError):
            return Failure(reply)
        value = self._decode(operation, key, reply)
        return Failure(value) if isinstance(value, CacheError) else Success(value)

    async def get_json(self, key: str) -> Result[JsonValue, CacheError]:
        """Return the decoded JSON value, ``Success(None)`` when missing."""
        result = await self._get("get_json", key)
        if isinstance(result, Failure) or result.value is None:
            return result
        return load_json("get_json", key, result.value)

    def set(
        self, key: str, value: str, ttl: int | None = None
    ) -> Coroutine[Any, Any, Result[None, CacheError]]:
        """Store ``value``, replacing any TTL with ``ttl`` (``None`` = no expiry)."""
        return self._set("set", key, value, ttl)

    # -- the script capability (resilient_cache.domain.scripts) -----------------------

    def run_script(
        self, script: CacheScript, keys: Sequence[str], args: Sequence[ScriptArg] = ()
    ) -> Coroutine[Any, Any, Result[ScriptReply, CacheError]]:
        """Run ``script`` atomically: ``EVALSHA``, or ``EVAL`` when Redis answers NOSCRIPT.

        ``keys`` are namespaced like every key; a run is a write that is never retried once
        it may have reached Redis (see :mod:`resilient_cache.adapters._scripts`). On Redis
        Cluster its keys must share one hash slot (a hash tag such as ``{user42}:``, or
        ``hash_tag_namespace=True``): keys in several slots are a ``VALIDATION`` failure,
        nothing sent.
        """
        return _scripts.run_script(
            script, keys, args,
            send=self._send_script, is_noscript=is_noscript, prefix=self._prefix,
            limits=self._limits,
        )  # fmt: skip

    def _send_script(
        self, operation: str, key: str | None, *command: Any, write: bool = False
    ) -> Awaitable[Any]:
        """Send a script's ``EVALSHA``/``EVAL`` (the cluster checks its keys' slot first)."""
        return self._call(operation, key, *command, write=write)

    # -- many keys -------------------------------------------------------------------

    def _many_keys(self, keys: list[str]) -> dict[str, bytes] | CacheError:
        """``get_many``'s keys checked: each distinct key with its full (namespaced) form."""
        encoded = encode_keys("get_many", keys, self._limits)
        if isinstance(encoded, CacheError):
            return encoded
        return {key: self._prefix + raw for key, raw in encoded}

    def _many_values(
        self, found: dict[str, str | None], pairs: Any
    ) -> Result[dict[str, str | None], CacheError]:
        """Decode ``(key, raw value)`` pairs into ``found``; the first bad value fails."""
        for key, raw in pairs:
            value = self._decode("get_many", key, raw)
            if isinstance(value, CacheError):
                return Failure(value)
            found[key] = value
        return Success(found)

    def _many_items(
        self, mapping: dict[str, str], ttl: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None] | Result[None, CacheError]:
        """``set_many``'s pairs checked: (full key, value) rows and the TTL in seconds; or
        the call's result already (a bad argument, or nothing to store)."""
        rows = encode_mapping("set_many", mapping, self._limits)
        if isinstance(rows, CacheError):
            return Failure(rows)
        seconds = check_ttl("set_many", None, ttl)
        if isinstance(seconds, CacheError):
            return Failure(seconds)
        if not rows:
            return Success(None)
        return [(self._prefix + raw_key, raw_value) for _, raw_key, _, raw_value in rows], seconds

    async def server_info(self) -> Result[dict[str, str], CacheError]:
        """What the server says about itself (``INFO``: version, role, memory, clients, ...),
        as ``field -> value``; for operators (the command line's ``info``), not hot paths.
        On a cluster, one node's answer."""
        reply = await self._call("server_info", None, "INFO")
        if isinstance(reply, CacheError):
            return Failure(reply)
        return Success(info_fields(reply))

    async def delete_pattern(self, pattern: str) -> Result[int, CacheError]:
        """Delete matching keys with SCAN + UNLINK in batches (never KEYS)."""
        raw = check_pattern("delete_pattern", pattern)
        if isinstance(raw, CacheError):
            return Failure(raw)
        deleted = await self._delete_matching("delete_pattern", self._glob_prefix + raw)
        return Failure(deleted) if isinstance(deleted, CacheError) else Success(deleted)

    async def flush(self) -> Result[None, CacheError]:
        """Remove this namespace's keys (every key of the database without a namespace).

        ``SCAN`` + ``UNLINK`` batches, never ``FLUSHDB``/``FLUSHALL``/``KEYS``: the adapter
        works under an ACL that denies those (see docs/security.md).
        """
        deleted = await self._delete_matching("flush", self._glob_prefix + b"*")
        return Failure(deleted) if isinstance(deleted, CacheError) else Success(None)

    def _key(self, operation: str, key: str) -> bytes | CacheError:
        raw = encode_key(operation, key, self._limits)
        return raw if isinstance(raw, CacheError) else self._prefix + raw

    def _decode(self, operation: str, key: str, raw: bytes | str | None) -> str | CacheError | None:
        if raw is None or isinstance(raw, str):
            return raw
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            return CacheError.of(
                ErrorCode.SERIALIZATION,
                "stored value is not valid UTF-8 (written by another client?)",
                operation=operation,
                key=key,
                details={"server": self._display},
                cause=exc,
            )

    async def set_json(
        self, key: str, value: JsonInput, ttl: int | None = None
    ) -> Result[None, CacheError]:
        """Store any JSON value."""
        text = dump_json("set_json", key, value)
        if isinstance(text, CacheError):
            return Failure(text)
        return await self._set("set_json", key, text, ttl)

    async def _set(
        self, operation: str, key: str, value: str, ttl: object
    ) -> Result[None, CacheError]:
        full = self._key(operation, key)
        if isinstance(full, CacheError):
            return Failure(full)
        raw = encode_value(operation, key, value, self._limits)
        if isinstance(raw, CacheError):
            return Failure(raw)
        seconds = check_ttl(operation, key, ttl)
        if isinstance(seconds, CacheError):
            return Failure(seconds)
        command = ("SET", full, raw) if seconds is None else ("SET", full, raw, "EX", seconds)
        reply = await self._call(operation, key, *command, write=True)
        return Failure(reply) if isinstance(reply, CacheError) else Success(None)

    async def _int_command(
        self,
        operation: str,
        key: str,
        command: str,
        argument: Callable[[], object | CacheError] | None = None,
        *,
        write: bool = False,
    ) -> Result[int, CacheError]:
        """``command key [argument]`` with an integer reply. The key is checked first, then
        the argument (``argument()``: the checked value, or its ``CacheError``), in the
        order every implementation checks them (MemoryCache too)."""
        full = self._key(operation, key)
        if isinstance(full, CacheError):
            return Failure(full)
        args: tuple[object, ...] = ()
        if argument is not None:
            checked = argument()
            if isinstance(checked, CacheError):
                return Failure(checked)
            args = (checked,)
        reply = await self._call(operation, key, command, full, *args, write=write)
        return Failure(reply) if isinstance(reply, CacheError) else Success(int(reply))

    async def delete(self, key: str) -> Result[bool, CacheError]:
        """Remove the key; tell whether it existed."""
        return (await self._int_command("delete", key, "UNLINK", write=True)).map(bool)

    async def exists(self, key: str) -> Result[bool, CacheError]:
        """Tell whether the key exists."""
        return (await self._int_command("exists", key, "EXISTS")).map(bool)

    async def expire(self, key: str, seconds: int) -> Result[bool, CacheError]:
        """Set a TTL on an existing key."""
        result = await self._int_command(
            "expire", key, "EXPIRE",
            lambda: check_seconds("expire", key, seconds, name="seconds"), write=True,
        )  # fmt: skip
        return result.map(bool)

    async def increment(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Add ``amount`` atomically (INCRBY); a missing key counts as 0."""
        return await self._int_command(
            "increment", key, "INCRBY", lambda: check_amount("increment", key, amount), write=True
        )

    async def decrement(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Subtract ``amount`` atomically (DECRBY); a missing key counts as 0."""
        return await self._int_command(
            "decrement", key, "DECRBY", lambda: check_amount("decrement", key, amount), write=True
        )

    async def ttl(self, key: str) -> Result[int | None, CacheError]:
        """Seconds until expiry, rounded up; ``None`` if missing or persistent."""
        result = await self._int_command("ttl", key, "PTTL")
        if isinstance(result, Failure):
            return result
        millis = result.value
        return Success(None if millis < 0 else max(1, math.ceil(millis / 1000)))

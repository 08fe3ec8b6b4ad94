"""What both Redis adapters share: key encoding, decoding, and the single-key commands.

:class:`RedisAdapter` and :class:`RedisClusterAdapter` differ in how a command reaches Redis
(their ``_call``) and in the many-key calls; a ``SET``, an ``INCRBY`` or a ``PTTL`` on one
key is the same on both, so it is written once, here, on three primitives each adapter
provides: ``_call``, ``_prefix`` (the namespace, as bytes) and ``_limits``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any, Final

from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.protocol import JsonInput
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.validation import (
    Limits,
    check_amount,
    check_seconds,
    check_ttl,
    dump_json,
    encode_key,
    encode_value,
)

SCAN_COUNT: Final = 1000
"""Keys asked of one ``SCAN`` step by ``delete_pattern`` and ``flush``."""


class KeyCommands:
    """The single-key half of the protocol, on the adapter's ``_call``."""

    _prefix: bytes
    _limits: Limits
    _display: str

    def _call(
        self, operation: str, key: str | None, *command: Any, write: bool = False
    ) -> Awaitable[Any]:
        """Run one command; the reply, or a :class:`CacheError` (each adapter's own)."""
        raise NotImplementedError

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
        self, operation: str, key: str, command: str, *args: Any, write: bool = False
    ) -> Result[int, CacheError]:
        full = self._key(operation, key)
        if isinstance(full, CacheError):
            return Failure(full)
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
        checked = check_seconds("expire", key, seconds, name="seconds")
        if isinstance(checked, CacheError):
            return Failure(checked)
        return (await self._int_command("expire", key, "EXPIRE", checked, write=True)).map(bool)

    async def increment(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Add ``amount`` atomically (INCRBY); a missing key counts as 0."""
        checked = check_amount("increment", key, amount)
        if isinstance(checked, CacheError):
            return Failure(checked)
        return await self._int_command("increment", key, "INCRBY", checked, write=True)

    async def decrement(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Subtract ``amount`` atomically (DECRBY); a missing key counts as 0."""
        checked = check_amount("decrement", key, amount)
        if isinstance(checked, CacheError):
            return Failure(checked)
        return await self._int_command("decrement", key, "DECRBY", checked, write=True)

    async def ttl(self, key: str) -> Result[int | None, CacheError]:
        """Seconds until expiry, rounded up; ``None`` if missing or persistent."""
        result = await self._int_command("ttl", key, "PTTL")
        if isinstance(result, Failure):
            return result
        millis = result.value
        return Success(None if millis < 0 else max(1, math.ceil(millis / 1000)))

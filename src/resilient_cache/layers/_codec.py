"""ValueCodecLayer: the shape shared by layers that store each value transformed.

EncryptionLayer and CompressionLayer differ only in how one value is written (sealed,
compressed) and read back (opened, decompressed); the routing of the six value methods,
their input checks, the ``get_many`` rule (one value that does not read back fails the
batch, never silently a miss) and telling an inner failure as the caller's operation are
written once, here. Size limits are the inner cache's, applied to what is stored.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from dataclasses import replace
from typing import Final, TypeVar

from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.protocol import JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.turns import Turns
from resilient_cache.domain.validation import (
    Limits,
    dump_json,
    encode_key,
    encode_keys,
    encode_mapping,
    encode_value,
    load_json,
)
from resilient_cache.layers.base import Layer, limits_of

T = TypeVar("T")

UNBOUNDED: Final = Limits(
    max_key_bytes=2**62, max_value_bytes=2**62, max_batch_keys=2**62, max_batch_bytes=2**62
)
"""Type and encoding checks only: the sizes, of a value and of a batch, are the inner
cache's business (it sees what is sent)."""


def told_as(operation: str, result: Result[T, CacheError]) -> Result[T, CacheError]:
    """The inner call's result, a failure told as the caller's operation (get_json, not get)."""
    if isinstance(result, Failure) and result.error.operation != operation:
        return Failure(replace(result.error, operation=operation))
    return result


class ValueCodecLayer(Layer):
    """Writes each value through :meth:`_write` and reads it back through :meth:`_read`."""

    verb: str = "read back"
    """What :meth:`_read` does, for ``get_many``'s message (``"did not open"``)."""

    value_limits: Limits = UNBOUNDED
    """The checks a value passes before :meth:`_write` (a size bound of the layer's own)."""

    @abstractmethod
    def _write(self, key: str, value: str, raw: bytes) -> str:
        """The stored form of ``value`` (``raw`` is its UTF-8 encoding)."""

    @abstractmethod
    def _read(self, operation: str, key: str, stored: str) -> Result[str, CacheError]:
        """The value behind a stored form, or a ``SERIALIZATION`` failure."""

    async def get(self, key: str) -> Result[str | None, CacheError]:
        """See :meth:`CacheProtocol.get`; a value that does not read back is ``SERIALIZATION``."""
        return await self._get("get", key)

    async def _get(self, operation: str, key: str) -> Result[str | None, CacheError]:
        checked = encode_key(operation, key, UNBOUNDED)
        if isinstance(checked, CacheError):
            return Failure(checked)
        result = await self._inner.get(key)
        if isinstance(result, Failure) or result.value is None:
            return told_as(operation, result)
        return self._read(operation, key, result.value)

    async def get_json(self, key: str) -> Result[JsonValue, CacheError]:
        """See :meth:`CacheProtocol.get_json`: read back, then decode."""
        result = await self._get("get_json", key)
        if isinstance(result, Failure) or result.value is None:
            return result
        return load_json("get_json", key, result.value)

    async def set(self, key: str, value: str, ttl: int | None = None) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.set`; stores the written form."""
        return await self._set("set", key, value, ttl)

    async def set_json(
        self, key: str, value: JsonInput, ttl: int | None = None
    ) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.set_json`: encode, then write."""
        text = dump_json("set_json", key, value)
        if isinstance(text, CacheError):
            return Failure(text)
        return await self._set("set_json", key, text, ttl)

    async def _set(
        self, operation: str, key: str, value: str, ttl: int | None
    ) -> Result[None, CacheError]:
        checked = encode_key(operation, key, UNBOUNDED)
        if isinstance(checked, CacheError):
            return Failure(checked)
        raw = encode_value(operation, key, value, self.value_limits)
        if isinstance(raw, CacheError):
            return Failure(raw)
        return told_as(operation, await self._inner.set(key, self._write(key, value, raw), ttl))

    def _beyond_batch(self, batch: object) -> bool:
        """A batch longer than the backend takes: no key of it is worth encoding (100,000 keys
        took 57 ms of the event loop here before the backend refused them)."""
        return isinstance(batch, list | tuple | dict) and (
            len(batch) > limits_of(self._inner).max_batch_keys
        )

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """See :meth:`CacheProtocol.get_many`; one value that does not read back fails the batch."""
        if self._beyond_batch(keys):
            return await self._inner.get_many(keys)  # refused there, before any per-key work
        encoded = encode_keys("get_many", keys, UNBOUNDED)
        if isinstance(encoded, CacheError):
            return Failure(encoded)
        result = await self._inner.get_many(keys)
        if isinstance(result, Failure):
            return result
        found: dict[str, str | None] = {}
        errors: list[CacheError] = []
        turns = Turns()
        for key, stored in result.value.items():
            if stored is None:
                found[key] = None
                continue
            opened = self._read("get_many", key, stored)
            size = len(stored)
            if isinstance(opened, Failure):
                errors.append(opened.error)
            else:
                found[key] = opened.value
                size = max(size, len(opened.value))
            if turns.due(size):
                await asyncio.sleep(0)  # a turn for the other tasks (domain/turns.py)
        if not errors:
            return Success(found)
        first = errors[0]
        return Failure(
            CacheError.of(
                ErrorCode.SERIALIZATION,
                f"{len(errors)} of {len(result.value)} stored values did not {self.verb}; "
                f"the first: {first.message}",
                operation="get_many",
                key=first.key,
                details={**first.details, "rejected": len(errors), "keys": len(result.value)},
            )
        )

    async def set_many(
        self, mapping: dict[str, str], ttl: int | None = None
    ) -> Result[None, CacheError]:
        """See :meth:`CacheProtocol.set_many`; every value written on its own, all or nothing."""
        if self._beyond_batch(mapping):
            return await self._inner.set_many(mapping, ttl)  # refused there, as it is
        rows = encode_mapping("set_many", mapping, self.value_limits)
        if isinstance(rows, CacheError):
            return Failure(rows)
        limits = limits_of(self._inner)
        written: dict[str, str] = {}
        total = 0
        turns = Turns()
        for key, raw_key, value, raw in rows:
            if turns.due(len(raw)):
                await asyncio.sleep(0)  # a turn for the other tasks; nothing was sent yet
            stored = written[key] = self._write(key, value, raw)
            total += len(raw_key) + len(stored.encode())
            if total > limits.max_batch_bytes:
                # the backend would refuse the batch: stop encoding it (200 values of 100 KB
                # held the event loop ~40 ms in compression before being refused)
                refused = encode_mapping("set_many", written, limits)
                if isinstance(refused, CacheError):
                    return Failure(refused)
        return await self._inner.set_many(written, ttl)

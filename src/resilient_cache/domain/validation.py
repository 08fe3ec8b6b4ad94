"""Input checks shared by every adapter, so that all of them reject the same inputs.

Each check returns the encoded form (``bytes``/``int``) or a ``VALIDATION``
:class:`CacheError`; nothing here raises or does I/O. Messages never contain values.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Final

from resilient_cache.domain import defaults
from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.protocol import JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result, Success

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_TTL_SECONDS: Final = 2**31 - 1
"""The longest TTL accepted (about 68 years); longer ones are almost surely a unit bug."""


NAMESPACE_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""What a namespace may be: letters, digits, ``_``, ``.``, ``-``, 1 to 64 characters."""


def check_namespace(namespace: object) -> str | None:
    """Return ``namespace`` if it is a valid namespace (or ``None``).

    No ``:`` (the separator: tenant ``a`` with key ``b:x`` would be tenant ``a:b`` with key
    ``x``), no glob characters (the prefix stays literal in ``SCAN MATCH`` and in an ACL key
    pattern ``~<namespace>:*``), no spaces or control characters.

    Raises:
        ConfigurationError: anything else, naming the ``namespace`` setting.
    """
    if namespace is None:
        return None
    if not isinstance(namespace, str) or not NAMESPACE_PATTERN.fullmatch(namespace):
        raise ConfigurationError(
            "namespace",
            "must be 1-64 letters, digits, '_', '.' or '-' (starting with a letter or "
            f"digit; no ':' or glob characters), got {namespace!r}",
        )
    return namespace


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits checked before anything is sent.

    Redis drops the connection on a request larger than its ``proto-max-bulk-len``, which
    would look like an outage; a cache entry that large is a bug anyway.

    A batch is bounded too, so that a ``get_many``/``set_many`` fits its deadline and never
    holds the event loop long (packing and decoding a batch are synchronous work): a bigger
    one is a ``VALIDATION`` failure, nothing sent; split it (``warm()`` batches for you).

    Attributes:
        max_key_bytes: longest key, in UTF-8 bytes, namespace excluded (default 1 KiB).
        max_value_bytes: largest value, in UTF-8 bytes (default 1 MiB, memcached's limit).
        max_batch_keys: keys in one ``get_many``/``set_many`` (default 10,000).
        max_batch_bytes: keys and values of one ``set_many`` together, in UTF-8 bytes
            (default 10 MiB).
    """

    max_key_bytes: int = defaults.MAX_KEY_BYTES
    max_value_bytes: int = defaults.MAX_VALUE_BYTES
    max_batch_keys: int = defaults.MAX_BATCH_KEYS
    max_batch_bytes: int = defaults.MAX_BATCH_BYTES

    def __post_init__(self) -> None:
        for name in ("max_key_bytes", "max_value_bytes", "max_batch_keys", "max_batch_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(name, f"must be a positive int, got {value!r}")


DEFAULT_LIMITS: Final = Limits()


def invalid(operation: str, key: str | None, message: str, **details: int | str) -> CacheError:
    """Build a ``VALIDATION`` error (nothing was sent, nothing applied)."""
    return CacheError.of(
        ErrorCode.VALIDATION, message, operation=operation, key=key, details=details
    )


def encode_key(operation: str, key: object, limits: Limits) -> bytes | CacheError:
    """Return the key as UTF-8 bytes, or why it is not a valid key."""
    if not isinstance(key, str):
        return invalid(operation, None, f"key must be a str, got {type(key).__name__}")
    if not key:
        return invalid(operation, key, "key must not be empty")
    try:
        raw = key.encode()
    except UnicodeEncodeError:
        return invalid(operation, key, "key is not encodable as UTF-8 (lone surrogate)")
    if len(raw) > limits.max_key_bytes:
        return invalid(
            operation,
            key,
            f"key is {len(raw)} bytes, longer than max_key_bytes={limits.max_key_bytes}",
            size=len(raw),
            limit=limits.max_key_bytes,
        )
    return raw


def encode_value(operation: str, key: str, value: object, limits: Limits) -> bytes | CacheError:
    """Return the value as UTF-8 bytes, or why it cannot be stored."""
    if not isinstance(value, str):
        return invalid(
            operation,
            key,
            f"value must be a str, got {type(value).__name__} (use set_json for other types)",
        )
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        return invalid(operation, key, "value is not encodable as UTF-8 (lone surrogate)")
    if len(raw) > limits.max_value_bytes:
        return invalid(
            operation,
            key,
            f"value is {len(raw)} bytes, larger than max_value_bytes={limits.max_value_bytes}",
            size=len(raw),
            limit=limits.max_value_bytes,
        )
    return raw


def check_ttl(operation: str, key: str | None, ttl: object) -> int | CacheError | None:
    """Return ``ttl`` as whole seconds, ``None`` for no expiry, or why it is invalid."""
    return None if ttl is None else check_seconds(operation, key, ttl)


def check_seconds(
    operation: str, key: str | None, ttl: object, *, name: str = "ttl"
) -> int | CacheError:
    """Return a positive whole number of seconds, or why ``ttl`` is not one.

    Zero is rejected rather than read as "no expiry" (``EXPIRE key 0`` deletes the key).
    A float is accepted only when it is a whole number (``5.0``).
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        return invalid(
            operation, key, f"{name} must be an int number of seconds, got {type(ttl).__name__}"
        )
    if isinstance(ttl, float):
        if not math.isfinite(ttl) or not ttl.is_integer():
            return invalid(operation, key, f"{name} must be a whole number of seconds, got {ttl!r}")
        ttl = int(ttl)
    if ttl <= 0:
        return invalid(operation, key, f"{name} must be a positive number of seconds, got {ttl}")
    if ttl > MAX_TTL_SECONDS:
        return invalid(operation, key, f"{name} must be <= {MAX_TTL_SECONDS} seconds, got {ttl}")
    return ttl


def check_amount(operation: str, key: str, amount: object) -> int | CacheError:
    """Return ``amount`` if it is an int that Redis can add (and negate), else why not."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        return invalid(operation, key, f"amount must be an int, got {type(amount).__name__}")
    # -INT64_MIN does not fit in int64, so decrement by INT64_MIN is rejected too.
    low = INT64_MIN if operation == "increment" else -INT64_MAX
    if not low <= amount <= INT64_MAX:
        return invalid(operation, key, f"amount {amount} is outside the 64-bit signed range")
    return amount


def check_pattern(operation: str, pattern: object) -> bytes | CacheError:
    """Return the glob pattern as UTF-8 bytes, or why it is not a valid pattern."""
    if not isinstance(pattern, str):
        return invalid(operation, None, f"pattern must be a str, got {type(pattern).__name__}")
    if not pattern:
        return invalid(operation, None, "pattern must not be empty")
    try:
        return pattern.encode()
    except UnicodeEncodeError:
        return invalid(operation, None, "pattern is not encodable as UTF-8 (lone surrogate)")


def encode_keys(
    operation: str, keys: object, limits: Limits
) -> list[tuple[str, bytes]] | CacheError:
    """Check a batch of keys (a list or tuple, not a single str); pair each with its bytes."""
    if isinstance(keys, str | bytes) or not isinstance(keys, list | tuple):
        return invalid(operation, None, f"keys must be a list of str, got {type(keys).__name__}")
    if len(keys) > limits.max_batch_keys:
        return _too_many(operation, len(keys), limits)
    encoded: list[tuple[str, bytes]] = []
    for key in keys:
        raw = encode_key(operation, key, limits)
        if isinstance(raw, CacheError):
            return raw
        encoded.append((key, raw))
    return encoded


def encode_mapping(
    operation: str, mapping: object, limits: Limits
) -> list[tuple[str, bytes, str, bytes]] | CacheError:
    """Check a ``{key: value}`` batch; return ``(key, key bytes, value, value bytes)`` rows.

    The first bad pair rejects the whole batch, so that nothing of it is written.
    """
    if not isinstance(mapping, dict):
        return invalid(
            operation, None, f"mapping must be a dict of str to str, got {type(mapping).__name__}"
        )
    if len(mapping) > limits.max_batch_keys:
        return _too_many(operation, len(mapping), limits)
    rows: list[tuple[str, bytes, str, bytes]] = []
    total = 0
    for key, value in mapping.items():
        raw_key = encode_key(operation, key, limits)
        if isinstance(raw_key, CacheError):
            return raw_key
        raw_value = encode_value(operation, key, value, limits)
        if isinstance(raw_value, CacheError):
            return raw_value
        total += len(raw_key) + len(raw_value)
        if total > limits.max_batch_bytes:
            return invalid(
                operation, None,
                f"the batch holds more than max_batch_bytes={limits.max_batch_bytes} bytes of "
                "keys and values: split it", limit=limits.max_batch_bytes,
            )  # fmt: skip
        rows.append((key, raw_key, value, raw_value))
    return rows


def _too_many(operation: str, count: int, limits: Limits) -> CacheError:
    return invalid(
        operation, None,
        f"{count} keys in one call, more than max_batch_keys={limits.max_batch_keys}: split it",
        limit=limits.max_batch_keys,
    )  # fmt: skip


def dump_json(operation: str, key: str, value: JsonInput) -> str | CacheError:
    """Serialize a JSON value strictly: NaN, Infinity and non-JSON types are refused."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        return CacheError.of(
            ErrorCode.SERIALIZATION,
            f"value is not JSON-serializable: {exc}",
            operation=operation,
            key=key,
            cause=exc,
        )


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def load_json(operation: str, key: str, text: str) -> Result[JsonValue, CacheError]:
    """Decode a stored JSON document strictly (no NaN/Infinity).

    A value that is not JSON is a ``SERIALIZATION`` failure; the stored value is untouched.
    """
    try:
        value: JsonValue = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        return Failure(
            CacheError.of(
                ErrorCode.SERIALIZATION,
                "stored value is not valid JSON",
                operation=operation,
                key=key,
                cause=exc,
            )
        )
    return Success(value)

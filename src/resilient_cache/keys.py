"""PII-safe cache keys: a keyed hash in place of a personal identifier, and a key builder.

Keys are not secret: they show in ``MONITOR``, ``SCAN``, slow logs, key-space
notifications, memory reports, and in this library's own failure events with
``log_keys=True``. A key ``user:email:ada@example.com`` copies an e-mail address into all of
them. A plain hash (``sha256(email)``) does not help: e-mail addresses, phone numbers and
names are few enough to hash every candidate and look the digest up (a dictionary attack).
An HMAC with a secret key cannot be reversed that way without the secret, yet gives the
same key for the same identifier, which is all a cache needs:

>>> hasher = KeyHasher(b"0123456789abcdef0123456789abcdef")
>>> cache_key("user", "email", hasher("ada@example.com"))
'user:email:e3e30b4d50224a4ba14084607085d072'

The identifier is hashed exactly as given: ``Ada@Example.com`` and ``ada@example.com`` give
two keys. Normalise it the same way everywhere, or once, with ``normalize=`` (for e-mail
addresses ``str.casefold`` after ``strip`` is the usual choice). Nothing is lower-cased
behind your back: whether two spellings are one person is the application's decision.

Rotating the secret changes every key: the old entries are never read again and expire
with their TTL. See docs/security.md for the naming conventions and how to keep the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from typing import Final

from resilient_cache.domain.errors import ConfigurationError

__all__ = ["MIN_SECRET_BYTES", "KeyHasher", "cache_key", "hash_identifier", "key_part"]

MIN_SECRET_BYTES: Final = 16
"""Shortest secret :class:`KeyHasher` accepts (32 random bytes are recommended)."""

_MIN_LENGTH: Final = 16
_MAX_LENGTH: Final = 64  # the whole HMAC-SHA256 digest, in hex


class KeyHasher:
    """Turns a personal identifier into a keyed hash: hex HMAC-SHA256, truncated.

    Args:
        secret: the HMAC key: at least :data:`MIN_SECRET_BYTES` bytes (a ``str`` counts as
            its UTF-8 bytes); 32 random bytes recommended (``secrets.token_bytes(32)``).
            Kept like a password: anyone who has it can test guesses again.
        length: hex characters kept, even, 16 to 64 (default 32: 128 bits, no collision in
            any realistic key space; 16 is 64 bits).
        normalize: applied to the identifier before hashing (e.g. ``str.casefold``);
            default none: the identifier is hashed exactly as given.

    Raises:
        ConfigurationError: a secret that is not bytes or str, or too short (``secret``;
            its value is never shown), or a bad ``length``.
    """

    __slots__ = ("_key", "_length", "_normalize")

    def __init__(
        self,
        secret: bytes | str,
        *,
        length: int = 32,
        normalize: Callable[[str], str] | None = None,
    ) -> None:
        if isinstance(secret, str):
            key = secret.encode()
        elif isinstance(secret, bytes | bytearray):
            key = bytes(secret)
        else:
            raise ConfigurationError("secret", f"must be bytes or str, got {type(secret).__name__}")
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                "secret",
                f"must be at least {MIN_SECRET_BYTES} bytes (32 random bytes recommended), "
                f"got {len(key)}; the value is not shown",
            )
        if (
            isinstance(length, bool)
            or not isinstance(length, int)
            or not _MIN_LENGTH <= length <= _MAX_LENGTH
            or length % 2
        ):
            raise ConfigurationError(
                "length", f"must be an even int from {_MIN_LENGTH} to {_MAX_LENGTH}, got {length!r}"
            )
        self._key = key
        self._length = length
        self._normalize = normalize

    def __call__(self, identifier: str) -> str:
        """Return the keyed hash of ``identifier``: ``length`` lower-case hex characters.

        Raises:
            TypeError: ``identifier`` is not a ``str``.
            ValueError: ``identifier`` is empty (after ``normalize``): every user without
                one would share one key.
        """
        if not isinstance(identifier, str):
            raise TypeError(f"identifier must be str, got {type(identifier).__name__}")
        if self._normalize is not None:
            identifier = self._normalize(identifier)
        if not identifier:
            raise ValueError("identifier must not be empty")
        digest = hmac.new(self._key, identifier.encode(), hashlib.sha256).hexdigest()
        return digest[: self._length]

    @property
    def length(self) -> int:
        """Hex characters in each hash."""
        return self._length

    def __repr__(self) -> str:
        normalize = getattr(self._normalize, "__qualname__", repr(self._normalize))
        return f"KeyHasher(secret=***, length={self._length}, normalize={normalize})"


def hash_identifier(identifier: str, secret: bytes | str, *, length: int = 32) -> str:
    """``KeyHasher(secret, length=length)(identifier)``, for a one-off.

    Raises:
        ConfigurationError: a bad ``secret`` or ``length`` (see :class:`KeyHasher`).
    """
    return KeyHasher(secret, length=length)(identifier)


def key_part(value: object) -> str:
    """One key part as text: the one escaping rule of :func:`cache_key` and of ``@cached`` key
    templates (``"user:{user_id}"`` gives the very key ``cache_key("user", user_id)`` gives).

    A ``str`` as is (the characters, also for a ``str`` enum member), an ``int`` in decimal
    (also for an ``IntEnum`` member), a ``UUID`` in its canonical form; ``%`` is written
    ``%25`` and ``:`` ``%3A``, so a part can never forge another key's structure.

    Raises:
        TypeError: a value that is not ``str``, ``int`` or ``UUID`` (``bool`` and ``None``
            included: ``"None"`` or ``"True"`` in a key is almost always a bug).
        ValueError: an empty ``str`` (``user:`` would be shared by every empty id).
    """
    if isinstance(value, str):
        text = str.__str__(value)  # the characters themselves, also for a str Enum member
    elif isinstance(value, int) and not isinstance(value, bool):
        text = int.__repr__(value)  # decimal, also for an IntEnum member
    elif isinstance(value, uuid.UUID):
        text = str(value)
    else:
        raise TypeError(f"must be a str, int or UUID, got {type(value).__name__}")
    if not text:
        raise ValueError("must not be an empty str")
    return text.replace("%", "%25").replace(":", "%3A")


def cache_key(*parts: str | int | uuid.UUID) -> str:
    """Join key parts with ``:``, the conventional separator: ``user:123:profile``.

    Each part is written by :func:`key_part`: a ``:`` inside a part is written ``%3A`` (and
    ``%`` as ``%25``), so a part taken from outside cannot forge another key's structure
    (``cache_key("user", "1:admin")`` is ``user:1%3Aadmin``, not ``user:1:admin``):
    different parts always give different keys.

    Raises:
        ValueError: no parts, or an empty part (``user::profile`` would be every user's).
        TypeError: a part that is not a ``str``, ``int`` or ``UUID`` (``bool`` included).
    """
    if not parts:
        raise ValueError("cache_key needs at least one part")
    try:
        return ":".join(key_part(part) for part in parts)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"key parts {exc}") from None

"""The sealed form of a value, ``enc:v1:<key-id>:<base64>``, and the keys that make it.

The format, and why each part is there, is described in
:mod:`resilient_cache.layers.encryption`. Nothing here knows about caches or results: a
:class:`Keyring` seals plaintext for a full key and opens an envelope, or tells why not
with a :class:`Rejection`. ``cryptography`` (an optional dependency) is imported when a
keyring is built, never at import time.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from resilient_cache.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC: Final = "enc:"
"""How every envelope starts; a stored value without it is plaintext."""
VERSION: Final = "v1"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
INSTALL: Final = "pip install 'resilient-cache[encryption]'"

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BASE64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def generate_encryption_key() -> str:
    """A new random 256-bit key, as the urlsafe base64 text ``EncryptionLayer`` accepts."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def _decode_b64(text: str) -> bytes | None:
    """Strict urlsafe base64: its alphabet only, and only the canonical encoding."""
    if not _BASE64.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.urlsafe_b64encode(raw).decode() == text else None


def _key_bytes(key_id: str, key: object) -> bytes:
    """A key from bytes, or from base64 text: urlsafe or standard, padded or not."""
    setting = f"encryption.keys[{key_id!r}]"
    if isinstance(key, str):
        text = key.strip().replace("+", "-").replace("/", "_").rstrip("=")
        raw = _decode_b64(text + "=" * (-len(text) % 4))
        if raw is None:
            raise ConfigurationError(setting, "a str key must be base64 (of 32 bytes)")
    elif isinstance(key, bytes):
        raw = key
    else:
        raise ConfigurationError(
            setting, f"must be bytes or a base64 str, not {type(key).__name__}"
        )
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(setting, f"must be {KEY_BYTES} bytes (AES-256), got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an envelope did not open: a ``reason`` token and a message without secrets."""

    reason: str
    message: str
    key_id: str | None = None


_MALFORMED: Final = Rejection("malformed", "stored value is a malformed encryption envelope")


class Keyring:
    """AES-256-GCM keys by id: seals with the ``current`` one, opens with any of them.

    Raises:
        ConfigurationError: ``cryptography`` is missing, or a bad key, id or ``current``.
    """

    def __init__(self, keys: Mapping[str, bytes | str], current: str) -> None:
        try:  # the optional dependency, imported only when encryption is configured
            from cryptography.exceptions import InvalidTag  # noqa: PLC0415
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError(
                "encryption", f"needs the 'cryptography' package: {INSTALL}"
            ) from exc
        if not isinstance(keys, Mapping) or not keys:
            raise ConfigurationError("encryption.keys", "must be a non-empty mapping of id -> key")
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ConfigurationError(  # the id is not shown: it may be a misplaced key
                    "encryption.keys", "each key id must be 1-32 of A-Z a-z 0-9 _ -"
                )
            ciphers[key_id] = AESGCM(_key_bytes(key_id, key))
        if current not in ciphers:
            raise ConfigurationError(
                "encryption.current", f"must be one of the key ids {sorted(ciphers)}"
            )
        self._ciphers = ciphers
        self._invalid_tag: type[Exception] = InvalidTag
        self.current = current
        self.ids = tuple(sorted(ciphers))

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self.ids)}, current={self.current!r})"

    def seal(self, full_key: str, plaintext: bytes) -> str:
        """The envelope of ``plaintext``, bound to ``full_key`` (namespace included)."""
        header = f"{MAGIC}{VERSION}:{self.current}:"
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, plaintext, (header + full_key).encode())
        return header + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, full_key: str, envelope: str) -> tuple[str, str] | Rejection:
        """``(key id, plaintext)`` of an envelope sealed for ``full_key``, or why not."""
        parts = envelope.split(":", 3)
        if len(parts) != 4 or parts[0] != MAGIC[:-1]:
            return _MALFORMED
        _, version, key_id, body = parts
        if version != VERSION:
            return Rejection("version", "stored value has an unsupported envelope version")
        if not _KEY_ID.fullmatch(key_id):
            return _MALFORMED
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            return Rejection(
                "unknown_key_id",
                f"stored value is encrypted with key id {key_id!r}, which is not configured",
                key_id,
            )
        raw = _decode_b64(body)
        if raw is None:
            return Rejection("base64", "stored value's ciphertext is not valid base64", key_id)
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            return Rejection("truncated", "stored value's ciphertext is truncated", key_id)
        aad = f"{MAGIC}{VERSION}:{key_id}:{full_key}".encode()
        try:
            return key_id, cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad).decode()
        except (self._invalid_tag, UnicodeDecodeError):
            return Rejection(
                "authentication",
                "stored value failed authentication (tampered, or copied from another key "
                "or namespace)",
                key_id,
            )

"""EncryptionLayer: values encrypted with AES-256-GCM before they leave the process.

Needs the optional ``cryptography`` package (``pip install 'resilient-cache[encryption]'``),
imported when a layer is built, never at import time.

Stored form, a text envelope (``str`` like every value of the protocol)::

    enc:v1:<key-id>:<urlsafe base64 of nonce || ciphertext || tag>

* ``v1``: the envelope version: AES-256-GCM, a random 96-bit nonce per value, 128-bit tag;
  base64 with padding, in its canonical form only;
* ``<key-id>``: which key encrypted the value (1-32 of ``A-Z a-z 0-9 _ -``);
* the associated data is the envelope's header and the FULL key as stored in Redis:
  ``b"enc:v1:<key-id>:" + b"<namespace>:<key>"`` (``b"<key>"`` without a namespace), so a
  ciphertext copied to another key, or into another tenant's namespace, fails to decrypt.

What each operation does:

==========================  =========================================================
operation                   behaviour
==========================  =========================================================
set, set_json, set_many     encrypt with the ``current`` key, then store
get, get_json, get_many     decrypt with the key the envelope names (any configured
                            key: rotation); a missing key stays ``Success(None)``
increment, decrement        refused (``VALIDATION``): Redis does the arithmetic on
                            plaintext. ``allow_plaintext_counters=True`` lets them
                            through, stored in plaintext; read them with
                            ``increment(key, 0)``
delete, exists, expire,     passed through (they never see a value)
ttl, flush, ping,
delete_pattern
run_script                  passed through: scripts work on plaintext (the rate
                            limiter's counters); a script must not store secrets
==========================  =========================================================

A stored value that does not open is a ``SERIALIZATION`` failure, never returned: tampered
or truncated ciphertext, bad base64, an unknown version or key id, a value copied from
another key, and a value that is not an envelope at all (plaintext written before
encryption was enabled, or by another client) unless ``accept_plaintext=True`` (a
migration aid: plaintext is then returned as is; a value starting with ``enc:`` must
still open). In ``get_many`` one such value fails the whole batch, like the adapter does
for a value that is not UTF-8: nothing is silently read as a miss. Messages name the
reason and the key id, never the value or key material.

The inner cache checks sizes on what it stores: the limit applies to the envelope, about
4/3 of the value plus ~50 bytes.

Key rotation (every configured key decrypts, only ``current`` encrypts): 1) add the new key
under a new id, deploy everywhere; 2) make it ``current``, deploy; 3) run
:meth:`EncryptionLayer.reencrypt` over the keys the application knows, or wait for the
longest TTL; 4) remove the old key, deploy. Placement: directly around the adapter, with
the adapter's namespace (or around the whole stack ``build_cache`` returns).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.validation import (
    encode_key,
    invalid,
)
from resilient_cache.layers._codec import UNBOUNDED, ValueCodecLayer
from resilient_cache.layers._envelope import MAGIC, Keyring, generate_encryption_key
from resilient_cache.layers.base import Call

__all__ = ["EncryptionLayer", "generate_encryption_key"]

T = TypeVar("T")


# Sizes are the inner cache's to check, on the envelope: only type/emptiness/UTF-8 here.
class EncryptionLayer(ValueCodecLayer):
    """Encrypts values with AES-256-GCM, bound to their key (see the module docstring).

    Args:
        inner: the cache to store envelopes in; best directly around the adapter.
        keys: key id -> 32-byte key, as ``bytes`` or base64 text (urlsafe or standard;
            see :func:`generate_encryption_key`). Every key decrypts.
        current: the id of the key that encrypts new values.
        namespace: the namespace of the adapter underneath (the same value), bound into
            every ciphertext so values cannot move between tenants.
        accept_plaintext: read values that are not envelopes as plaintext (a migration
            aid; off by default: such a value is a ``SERIALIZATION`` failure).
        allow_plaintext_counters: let ``increment``/``decrement`` through; counters are
            then stored in plaintext (off by default: they are refused).

    Raises:
        ConfigurationError: ``cryptography`` is not installed, or a bad key, key id,
            ``current`` or ``namespace`` (the setting is named, the key never shown).
    """

    name = "encryption"
    verb = "open"

    def __init__(
        self,
        inner: CacheProtocol,
        keys: Mapping[str, bytes | str],
        *,
        current: str,
        namespace: str | None = None,
        accept_plaintext: bool = False,
        allow_plaintext_counters: bool = False,
    ) -> None:
        keyring = Keyring(keys, current)  # first: says so if cryptography is missing
        super().__init__(inner)
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ConfigurationError("encryption.namespace", "must be a non-empty str or None")
        self._keyring = keyring
        self._namespace = namespace
        self._prefix = f"{namespace}:" if namespace else ""
        self._accept_plaintext = accept_plaintext
        self._allow_counters = allow_plaintext_counters

    @property
    def current_key_id(self) -> str:
        """The id of the key that encrypts new values."""
        return self._keyring.current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key that decrypts, sorted."""
        return self._keyring.ids

    def __repr__(self) -> str:
        return (
            f"EncryptionLayer({self._inner!r}, key_ids={list(self.key_ids)}, "
            f"current={self.current_key_id!r}, namespace={self._namespace!r})"
        )

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        return await call()  # the operations that carry no value pass through

    # -- sealing and opening ---------------------------------------------------------

    def _seal(self, key: str, plaintext: bytes) -> str:
        return self._keyring.seal(self._prefix + key, plaintext)

    def _open(
        self, operation: str, key: str, stored: str, *, plaintext_ok: bool
    ) -> tuple[str | None, str] | CacheError:
        """``(key id, plaintext)`` (key id ``None`` for plaintext) or why it does not open."""
        if stored.startswith(MAGIC):
            opened = self._keyring.open(self._prefix + key, stored)
            if isinstance(opened, tuple):
                return opened
            reason, message, key_id = opened.reason, opened.message, opened.key_id
        elif plaintext_ok:
            return None, stored
        else:
            reason, key_id = "plaintext", None
            message = (
                "stored value is not encrypted (written before encryption was enabled, or by "
                "another client); accept_plaintext=True reads it during a migration"
            )
        details = {"reason": reason} if key_id is None else {"reason": reason, "key_id": key_id}
        return CacheError.of(
            ErrorCode.SERIALIZATION, message, operation=operation, key=key, details=details
        )

    def _write(self, key: str, value: str, raw: bytes) -> str:
        return self._seal(key, raw)

    def _read(self, operation: str, key: str, stored: str) -> Result[str, CacheError]:
        opened = self._open(operation, key, stored, plaintext_ok=self._accept_plaintext)
        return Failure(opened) if isinstance(opened, CacheError) else Success(opened[1])

    # -- values: encrypt on the way in, decrypt on the way out -----------------------

    # -- counters: Redis adds plaintext ----------------------------------------------

    async def increment(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Refused unless ``allow_plaintext_counters``: a counter cannot be encrypted."""
        return await self._count("increment", key, amount)

    async def decrement(self, key: str, amount: int = 1) -> Result[int, CacheError]:
        """Refused unless ``allow_plaintext_counters``: a counter cannot be encrypted."""
        return await self._count("decrement", key, amount)

    async def _count(self, operation: str, key: str, amount: int) -> Result[int, CacheError]:
        checked = encode_key(operation, key, UNBOUNDED)
        if isinstance(checked, CacheError):
            return Failure(checked)
        if not self._allow_counters:
            return Failure(
                invalid(
                    operation,
                    key,
                    f"{operation} is refused by the encryption layer: Redis counts on "
                    "plaintext; pass allow_plaintext_counters=True to store counters "
                    "unencrypted",
                )
            )
        if operation == "increment":
            return await self._inner.increment(key, amount)
        return await self._inner.decrement(key, amount)

    # -- key rotation ----------------------------------------------------------------

    async def reencrypt(
        self, keys: Iterable[str], *, include_plaintext: bool = False
    ) -> Result[int, CacheError]:
        """Rewrite with the current key each value encrypted with another; return how many.

        Each value keeps its remaining TTL (read in whole seconds, rounded up). Missing
        keys and values already under the current key are skipped; so is plaintext,
        unless ``include_plaintext`` (a migration: never over counters, which would then
        stop counting). The value is read again after its TTL and skipped if it changed;
        a write landing between that read and the rewrite is still overwritten by the
        older value (the protocol has no compare-and-set): run it when writes are quiet,
        or accept a stale entry until its TTL. The first failure stops the run; its
        details tell how many keys were already rewritten.
        """
        rewritten = 0

        def stop(error: CacheError) -> Failure[CacheError]:
            return Failure(
                CacheError.of(
                    error.code,
                    f"{error.message} (after re-encrypting {rewritten} keys)",
                    operation="reencrypt",
                    key=error.key,
                    details={**error.details, "rewritten": rewritten},
                    maybe_applied=error.maybe_applied or rewritten > 0,
                    cause=error.cause,
                )
            )

        for key in keys:
            checked = encode_key("reencrypt", key, UNBOUNDED)
            if isinstance(checked, CacheError):
                return stop(checked)
            first = await self._inner.get(key)
            if isinstance(first, Failure):
                return stop(first.error)
            if first.value is None:
                continue
            opened = self._open("reencrypt", key, first.value, plaintext_ok=True)
            if isinstance(opened, CacheError):
                return stop(opened)
            key_id, plaintext = opened
            if key_id == self._keyring.current or (key_id is None and not include_plaintext):
                continue
            ttl = await self._inner.ttl(key)
            if isinstance(ttl, Failure):
                return stop(ttl.error)
            again = await self._inner.get(key)
            if isinstance(again, Failure):
                return stop(again.error)
            if again.value != first.value:
                continue  # rewritten or expired meanwhile: leave the newer state alone
            written = await self._inner.set(key, self._seal(key, plaintext.encode()), ttl.value)
            if isinstance(written, Failure):
                return stop(written.error)
            rewritten += 1
        return Success(rewritten)

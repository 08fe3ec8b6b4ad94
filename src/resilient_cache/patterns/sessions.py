"""SessionStore and TokenCache: session and provider-token helpers, made safe.

* :class:`SessionStore` keeps each session as a JSON object under ``session:{session_id}``,
  for 30 minutes by default; ``touch`` restarts that time (sliding expiry). Session ids
  are checked before use, and nothing here logs anything, session data least of all.
* :class:`TokenCache` keeps a provider's access token under
  ``provider:token:{provider}:{user_id}`` until ``refresh_margin`` seconds (default 300)
  before the token expires, so a cached token is never handed out about to expire. A token
  that expires within the margin is not stored at all (the common hand-written
  ``expires_in - 300`` becomes a TTL of zero or less there: no expiry, or an error).

Every method returns a ``Result`` like the protocol: a cache failure is a ``Failure``
(the caller reloads from its source of truth), never an exception; so is a bad id.

A session id and an access token are bearer credentials. Values never appear in logs,
errors or metrics, but keys do wherever keys show (``MONITOR``, ``SCAN``, the slow log,
``LoggingLayer(log_keys=True)``, ``CacheError.key``): pass ``key_hasher=KeyHasher(secret)``
to store sessions under a keyed hash of their id instead. Put an
:class:`~resilient_cache.EncryptionLayer` in the stack to keep session data and tokens
unreadable to whoever can read Redis.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Final

from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol, JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.validation import MAX_TTL_SECONDS, invalid
from resilient_cache.keys import cache_key

__all__ = ["SESSION_TTL", "TOKEN_REFRESH_MARGIN", "SessionStore", "TokenCache"]

SESSION_TTL: Final = 1800
"""Seconds a session lives without being saved or touched (30 minutes)."""

TOKEN_REFRESH_MARGIN: Final = 300
"""Seconds before its expiry that a cached token is dropped (5 minutes)."""

SESSION_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.~+/=-]{16,256}")
"""A session id: 16 to 256 characters of URL-safe or standard base64, hex or a UUID."""


def _seconds(setting: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_TTL_SECONDS:
        raise ConfigurationError(
            setting, f"must be a whole number of seconds from {low} to {MAX_TTL_SECONDS}"
        )
    return value


class SessionStore:
    """Sessions as JSON objects under ``session:{session_id}``, expiring after ``ttl``.

    Args:
        cache: any cache (the stack :func:`~resilient_cache.build_cache` returns).
        ttl: seconds a session lives after its last ``save`` or ``touch`` (default 1800).
        key_hasher: applied to the session id to make the key (e.g. a
            :class:`~resilient_cache.KeyHasher`), so that ids never show in key names.

    Raises:
        ConfigurationError: a bad ``ttl``.
    """

    def __init__(
        self,
        cache: CacheProtocol,
        *,
        ttl: int = SESSION_TTL,
        key_hasher: Callable[[str], str] | None = None,
    ) -> None:
        self._cache = cache
        self._ttl = _seconds("ttl", ttl, 1)
        self._hasher = key_hasher

    def __repr__(self) -> str:
        return f"SessionStore(ttl={self._ttl}, hashed_ids={self._hasher is not None})"

    @property
    def ttl(self) -> int:
        """Seconds a session lives after its last ``save`` or ``touch``."""
        return self._ttl

    @staticmethod
    def new_id() -> str:
        """A fresh session id: 256 random bits, URL-safe (``secrets.token_urlsafe(32)``)."""
        return secrets.token_urlsafe(32)

    def _key(self, operation: str, session_id: object) -> str | CacheError:
        if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
            # the id itself is never repeated: it is a credential
            return invalid(
                operation,
                None,
                "session id must be 16-256 characters of letters, digits and '_.~+/=-'",
            )
        shown = self._hasher(session_id) if self._hasher is not None else session_id
        return f"session:{shown}"

    async def get(self, session_id: str) -> Result[dict[str, JsonValue] | None, CacheError]:
        """The session's data, ``Success(None)`` if there is none (expired or never saved).

        Reading does not extend the session: call :meth:`touch` for that.
        """
        key = self._key("get_json", session_id)
        if isinstance(key, CacheError):
            return Failure(key)
        match await self._cache.get_json(key):
            case Failure() as failure:
                return failure
            case Success(None):
                return Success(None)
            case Success(dict() as data):
                return Success(data)
        return Failure(
            CacheError.of(
                ErrorCode.SERIALIZATION,
                "stored session is not a JSON object",
                operation="get_json",
                key=key,
            )
        )

    async def save(
        self, session_id: str, data: Mapping[str, JsonInput]
    ) -> Result[None, CacheError]:
        """Store the session's data (a JSON object), replacing it; its TTL starts again."""
        key = self._key("set_json", session_id)
        if isinstance(key, CacheError):
            return Failure(key)
        if not isinstance(data, Mapping):
            message = f"session data must be a mapping, got {type(data).__name__}"
            return Failure(invalid("set_json", key, message))
        return await self._cache.set_json(key, data, ttl=self._ttl)

    async def touch(self, session_id: str) -> Result[bool, CacheError]:
        """Restart the session's TTL; ``Success(False)`` if the session does not exist."""
        key = self._key("expire", session_id)
        if isinstance(key, CacheError):
            return Failure(key)
        return await self._cache.expire(key, self._ttl)

    async def delete(self, session_id: str) -> Result[bool, CacheError]:
        """End the session; ``Success(True)`` if it existed."""
        key = self._key("delete", session_id)
        if isinstance(key, CacheError):
            return Failure(key)
        return await self._cache.delete(key)


class TokenCache:
    """Provider access tokens under ``provider:token:{provider}:{user_id}``.

    A token valid for ``expires_in`` seconds is cached for ``expires_in - refresh_margin``
    seconds, so :meth:`get` never returns one that expires within the margin: the caller
    refreshes it in time. One that expires within the margin is not cached at all.

    Args:
        cache: any cache (the stack :func:`~resilient_cache.build_cache` returns).
        refresh_margin: seconds before expiry to stop handing a token out (default 300).

    Raises:
        ConfigurationError: a bad ``refresh_margin``.
    """

    def __init__(self, cache: CacheProtocol, *, refresh_margin: int = TOKEN_REFRESH_MARGIN) -> None:
        self._cache = cache
        self._margin = _seconds("refresh_margin", refresh_margin, 0)

    def __repr__(self) -> str:
        return f"TokenCache(refresh_margin={self._margin})"

    @property
    def refresh_margin(self) -> int:
        """Seconds before expiry that a token is no longer handed out."""
        return self._margin

    def ttl_for(self, expires_in: float) -> int | None:
        """The TTL a token valid for ``expires_in`` seconds is cached with; ``None``: not cached.

        ``expires_in - refresh_margin``, rounded down, never below 1 second: a token
        that expires within the margin (or has expired) gets ``None``.
        """
        ttl = math.floor(expires_in - self._margin)
        return min(ttl, MAX_TTL_SECONDS) if ttl >= 1 else None

    @staticmethod
    def _key(operation: str, provider: str, user_id: str | int) -> str | CacheError:
        try:
            return cache_key("provider", "token", provider, user_id)
        except (TypeError, ValueError) as exc:
            return invalid(operation, None, f"provider and user_id: {exc}")

    async def get(self, provider: str, user_id: str | int) -> Result[str | None, CacheError]:
        """The cached token, or ``Success(None)``: none, or it expires within the margin."""
        key = self._key("get", provider, user_id)
        if isinstance(key, CacheError):
            return Failure(key)
        return await self._cache.get(key)

    async def save(
        self, provider: str, user_id: str | int, token: str, expires_in: float
    ) -> Result[bool, CacheError]:
        """Cache ``token``, valid for ``expires_in`` seconds (the provider's ``expires_in``).

        Returns ``Success(True)`` when it was cached (for :meth:`ttl_for` seconds), and
        ``Success(False)`` when it expires within the refresh margin: it is not cached,
        and a token cached earlier for the same provider and user is removed (it has been
        replaced).
        """
        key = self._key("set", provider, user_id)
        if isinstance(key, CacheError):
            return Failure(key)
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not math.isfinite(expires_in)
        ):
            message = f"expires_in must be a number of seconds, got {type(expires_in).__name__}"
            return Failure(invalid("set", key, message))
        ttl = self.ttl_for(expires_in)
        if ttl is None:
            return (await self._cache.delete(key)).map(lambda _: False)
        return (await self._cache.set(key, token, ttl=ttl)).map(lambda _: True)

    async def delete(self, provider: str, user_id: str | int) -> Result[bool, CacheError]:
        """Forget the token (e.g. revoked); ``Success(True)`` if one was cached."""
        key = self._key("delete", provider, user_id)
        if isinstance(key, CacheError):
            return Failure(key)
        return await self._cache.delete(key)

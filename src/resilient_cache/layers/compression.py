"""CompressionLayer: large values compressed (zstd, or zlib from the stdlib) before storing.

zstd needs the optional ``zstandard`` package (``pip install 'resilient-cache[compression]'``),
imported when a layer is built, never at import time; zlib needs nothing.

Stored forms (``str`` like every value of the protocol)::

    <value>               a plain value: stored as is (old data stays readable)
    z1:zstd:<base64>      a compressed value: zstd frame (with its checksum), base64
    z1:zlib:<base64>      a compressed value: zlib stream (with its Adler-32), base64
    z1:raw:<value>        the escape: a plain value that itself starts with ``z1:``

A value is compressed when it is longer than ``threshold`` UTF-8 bytes AND its envelope is
shorter than the value (base64 costs 4/3: text that compresses less than 25% is stored
plain). Reads understand both algorithms whatever ``algorithm`` writes, so switching from
one to the other, or enabling compression on a cache with data, needs no migration; only
``z1:zstd:`` values need ``zstandard`` to be read.

What each operation does:

==========================  =========================================================
operation                   behaviour
==========================  =========================================================
set, set_json, set_many     compress (above the threshold, when it pays), then store
get, get_json, get_many     decompress an envelope; a plain value is returned as is
increment, decrement,       passed through (counters are short: stored plain)
delete, exists, expire,
ttl, flush, ping,
delete_pattern, run_script
==========================  =========================================================

A stored value starting with ``z1:`` that does not decompress is a ``SERIALIZATION``
failure, never returned: bad base64, an unknown algorithm, a corrupt or truncated frame
(the checksums catch flipped bits), a result that is not UTF-8, or a result larger than
``max_value_bytes`` (the decompression-bomb guard: zlib stops there; a zstd frame's stated
size is checked before decompressing, and a frame without one is refused). Callers such
as :func:`~resilient_cache.get_or_set` treat it as a miss and overwrite it. In
``get_many`` one such value fails the whole batch, like the encryption layer.

Sizes: the inner cache checks its limits on the STORED form (the envelope), so a large but
compressible value may fit where its plain form would not. This layer refuses
(``VALIDATION``) values larger than ``max_value_bytes`` uncompressed, so that it never
writes what it would refuse to read back.

Order with :class:`~resilient_cache.EncryptionLayer`: compression OUTSIDE encryption
(``CompressionLayer(EncryptionLayer(adapter, ...))``): compress, then encrypt; ciphertext
does not compress. Caveat (CRIME/BREACH): the length of a compressed value tells how much
its parts repeat each other, so a value mixing a secret with attacker-chosen text lets an
attacker who sees stored sizes guess the secret byte by byte; do not compress such values.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.validation import (
    DEFAULT_LIMITS,
    Limits,
)
from resilient_cache.layers._codec import ValueCodecLayer
from resilient_cache.layers.base import Call

if TYPE_CHECKING:
    import zstandard

__all__ = ["CompressionLayer"]

T = TypeVar("T")

MAGIC: Final = "z1:"
"""How every stored form other than a plain value starts."""
ESCAPE: Final = MAGIC + "raw:"
INSTALL: Final = "pip install 'resilient-cache[compression]'"
LEVELS: Final = {"zstd": (-131072, 22, 3), "zlib": (1, 9, 6)}
"""Per algorithm: the lowest and highest level, and the default."""

Algorithm = Literal["auto", "zstd", "zlib"]


# Sizes are the inner cache's to check, on the stored form: only type/emptiness/UTF-8 here.
class _Corrupt(Exception):
    """Why a stored envelope did not decompress: a ``reason`` token and a message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class CompressionLayer(ValueCodecLayer):
    """Compresses values larger than ``threshold`` bytes (see the module docstring).

    Args:
        inner: the cache to store values in (an :class:`~resilient_cache.EncryptionLayer`,
            if any, goes INSIDE this one).
        threshold: values of more than this many UTF-8 bytes are compressed (``>= 0``).
        algorithm: ``"zstd"``, ``"zlib"``, or ``"auto"`` (zstd if ``zstandard`` is
            installed, else zlib) for new values; reads understand both.
        level: the compression level (zstd -131072..22, default 3; zlib 1..9, default 6).
        max_value_bytes: the largest value, uncompressed, written or decompressed (the
            decompression-bomb guard); default 1 MiB like :class:`~resilient_cache.Limits`.

    Raises:
        ConfigurationError: ``algorithm="zstd"`` without ``zstandard`` installed, or a bad
            threshold, algorithm, level or max_value_bytes (the setting is named).

    Like the rest of a stack, one layer serves one event loop: its zstd contexts are not
    for concurrent use from several threads.
    """

    name = "compression"
    verb = "decompress"

    def __init__(
        self,
        inner: CacheProtocol,
        *,
        threshold: int = 1024,
        algorithm: Algorithm = "auto",
        level: int | None = None,
        max_value_bytes: int = DEFAULT_LIMITS.max_value_bytes,
    ) -> None:
        try:  # the optional dependency, imported only when a layer is built
            import zstandard  # noqa: PLC0415
        except ImportError:
            zstd = False
        else:
            zstd = True
        if algorithm == "auto":
            algorithm = "zstd" if zstd else "zlib"
        if algorithm not in LEVELS:
            raise ConfigurationError(
                "compression.algorithm", f"must be 'auto', 'zstd' or 'zlib', got {algorithm!r}"
            )
        if algorithm == "zstd" and not zstd:
            raise ConfigurationError(
                "compression.algorithm", f"'zstd' needs the 'zstandard' package: {INSTALL}"
            )
        low, high, default = LEVELS[algorithm]
        level = default if level is None else level
        if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
            raise ConfigurationError(
                "compression.level", f"must be an int from {low} to {high} for {algorithm}"
            )
        for setting, value, minimum in (
            ("threshold", threshold, 0),
            ("max_value_bytes", max_value_bytes, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigurationError(
                    f"compression.{setting}", f"must be an int >= {minimum}, got {value!r}"
                )
        super().__init__(inner)
        self._threshold = threshold
        self._algorithm: Literal["zstd", "zlib"] = algorithm
        self._level = level
        self._max = max_value_bytes
        self.value_limits = Limits(
            max_key_bytes=2**62, max_value_bytes=max_value_bytes,
            max_batch_keys=2**62, max_batch_bytes=2**62,
        )  # fmt: skip
        self._zstd: zstandard.ZstdCompressor | None = None
        self._unzstd: zstandard.ZstdDecompressor | None = None
        if zstd:
            self._unzstd = zstandard.ZstdDecompressor()
            if algorithm == "zstd":
                self._zstd = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._compress: Callable[[bytes], bytes] = (
            self._zstd.compress if self._zstd is not None else self._zlib_compress
        )

    @property
    def algorithm(self) -> Literal["zstd", "zlib"]:
        """The algorithm that compresses new values (``"auto"`` resolved)."""
        return self._algorithm

    @property
    def threshold(self) -> int:
        """Values of more than this many UTF-8 bytes are compressed."""
        return self._threshold

    def __repr__(self) -> str:
        return (
            f"CompressionLayer({self._inner!r}, threshold={self._threshold}, "
            f"algorithm={self._algorithm!r}, level={self._level})"
        )

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        return await call()  # the operations that carry no value pass through

    # -- the stored form ---------------------------------------------------------------

    def _zlib_compress(self, raw: bytes) -> bytes:
        return zlib.compress(raw, self._level)

    def _write(self, key: str, value: str, raw: bytes) -> str:
        return self._encode(value, raw)

    def _encode(self, value: str, raw: bytes) -> str:
        """The stored form of ``value`` (``raw``: its UTF-8 bytes)."""
        if len(raw) > self._threshold:
            body = base64.b64encode(self._compress(raw))
            header = f"{MAGIC}{self._algorithm}:"
            if len(header) + len(body) < len(raw):
                return header + body.decode("ascii")
        return ESCAPE + value if value.startswith(MAGIC) else value

    def _decode(self, stored: str) -> str:
        """The value a stored form holds.

        Raises:
            _Corrupt: an envelope that does not decompress (the caller makes it a Failure).
        """
        if not stored.startswith(MAGIC):
            return stored
        if stored.startswith(ESCAPE):
            return stored[len(ESCAPE) :]
        algorithm, sep, body = stored[len(MAGIC) :].partition(":")
        if not sep or algorithm not in LEVELS:
            raise _Corrupt("malformed", "stored value is a malformed compression envelope")
        try:
            packed = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Corrupt("base64", "stored value's compressed data is not valid base64") from exc
        raw = self._unzstd_bounded(packed) if algorithm == "zstd" else self._unzlib_bounded(packed)
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise _Corrupt("utf8", "stored value decompressed to bytes that are not UTF-8") from exc

    def _too_large(self) -> _Corrupt:
        return _Corrupt(
            "too_large",
            f"stored value decompresses to more than max_value_bytes={self._max} "
            "(decompression stopped there)",
        )

    def _unzlib_bounded(self, packed: bytes) -> bytes:
        stream = zlib.decompressobj()
        try:
            raw = stream.decompress(packed, self._max + 1)
        except zlib.error as exc:
            raise _Corrupt("corrupt", "stored value's zlib data is corrupt") from exc
        if len(raw) > self._max:
            raise self._too_large()
        if not stream.eof or stream.unused_data or stream.unconsumed_tail:
            raise _Corrupt("corrupt", "stored value's zlib data is truncated or has extra bytes")
        return raw

    def _unzstd_bounded(self, packed: bytes) -> bytes:
        if self._unzstd is None:
            raise _Corrupt(
                "unavailable", f"stored value is zstd-compressed; reading it needs {INSTALL}"
            )
        import zstandard  # noqa: PLC0415  (present: _unzstd exists)

        try:
            size = zstandard.frame_content_size(packed)
        except zstandard.ZstdError as exc:
            raise _Corrupt("corrupt", "stored value's zstd data is corrupt") from exc
        if size < 0:  # this layer always writes it: the bound is checked before decompressing
            raise _Corrupt("corrupt", "stored value's zstd frame does not state its size")
        if size > self._max:
            raise self._too_large()
        try:  # allocates the stated size; a frame that does not match it is an error
            return self._unzstd.decompress(packed)
        except zstandard.ZstdError as exc:
            raise _Corrupt("corrupt", "stored value's zstd data is corrupt") from exc

    def _read(self, operation: str, key: str, stored: str) -> Result[str, CacheError]:
        try:
            return Success(self._decode(stored))
        except _Corrupt as corrupt:
            return Failure(
                CacheError.of(
                    ErrorCode.SERIALIZATION,
                    corrupt.message,
                    operation=operation,
                    key=key,
                    details={"reason": corrupt.reason},
                    cause=corrupt.__cause__,
                )
            )

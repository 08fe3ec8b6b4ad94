"""The stored form of a ``@cached`` entry: one string, a version, the XFetch facts, the value.

::

    cached:v1:<expires_at>:<delta>:v:<payload>    a value; <payload> is the serializer's text
    cached:v1:<expires_at>:<delta>:n:             "not found" (negative caching)

* ``expires_at``: when the entry expires, seconds on the decorator's clock (wall-clock Unix
  time by default), 3 decimals. Stored so that a hit knows its expiry without a second
  round trip (``TTL``); Redis expires the key at the same moment through the write's TTL.
* ``delta``: how long computing the value took, seconds, 6 decimals (XFetch's delta).
* ``v``/``n``: the kind. A negative entry has no payload at all, so no value, whatever its
  serializer writes, can be mistaken for "not found", nor the other way round.
* ``<payload>``: verbatim, the rest of the string (it may contain ``:``).

Like the encryption envelope (``enc:v1:...``) it is plain text with a version: a future
format gets ``v2`` and readers of ``v1`` treat it as a miss. Anything that does not parse is
a miss as well, so a foreign or corrupt value is recomputed and overwritten, never served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["MAGIC", "Entry", "decode_entry", "encode_entry"]

MAGIC: Final = "cached:v1:"
_VALUE: Final = "v"
_NOT_FOUND: Final = "n"


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded entry; ``payload`` is ``None`` for a cached "not found"."""

    payload: str | None
    expires_at: float
    delta: float


def encode_entry(entry: Entry) -> str:
    """The stored text of ``entry``."""
    kind, payload = (_NOT_FOUND, "") if entry.payload is None else (_VALUE, entry.payload)
    return f"{MAGIC}{entry.expires_at:.3f}:{entry.delta:.6f}:{kind}:{payload}"


def decode_entry(text: str) -> Entry | None:
    """The entry stored as ``text``, or ``None`` when it is not one (a miss)."""
    if not text.startswith(MAGIC):
        return None
    fields = text[len(MAGIC) :].split(":", 3)
    if len(fields) != 4:
        return None
    expires, delta, kind, payload = fields
    try:
        expires_at, took = float(expires), float(delta)
    except ValueError:
        return None
    if not (math.isfinite(expires_at) and math.isfinite(took) and took >= 0):
        return None
    if kind == _VALUE:
        return Entry(payload, expires_at, took)
    if kind == _NOT_FOUND and not payload:
        return Entry(None, expires_at, took)
    return None

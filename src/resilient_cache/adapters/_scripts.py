"""How RedisAdapter runs a :class:`CacheScript`: EVALSHA, then EVAL on NOSCRIPT.

Kept out of redis_adapter.py, and free of any ``redis`` import: the adapter hands over its
one-command sender (which maps every exception to a :class:`CacheError`) and a test that
tells a ``NOSCRIPT`` error reply from the others.

* **One round trip** in the normal case: ``EVALSHA <sha1> <numkeys> <keys...> <args...>``.
* **NOSCRIPT**: Redis forgot the script (a restart, a failover, ``SCRIPT FLUSH``). That is an
  error reply: the script did not run, so sending ``EVAL <source> ...`` is safe, and also
  caches it in Redis again for the next ``EVALSHA``. This costs a second round trip, each
  bounded by the adapter's ``operation_timeout`` (in the built stack, both by the deadline).
* **Honest failures**: a run is a write (``maybe_applied`` once it may have left), and an
  error raised inside the script (Redis appends ``script: <sha1>, on @user_script:<line>``
  to it) says ``maybe_applied`` too: writes made before it are not rolled back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.scripts import (
    OPERATION,
    CacheScript,
    ScriptArg,
    ScriptReply,
    check_script_call,
)
from resilient_cache.domain.validation import Limits

Send = Callable[..., Awaitable[Any]]
"""The adapter's ``_call(operation, key, *command, write=...)``: a reply or a CacheError."""

_INSIDE_SCRIPT: Final = "@user_script"


async def run_script(
    script: CacheScript,
    keys: Sequence[str],
    args: Sequence[ScriptArg],
    *,
    send: Send,
    is_noscript: Callable[[CacheError], bool],
    prefix: bytes,
    limits: Limits,
) -> Result[ScriptReply, CacheError]:
    """Run ``script`` on ``keys`` (namespaced with ``prefix``) with ``args``; never raises."""
    checked = check_script_call(script, keys, args, limits)
    if isinstance(checked, CacheError):
        return Failure(checked)
    encoded, arguments = checked
    key = encoded[0][0] if encoded else None
    tail = (len(encoded), *(prefix + raw for _, raw in encoded), *arguments)
    reply = await send(OPERATION, key, "EVALSHA", script.sha1, *tail, write=True)
    if isinstance(reply, CacheError) and is_noscript(reply):
        reply = await send(OPERATION, key, "EVAL", script.source, *tail, write=True)
    if isinstance(reply, CacheError):
        if _INSIDE_SCRIPT in reply.message and not reply.maybe_applied:
            reply = replace(reply, maybe_applied=True, retryable=False)
        return Failure(reply)
    return _decoded(reply, key)


def _decoded(reply: Any, key: str | None) -> Result[ScriptReply, CacheError]:
    try:
        return Success(_decode(reply))
    except UnicodeDecodeError as exc:
        error = CacheError.of(
            ErrorCode.SERIALIZATION,
            "the script's reply is not valid UTF-8",
            operation=OPERATION,
            key=key,
            cause=exc,
        )
    except TypeError as exc:
        error = CacheError.of(ErrorCode.BACKEND, str(exc), operation=OPERATION, key=key, cause=exc)
    return Failure(error)


def _decode(reply: Any) -> ScriptReply:
    """Redis's reply as a :data:`ScriptReply`: bulk strings decoded, Lua's true as 1."""
    if reply is None or isinstance(reply, str):
        return reply
    if isinstance(reply, bool):
        return int(reply)
    if isinstance(reply, int):
        return reply
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, Sequence):
        return [_decode(item) for item in reply]
    raise TypeError(f"unexpected script reply of type {type(reply).__name__}")

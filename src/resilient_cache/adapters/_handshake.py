"""What redis-py sends when it opens a connection, kept to what the cache needs.

redis-py's handshake is AUTH (or HELLO), ``CLIENT SETNAME`` when a client name is given,
``SELECT`` for a database other than 0, and by default two more things the adapters turn off:

* ``CLIENT SETINFO`` (the library's name and version, Redis 7.2+ and Valkey): the
  least-privilege ACL of :func:`resilient_cache.acl.acl_rules` refuses it, which puts an
  ``ACL LOG`` entry on the server for every new connection, and Redis 7.0 refuses
  ``+client|setinfo`` in a rule. The ``client_name`` option names the connections instead.
* ``CLIENT MAINT_NOTIFICATIONS`` (redis-py 8, on RESP3 connections): Redis 6.2 logs it as
  refused too, and the adapters drop push messages that wait on an idle connection
  (``went_away``), so the notifications it asks for would not be acted on.

Both also save a round trip per new connection. How to say so changed across redis-py
releases (``lib_name``/``lib_version=None``, then ``driver_info=None``, which some releases
turned back into the defaults), so the arguments are chosen by what a connection built with
them would announce, not by the version number.
"""

from __future__ import annotations

import warnings
from typing import Any, Final

from redis.asyncio.connection import Connection

_CANDIDATES: Final[tuple[dict[str, Any], ...]] = (
    {"driver_info": None},  # redis-py 8
    {"lib_name": None, "lib_version": None},  # redis-py 5 to 7
)


def announces(connection: Any) -> bool:
    """Whether ``connection`` would send ``CLIENT SETINFO`` when it connects."""
    info = getattr(connection, "driver_info", None)
    if info is not None:
        return bool(getattr(info, "formatted_name", None) or getattr(info, "lib_version", None))
    return bool(getattr(connection, "lib_name", None) or getattr(connection, "lib_version", None))


def _quiet(kwargs: dict[str, Any]) -> bool:
    """Whether a connection built with ``kwargs`` announces nothing (no I/O: it is only
    built, never connected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lib_name/lib_version are deprecated in redis-py 8
        try:
            return not announces(Connection(**kwargs))
        except TypeError:  # an argument this redis-py does not take
            return False


def _plain() -> dict[str, Any]:
    chosen = next((kwargs for kwargs in _CANDIDATES if _quiet(kwargs)), {})
    try:
        from redis.maint_notifications import MaintNotificationsConfig  # noqa: PLC0415
    except ImportError:  # redis-py 7 and older: no such notifications
        return dict(chosen)
    return {**chosen, "maint_notifications_config": MaintNotificationsConfig(enabled=False)}


PLAIN_HANDSHAKE: Final[dict[str, Any]] = _plain()
"""redis-py connection arguments for a handshake without ``CLIENT SETINFO`` and
``CLIENT MAINT_NOTIFICATIONS`` (empty where this redis-py cannot be told)."""

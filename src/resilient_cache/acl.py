"""The least-privilege Redis ACL for the cache's user: the commands the library sends, no more.

Give the application a Redis user of its own, allowed exactly these commands on exactly its
namespace's keys::

    ACL SETUSER cache on >PASSWORD <the output of acl_rules("app")>

and build the cache with ``namespace="app"`` and that user's name and password. The library
then works as usual, and a leaked password cannot flush the server, read, write or delete
other applications' keys, select another database, or reconfigure Redis: ``flush()`` and
``delete_pattern()`` delete with ``SCAN`` + ``UNLINK`` inside the namespace, never
``FLUSHDB``, ``FLUSHALL`` or ``KEYS``.

What Redis cannot confine, said exactly (tests/test_acl.py checks each against a real
server): ``SCAN`` returns every key *name* of the database whatever the key patterns, so
with ``+scan`` a leaked password can list other applications' key names (not read their
values); ``acl_rules(..., scan=False)`` leaves ``SCAN`` out, and ``flush()`` and
``delete_pattern()`` then fail with ``AUTH``. With the near cache's rules, ``CLIENT
TRACKING ... BCAST`` is accepted with any ``PREFIX`` or none, so a leaked password can watch
the names of keys written anywhere in the database, live (Redis 7 does not check tracking
prefixes against key patterns).

Scripts (``run_script``, which :class:`~resilient_cache.patterns.ratelimit.RateLimiter`
uses) need ``EVALSHA`` and ``EVAL``. They add no reach: Redis checks the keys a script is
given, and every command it runs, against these same rules, so a script can touch only
``<namespace>:*`` keys with only the commands listed here. What they do add is CPU: a
leaked password could run a long Lua loop, which blocks Redis until it ends or an
administrator runs ``SCRIPT KILL``.
"""

from __future__ import annotations

from typing import Final

from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.validation import check_namespace

LIBRARY_COMMANDS: Final = (
    "get", "mget", "set", "mset", "multi", "exec",  # reads, writes, set_many with a TTL
    "exists", "expire", "pttl", "incrby", "decrby", "unlink",
    "scan",  # delete_pattern and flush: SCAN MATCH <namespace>:* then UNLINK
    "ping",  # ping() and the connection health check
    "client|setname",  # the client_name option
    "evalsha", "eval",  # run_script: EVALSHA, and EVAL when Redis does not know the script
    "pexpire", "time", "zadd", "zcard", "zrange", "zremrangebyscore",  # rate-limit scripts
)  # fmt: skip
"""Every Redis command the library sends, or runs in its scripts (``AUTH`` is always allowed),
but ``SELECT``: :func:`acl_rules` allows ``SELECT`` of the one database the cache uses, when
it is not 0 (redis-py selects nothing for database 0).

The adapters do not let redis-py announce itself with ``CLIENT SETINFO`` (Redis 7.2 and
later, Valkey): these rules would refuse it, an ``ACL LOG`` entry for every new connection,
and Redis 7.0 refuses ``+client|setinfo`` in a rule. The ``client_name`` option
(``CLIENT SETNAME``) names the connections instead.
"""


NEAR_CACHE_RULES: Final = "+client|id +client|tracking +subscribe &__redis__:invalidate"
"""What the near cache's invalidation channel adds: client tracking and its channel."""


def acl_rules(
    namespace: str | None, *, db: int = 0, near_cache: bool = False, scan: bool = True
) -> str:
    """The ACL rules for the cache's user, for ``ACL SETUSER <user> on ><password> <rules>``.

    ``namespace`` confines the user to the keys ``<namespace>:*``; without one (``None``)
    the user may touch every key of its database, so give the cache a namespace. ``db``:
    the database the cache uses; a database other than 0 adds ``+select|<db>``, which
    allows selecting that one alone. ``near_cache``: also what the near cache's channel
    needs (:data:`NEAR_CACHE_RULES`). ``scan=False`` leaves out ``SCAN`` (which lists every
    key name of the database, see the module docstring): ``flush()`` and
    ``delete_pattern()`` then fail with ``AUTH``.

    >>> acl_rules("app")
    'resetkeys ~app:* resetchannels -@all +get +mget +set +mset +multi +exec +exists +expire \
+pttl +incrby +decrby +unlink +scan +ping +client|setname +evalsha +eval +pexpire +time \
+zadd +zcard +zrange +zremrangebyscore'

    Raises:
        ConfigurationError: an invalid namespace or ``db``.
    """
    keys = f"~{check_namespace(namespace)}:*" if namespace is not None else "~*"
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise ConfigurationError("db", f"must be a database number >= 0, got {db!r}")
    allowed = [c for c in LIBRARY_COMMANDS if scan or c != "scan"]
    if db:
        allowed.append(f"select|{db}")
    rules = f"resetkeys {keys} resetchannels -@all " + " ".join(f"+{c}" for c in allowed)
    return f"{rules} {NEAR_CACHE_RULES}" if near_cache else rules

"""The least-privilege Redis ACL for the cache's user: the commands the library sends, no more.

Give the application a Redis user of its own, allowed exactly these commands on exactly its
namespace's keys::

    ACL SETUSER cache on >PASSWORD <the output of acl_rules("app")>

and build the cache with ``namespace="app"`` and that user's name and password. The library
then works as usual, and a leaked password cannot flush the server, list or read other
applications' keys, or reconfigure Redis: ``flush()`` and ``delete_pattern()`` delete with
``SCAN`` + ``UNLINK`` inside the namespace, never ``FLUSHDB``, ``FLUSHALL`` or ``KEYS``.

Scripts (``run_script``, which :class:`~resilient_cache.patterns.ratelimit.RateLimiter`
uses) need ``EVALSHA`` and ``EVAL``. They add no reach: Redis checks the keys a script is
given, and every command it runs, against these same rules, so a script can touch only
``<namespace>:*`` keys with only the commands listed here. What they do add is CPU: a
leaked password could run a long Lua loop, which blocks Redis until it ends or an
administrator runs ``SCRIPT KILL``.
"""

from __future__ import annotations

from typing import Final

from resilient_cache.domain.validation import check_namespace

LIBRARY_COMMANDS: Final = (
    "get", "mget", "set", "mset", "multi", "exec",  # reads, writes, set_many with a TTL
    "exists", "expire", "pttl", "incrby", "decrby", "unlink",
    "scan",  # delete_pattern and flush: SCAN MATCH <namespace>:* then UNLINK
    "ping",  # ping() and the connection health check
    "select",  # a database other than 0
    "client|setname",  # the client_name option
    "evalsha", "eval",  # run_script: EVALSHA, and EVAL when Redis does not know the script
    "pexpire", "time", "zadd", "zcard", "zrange", "zremrangebyscore",  # rate-limit scripts
)  # fmt: skip
"""Every Redis command the library sends, or runs in its scripts (``AUTH`` is always allowed).

redis-py also announces its name with ``CLIENT SETINFO`` on Redis 7.2 and later; refused
here, it ignores the refusal (add ``+client|setinfo`` to see the library in
``CLIENT LIST``, at the cost of an ACL entry that Redis 7.0 does not know).
"""


NEAR_CACHE_RULES: Final = "+client|id +client|tracking +subscribe &__redis__:invalidate"
"""What the near cache's invalidation channel adds: client tracking and its channel."""


def acl_rules(namespace: str | None, *, near_cache: bool = False) -> str:
    """The ACL rules for the cache's user, for ``ACL SETUSER <user> on ><password> <rules>``.

    ``namespace`` confines the user to the keys ``<namespace>:*``; without one (``None``)
    the user may touch every key of the databases it can select, so give the cache a
    namespace. ``near_cache``: also what the near cache's channel needs
    (:data:`NEAR_CACHE_RULES`).

    >>> acl_rules("app")
    'resetkeys ~app:* resetchannels -@all +get +mget +set +mset +multi +exec +exists +expire \
+pttl +incrby +decrby +unlink +scan +ping +select +client|setname +evalsha +eval +pexpire \
+time +zadd +zcard +zrange +zremrangebyscore'

    Raises:
        ConfigurationError: an invalid namespace.
    """
    keys = f"~{check_namespace(namespace)}:*" if namespace is not None else "~*"
    commands = " ".join(f"+{command}" for command in LIBRARY_COMMANDS)
    rules = f"resetkeys {keys} resetchannels -@all {commands}"
    return f"{rules} {NEAR_CACHE_RULES}" if near_cache else rules

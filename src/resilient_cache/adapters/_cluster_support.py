"""What RedisClusterAdapter needs besides its methods: settings, error classes, slot groups.

* :func:`parse_seeds` and :func:`cluster_settings` turn ``"host:port"`` seeds or a URL and
  the :class:`RedisOptions`-like options into ``RedisCluster`` arguments, with the same
  checks (and the same :class:`ConfigurationError` messages) as ``RedisAdapter.from_url``.
* :func:`classify` maps a redis-py cluster exception to an :class:`ErrorCode`: the
  cluster-specific ones first, then RedisAdapter's table, unchanged.
* :func:`not_sent` tells a failure that happened before the command could leave.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

from redis import exceptions as rx
from redis.asyncio.connection import SSLConnection, parse_url
from redis.crc import key_slot

from resilient_cache.adapters.redis_adapter import _EXCEPTION_TABLE
from resilient_cache.adapters.redis_options import RedisOptions, pool_settings, redact_url
from resilient_cache.domain.errors import ConfigurationError, ErrorCode

T = TypeVar("T")

DEFAULT_PORT: Final = 6379
_MAX_PORT: Final = 65535

# redis-py's pool arguments that a RedisCluster does not take (``timeout`` is pool_timeout)
_POOL_ONLY: Final = ("timeout", "db")

# Lua: SET every KEYS[i] to ARGV[i] with the TTL in the last ARGV, as one atomic step.
# Legacy (no shebang) scripts are checked for OOM at their first write, before anything
# is written, so a refusal writes nothing; every key is in one slot (Redis checks it).
SET_WITH_TTL: Final = (
    "local ttl = ARGV[#ARGV] "
    "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i], 'EX', ttl) end "
    "return #KEYS"
)


# -- settings --------------------------------------------------------------------------


def parse_seeds(nodes: object) -> list[tuple[str, int]]:
    """``["host:port", "[::1]:7000", "host"]`` as ``(host, port)`` pairs (port 6379 if none).

    Raises:
        ConfigurationError: not a non-empty list of such strings (setting ``nodes``).
    """
    if isinstance(nodes, str | bytes) or not isinstance(nodes, Sequence) or not nodes:
        raise ConfigurationError(
            "nodes", f"must be a non-empty list of 'host:port' seeds, got {nodes!r}"
        )
    seeds: list[tuple[str, int]] = []
    for node in nodes:
        if not isinstance(node, str) or not node.strip() or "/" in node or "@" in node:
            raise ConfigurationError(
                "nodes", f"each seed must be 'host:port' (no scheme, no credentials), got {node!r}"
            )
        text = node.strip()
        if text.startswith("["):  # [ipv6]:port
            host, _, rest = text[1:].partition("]")
            port_text = rest.removeprefix(":") if rest.startswith(":") else rest
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:  # a bare host, or a bare IPv6 address
            host, port_text = text, ""
        if not port_text:
            port_text = str(DEFAULT_PORT)
        if not host or not port_text.isdigit() or not 0 < int(port_text) <= _MAX_PORT:
            raise ConfigurationError(
                "nodes", f"seed {node!r}: expected 'host:port' with a port from 1 to 65535"
            )
        seeds.append((host, int(port_text)))
    return seeds


def netloc(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cluster_settings(url: str, options: Mapping[str, Any]) -> tuple[RedisOptions, dict[str, Any]]:
    """Check ``options`` (the fields of :class:`RedisOptions` that make sense on a cluster)
    against ``url`` (one seed, ``redis://`` or ``rediss://``); return them as ``RedisCluster``
    keyword arguments (``ssl=True`` for ``rediss://``).

    Raises:
        ConfigurationError: an unknown or unsupported option, a bad value, a bad URL.
    """
    if options.get("db") not in (None, 0):
        raise ConfigurationError("db", "Redis Cluster has only database 0")
    if options.get("pool_timeout") is not None:
        raise ConfigurationError(
            "pool_timeout",
            "not supported on a cluster: redis-py never queues for a connection; a node "
            "whose max_connections are all in use fails the call at once (CONNECTION)",
        )
    if options.get("coalesce_reads"):
        raise ConfigurationError("coalesce_reads", "not supported by RedisClusterAdapter")
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme == "unix":
        raise ConfigurationError("url", "Redis Cluster does not run on unix sockets")
    opts, kwargs = pool_settings(url, options)
    path = urlsplit(url).path.strip("/")
    if path not in ("", "0"):
        raise ConfigurationError(
            "url", f"Redis Cluster has only database 0, got {redact_url(url)!r}"
        )
    for name in _POOL_ONLY:
        kwargs.pop(name, None)
    if scheme == "rediss":
        kwargs["ssl"] = True
    return opts, kwargs


def url_seed(url: str, secrets: Iterable[str | None]) -> tuple[tuple[str, int], dict[str, Any]]:
    """The seed and the credentials of a ``redis://``/``rediss://`` URL (already checked).

    Raises:
        ConfigurationError: a URL redis-py cannot parse (the message shows no password).
    """
    try:
        parsed: dict[str, Any] = dict(parse_url(url))
    except (ValueError, TypeError) as exc:
        message = str(exc)
        for secret in (*secrets, urlsplit(url).password):
            if secret:
                message = message.replace(secret, "***").replace(unquote(secret), "***")
        raise ConfigurationError("url", f"{message} ({redact_url(url)})") from None
    if parsed.pop("connection_class", None) is SSLConnection:
        parsed["ssl"] = True
    host = str(parsed.pop("host", None) or "localhost")
    port = int(parsed.pop("port", None) or DEFAULT_PORT)
    credentials = {k: parsed[k] for k in ("username", "password") if parsed.get(k)}
    return (host, port), credentials


# -- errors ----------------------------------------------------------------------------

# Cluster-specific first (ClusterDownError is a ResponseError, MovedError an AskError,
# MaxConnectionsError a ConnectionError), then RedisAdapter's table: AUTH, CONNECTION...
_CLUSTER_TABLE: Final[tuple[tuple[type[BaseException], ErrorCode], ...]] = (
    (rx.ClusterDownError, ErrorCode.CONNECTION),  # CLUSTERDOWN, MASTERDOWN: unavailable
    (rx.SlotNotCoveredError, ErrorCode.CONNECTION),  # no node serves the slot (yet)
    (rx.ClusterCrossSlotError, ErrorCode.VALIDATION),  # CROSSSLOT: never works on a cluster
    (rx.CrossSlotTransactionError, ErrorCode.VALIDATION),
    *_EXCEPTION_TABLE,
)

# Answers from the cluster saying "not here, not now" rather than "down": they do not trip
# the breaker (Redis answered), but a retry may well succeed.
_NO_NEWS: Final = (
    rx.TryAgainError,  # TRYAGAIN: a multi-key command on a slot being migrated
    rx.AskError,  # ASK/MOVED left over after 16 redirections
    rx.MaxConnectionsError,  # the client is saturated, not the server
)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (cause, else context), at most 8."""
    node: BaseException | None = exc
    for _ in range(8):
        if node is None:
            return
        yield node
        node = node.__cause__ or node.__context__


def classify(exc: BaseException) -> tuple[ErrorCode, bool, BaseException]:
    """The error code of a cluster call's exception, whether it may trip the breaker
    (``False`` overrides the code's policy; ``True`` keeps it), and the exception whose
    message tells what happened (redis-py wraps a refused ``CLUSTER SLOTS`` in a message
    saying "Cluster mode is not enabled")."""
    if isinstance(exc, _NO_NEWS) or (
        isinstance(exc, rx.ClusterError) and not isinstance(exc, rx.ClusterDownError)
    ):  # ClusterError("TTL exhausted."): a MOVED/TRYAGAIN storm
        return ErrorCode.CONNECTION, False, exc
    if isinstance(exc, rx.RedisClusterException) and not isinstance(exc, rx.SlotNotCoveredError):
        # client-side: no seed answered, or CLUSTER SLOTS refused, or a cross-slot command
        for inner in chain(exc):
            if inner is not exc and isinstance(inner, rx.RedisError):
                code = code_of(inner)
                if code is ErrorCode.AUTH:  # WRONGPASS, or NOPERM on CLUSTER SLOTS/COMMAND
                    return code, True, inner
        text = str(exc)
        if "same key slot" in text or "same slot" in text:
            return ErrorCode.VALIDATION, True, exc
        if "Cluster mode is not enabled" in text:  # a seed that is not a cluster node
            return ErrorCode.BACKEND, True, exc
        return ErrorCode.CONNECTION, True, exc
    return code_of(exc), True, exc


def code_of(exc: BaseException) -> ErrorCode:
    return next(code for kind, code in _CLUSTER_TABLE if isinstance(exc, kind))


def not_sent(exc: BaseException) -> bool:
    """Whether ``exc`` surely struck before the command could leave the client.

    A client-side cluster error (no seed reachable, slot not covered), a full connection
    pool, or a failure to connect (redis-py says "connecting to"). Anything else, a
    deadline included, may have happened after the command was written.
    """
    if isinstance(exc, rx.RedisClusterException | rx.MaxConnectionsError):
        return True
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
        text = str(exc)
        return "connecting to" in text or "Timeout connecting to server" in text
    return False


# -- slots -----------------------------------------------------------------------------


def by_slot(items: Iterable[tuple[bytes, T]]) -> dict[int, list[tuple[bytes, T]]]:
    """Group ``(full key, item)`` pairs by the key's hash slot, keeping their order."""
    groups: dict[int, list[tuple[bytes, T]]] = {}
    for full, item in items:
        groups.setdefault(key_slot(full), []).append((full, item))
    return groups

"""What RedisClusterAdapter needs besides its methods: settings and slot groups.

* :func:`parse_seeds` and :func:`cluster_settings` turn ``"host:port"`` seeds or a URL and
  the :class:`RedisOptions`-like options into ``RedisCluster`` arguments, with the same
  checks (and the same :class:`ConfigurationError` messages) as ``RedisAdapter.from_url``.
* :func:`by_slot` groups keys by hash slot for the many-key calls.

Its errors are mapped with the standalone adapter's, in ``adapters/_errors.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

from redis.asyncio.connection import SSLConnection, parse_url
from redis.crc import key_slot

from resilient_cache.adapters.redis_options import (
    RedisOptions,
    pool_settings,
    redact_url,
    split_url,
)
from resilient_cache.domain.errors import ConfigurationError

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
    for standalone_only in ("coalesce_reads", "pipeline_commands"):
        if options.get(standalone_only):
            raise ConfigurationError(standalone_only, "not supported by RedisClusterAdapter")
    scheme = split_url(url).scheme if isinstance(url, str) else ""
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


# -- slots -----------------------------------------------------------------------------


def by_slot(items: Iterable[tuple[bytes, T]]) -> dict[int, list[tuple[bytes, T]]]:
    """Group ``(full key, item)`` pairs by the key's hash slot, keeping their order."""
    groups: dict[int, list[tuple[bytes, T]]] = {}
    for full, item in items:
        groups.setdefault(key_slot(full), []).append((full, item))
    return groups

"""Settings for :class:`~resilient_cache.RedisAdapter`: options, pool stats, URL redaction.

Pure Python (no ``redis`` import): the adapter module turns these into a redis-py pool.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from resilient_cache.domain import defaults
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.log import LOGGER_NAME, someone_listens

DEFAULT_OPERATION_TIMEOUT: Final = defaults.DEADLINE
_URL_QUERY_ALLOWED: Final = frozenset({"db", "password", "username"})
_TLS_OPTIONS: Final = ("ssl_ca_certs", "ssl_ca_data", "ssl_certfile", "ssl_keyfile")
_INSECURE_QUERY: Final = frozenset({"ssl_cert_reqs", "ssl_check_hostname"})
TLS_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "localhost.localdomain", "::1"})
_warned: set[str] = set()
_log = logging.getLogger(LOGGER_NAME)


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process.

    These are security warnings (plaintext to another host, TLS without verification): an
    application that configured no logging would never see them (the library's logger has a
    ``NullHandler``), so then they go to stderr, as Python's own last-resort handler did."""
    if key not in _warned:
        _warned.add(key)
        if someone_listens():
            _log.warning(message)
        else:
            print(f"resilient-cache: warning: {message}", file=sys.stderr)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisOptions:
    """Connection settings for :meth:`RedisAdapter.from_url`, tuned to give up fast.

    Attributes:
        socket_timeout: seconds to wait for each read or write (default ``None``: no timer
            of its own per step, the operation timeout bounds the call).
        connect_timeout: seconds to establish a connection, TLS included (default 0.5).
        operation_timeout: bound on a whole call: pool wait, connect, send, read
            (default 0.5). ``delete_pattern``/``flush`` apply it to each round trip.
        max_connections: pool size (default 50).
        pool_timeout: seconds to wait for a free pooled connection (default ``None``:
            bounded by the operation timeout; redis-py alone would wait 20 s).
        health_check_interval: PING a connection idle longer than this before use
            (seconds, default 30; 0 disables).
        socket_keepalive: TCP keepalive on (default ``True``; ignored for ``unix://``).
        client_name: ``CLIENT SETNAME`` for each connection, to spot it in ``CLIENT LIST``.
        username: ACL user (overridden by one in the URL).
        password: password (overridden by one in the URL); never shown anywhere.
        credential_provider: a redis-py ``CredentialProvider`` (``get_credentials()``, or
            ``get_credentials_async()``), asked for a username and password each time a
            connection is made: rotated credentials are picked up without a restart.
            Not together with ``username``/``password`` (options or URL).
        db: database number (overridden by one in the URL).
        ssl_ca_certs: CA bundle for ``rediss://`` (default: the system's).
        ssl_certfile: client certificate for ``rediss://`` (mutual TLS).
        ssl_keyfile: client key for ``rediss://``.
        ssl_ca_data: the CA certificates themselves (PEM text), instead of a file.
        ssl_check_hostname: verify the server's host name (default ``True``); ``False``
            needs ``allow_insecure_tls``.
        ssl_cert_reqs: ``"required"`` (default): the server's certificate must verify;
            ``"none"`` switches verification off and needs ``allow_insecure_tls``.
        ssl_min_version: the oldest TLS version accepted, ``"TLSv1.2"`` (default) or
            ``"TLSv1.3"``.
        allow_insecure_tls: allow ``ssl_cert_reqs="none"`` or ``ssl_check_hostname=False``
            (in options or the URL); logged as a warning, once. Default ``False``: refused.
        coalesce_reads: batch the ``get``/``get_json`` calls issued in one event-loop
            iteration into one MGET (default ``False``). Much higher throughput under
            concurrency; each caller keeps its own answer and deadline. One difference:
            a key holding another type (a list...) reads as missing, as MGET says, instead
            of WRONG_TYPE.
        pipeline_commands: send the single commands (``get``, ``set``, ``delete``,
            ``increment``, scripts...) issued while others are in flight together, on one
            connection, each with its own reply (default ``True``). A command alone goes at
            once. Under concurrency, one write and one read for many commands; the same
            semantics for every command. Standalone and Sentinel (not a cluster).
    """

    socket_timeout: float | None = None
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT
    max_connections: int = defaults.MAX_CONNECTIONS
    pool_timeout: float | None = None
    health_check_interval: int = 30
    socket_keepalive: bool = True
    client_name: str | None = None
    username: str | None = None
    password: str | None = None
    credential_provider: object | None = None
    db: int | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_ca_data: str | None = None
    ssl_check_hostname: bool = True
    ssl_cert_reqs: str = "required"
    ssl_min_version: str = "TLSv1.2"
    allow_insecure_tls: bool = False
    coalesce_reads: bool = False
    pipeline_commands: bool = True

    def __post_init__(self) -> None:
        for name in ("socket_timeout", "connect_timeout", "operation_timeout", "pool_timeout"):
            value = getattr(self, name)
            if value is None and name in ("pool_timeout", "socket_timeout"):
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (0 < value < math.inf)
            ):
                raise ConfigurationError(
                    name, f"must be a positive number of seconds, got {value!r}"
                )
        for name in ("max_connections", "health_check_interval"):
            value = getattr(self, name)
            low = 1 if name == "max_connections" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(name, f"must be an int >= {low}, got {value!r}")
        provider = self.credential_provider
        if provider is not None:
            if not callable(getattr(provider, "get_credentials", None)):
                raise ConfigurationError(
                    "credential_provider",
                    "must be a redis.credentials.CredentialProvider (get_credentials()), "
                    f"got {type(provider).__name__}",
                )
            if self.username is not None or self.password is not None:
                raise ConfigurationError(
                    "credential_provider", "give either it or username/password, not both"
                )
        if self.ssl_cert_reqs not in ("required", "none"):
            raise ConfigurationError(
                "ssl_cert_reqs", f"must be 'required' or 'none', got {self.ssl_cert_reqs!r}"
            )
        if self.ssl_min_version not in TLS_VERSIONS:
            raise ConfigurationError(
                "ssl_min_version",
                f"must be one of {sorted(TLS_VERSIONS)}, got {self.ssl_min_version!r}",
            )
        insecure = "ssl_cert_reqs" if self.ssl_cert_reqs == "none" else None
        if not self.ssl_check_hostname:
            insecure = insecure or "ssl_check_hostname"
        if insecure and not self.allow_insecure_tls:
            raise ConfigurationError(
                insecure,
                "switches TLS verification off (anyone on the path could read and change "
                "cache traffic); set allow_insecure_tls=True to allow it anyway",
            )
        if self.db is not None and (
            isinstance(self.db, bool) or not isinstance(self.db, int) or self.db < 0
        ):
            raise ConfigurationError("db", f"must be an int >= 0, got {self.db!r}")

    def __repr__(self) -> str:
        def show(name: str, value: object) -> str:
            if name == "password" and value:
                return "***"
            if name == "credential_provider" and value is not None:
                return f"<{type(value).__name__}>"  # never its repr: it may hold a secret
            return repr(value)

        shown = (f"{f.name}={show(f.name, getattr(self, f.name))}" for f in fields(self))
        return f"RedisOptions({', '.join(shown)})"


def redact_url(url: str) -> str:
    """Return ``url`` with any password (in the user info or the query) replaced by ``***``.

    Works on the raw text, so that a password holding an unencoded ``#``, ``/`` or ``?``
    (which confuses URL parsers) is still hidden: everything between ``://`` and the last
    ``@`` after the user name is replaced.
    """
    scheme, separator, rest = url.partition("://")
    if separator and "@" in rest:
        userinfo, _, location = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon or any(c in userinfo for c in "/?#"):
            url = f"{scheme}://{user.split('/')[0].split('?')[0].split('#')[0]}:***@{location}"
    base, question, query = url.partition("?")
    if question:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() == "password" for name, _ in pairs):
            shown = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
            url = f"{base}?{urlencode(shown, safe='*')}"
    return url


def _check_userinfo(url: str) -> None:
    """Refuse a user info that URL parsers would cut short (and so half-expose)."""
    rest = url.partition("://")[2]
    if "@" in rest and any(c in rest.rpartition("@")[0] for c in "/?#"):
        raise ConfigurationError(
            "url",
            "the user or password holds '/', '?' or '#': percent-encode them "
            "(%2F, %3F, %23); the URL is not shown, it holds a secret",
        )


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``, or the :class:`ConfigurationError` naming ``url`` (a malformed IPv6
    address raises a plain ``ValueError`` there); the message never shows a password."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError("url", f"{exc} ({redact_url(url)})") from None


def pool_settings(url: object, options: Mapping[str, Any]) -> tuple[RedisOptions, dict[str, Any]]:
    """Check ``url`` and ``options``; return them as redis-py connection pool arguments.

    Raises:
        ConfigurationError: an unknown option, a bad value, or an unusable URL.
    """
    opts = _options(options)
    if isinstance(url, str):
        _check_userinfo(url)
    scheme = split_url(url).scheme if isinstance(url, str) else ""
    if not isinstance(url, str) or scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            "url", f"must start with redis://, rediss:// or unix://, got {redact_url(str(url))!r}"
        )
    parts = urlsplit(url)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _INSECURE_QUERY and scheme == "rediss":
            if not opts.allow_insecure_tls:
                raise ConfigurationError(
                    "url",
                    f"query parameter {name}={value!r} could switch TLS verification off; "
                    "set allow_insecure_tls=True to allow it anyway",
                )
            continue  # allowed, and redis-py applies it: warned about below
        if name not in _URL_QUERY_ALLOWED:
            # redis-py would let the URL override our settings (ssl_cert_reqs=none would
            # switch certificate verification off) or fail every call on an unknown name
            raise ConfigurationError(
                "url",
                f"query parameter {name!r} is not supported (only {sorted(_URL_QUERY_ALLOWED)}); "
                "pass connection settings as options",
            )
    try:
        parts.port  # noqa: B018 - urlsplit checks the port when it is read
    except ValueError:
        raise ConfigurationError(
            "url", f"the port must be a number from 0 to 65535, got {redact_url(url)!r}"
        ) from None
    path = parts.path.strip("/")
    if scheme != "unix" and path and not path.isdigit():
        # redis-py would silently fall back to database 0
        raise ConfigurationError("url", f"database must be a number, got {redact_url(url)!r}")
    kwargs = _pool_kwargs(opts)
    if opts.credential_provider is not None and (parts.username or parts.password):
        raise ConfigurationError(
            "credential_provider", "the URL holds credentials too: give one or the other"
        )
    if scheme != "unix":
        kwargs["socket_keepalive"] = opts.socket_keepalive
    if scheme != "rediss":
        for name in _TLS_OPTIONS:
            if getattr(opts, name) is not None:
                raise ConfigurationError(name, f"only applies to rediss:// URLs, not {scheme}://")
        if scheme == "redis" and not is_loopback(parts.hostname or "localhost"):
            warn_once(
                f"plaintext:{parts.hostname}:{parts.port}",
                f"resilient_cache: {redact_url(url)} is plaintext to another host: passwords "
                "and cached values cross the network unencrypted; use rediss:// (TLS)",
            )
    else:
        kwargs.update(_tls_kwargs(opts))
        if opts.allow_insecure_tls and (
            opts.ssl_cert_reqs == "none"
            or not opts.ssl_check_hostname
            or any(name in _INSECURE_QUERY for name, _ in parse_qsl(parts.query))
        ):
            warn_once(
                f"insecure-tls:{parts.hostname}:{parts.port}",
                f"resilient_cache: TLS verification is switched off for {redact_url(url)} "
                "(allow_insecure_tls=True): cache traffic can be read and changed on the way",
            )
    return opts, kwargs


def sentinel_settings(
    sentinels: object, service_name: object, options: Mapping[str, Any], *, tls: bool
) -> tuple[RedisOptions, list[tuple[str, int]], dict[str, Any]]:
    """Check a Sentinel deployment's settings; return the options, the sentinels' addresses
    and the data nodes' connection pool arguments (no address: the sentinels give it).

    Raises:
        ConfigurationError: no sentinel, a bad address, no service name, an unknown option
            or a bad value.
    """
    opts = _options(options)
    addresses = [_sentinel_address(address) for address in _sentinel_list(sentinels)]
    if (
        not isinstance(service_name, str)
        or not service_name
        or service_name.split() != [service_name]
    ):
        raise ConfigurationError(
            "service_name",
            f"must be the monitored master's name (non-empty, no spaces), got {service_name!r}",
        )
    kwargs = _pool_kwargs(opts)
    kwargs["socket_keepalive"] = opts.socket_keepalive
    shown = f"Sentinel service {service_name!r} at {','.join(map(_show, addresses))}"
    if not tls:
        for name in _TLS_OPTIONS:
            if getattr(opts, name) is not None:
                raise ConfigurationError(name, "only applies with tls=True")
        remote = next((h for h, _ in addresses if not is_loopback(h)), None)
        if remote is not None:
            warn_once(
                f"plaintext-sentinel:{service_name}:{remote}",
                f"resilient_cache: {shown} is plaintext to another host: passwords and cached "
                "values cross the network unencrypted; use tls=True",
            )
        return opts, addresses, kwargs
    kwargs.update(_tls_kwargs(opts))
    if opts.allow_insecure_tls and (opts.ssl_cert_reqs == "none" or not opts.ssl_check_hostname):
        warn_once(
            f"insecure-tls-sentinel:{service_name}",
            f"resilient_cache: TLS verification is switched off for {shown} "
            "(allow_insecure_tls=True): cache traffic can be read and changed on the way",
        )
    return opts, addresses, kwargs


def _sentinel_list(sentinels: object) -> list[object]:
    if isinstance(sentinels, str | bytes) or not isinstance(sentinels, list | tuple):
        raise ConfigurationError(
            "sentinels", f"must be a list of 'host:port' strings, got {type(sentinels).__name__}"
        )
    if not sentinels:
        raise ConfigurationError("sentinels", "needs at least one sentinel, 'host:port'")
    return list(sentinels)


def _sentinel_address(address: object) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:26379"`` for IPv6) as ``(host, port)``."""
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError("sentinels", f"each sentinel must be 'host:port', got {address!r}")
    return host, int(port)


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _options(options: Mapping[str, Any]) -> RedisOptions:
    known = {f.name for f in fields(RedisOptions)}
    for name in options:
        if name not in known:
            raise ConfigurationError(name, f"unknown option; expected one of {sorted(known)}")
    return RedisOptions(**options)


def _pool_kwargs(opts: RedisOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_connections": opts.max_connections,
        # None: no timer of redis-py's own; the operation timeout bounds the wait anyway
        "timeout": opts.pool_timeout,
        "socket_timeout": opts.socket_timeout,
        "socket_connect_timeout": opts.connect_timeout,
        "health_check_interval": opts.health_check_interval,
        "client_name": opts.client_name,
    }
    for name in ("username", "password", "db", "credential_provider"):
        if getattr(opts, name) is not None:
            kwargs[name] = getattr(opts, name)
    return kwargs


def _tls_kwargs(opts: RedisOptions) -> dict[str, Any]:
    return {
        "ssl_cert_reqs": opts.ssl_cert_reqs,
        "ssl_ca_certs": opts.ssl_ca_certs,
        "ssl_ca_data": opts.ssl_ca_data,
        "ssl_certfile": opts.ssl_certfile,
        "ssl_keyfile": opts.ssl_keyfile,
        "ssl_check_hostname": opts.ssl_check_hostname,
        "ssl_min_version": TLS_VERSIONS[opts.ssl_min_version],
    }

"""CacheSettings: everything :func:`~resilient_cache.build_cache` needs, from the environment.

Variables use the prefix ``CACHE_`` and ``__`` between a group and its field::

    CACHE_REDIS_URL=rediss://cache.internal:6380/0
    CACHE_DEADLINE=0.3
    CACHE_RETRY__ATTEMPTS=3
    CACHE_BREAKER__RESET_TIMEOUT=10
    CACHE_REDIS__PASSWORD=...

A bad value stops the application at start-up with a :class:`ConfigurationError` naming
the variable (``CACHE_DEADLINE: must be > 0``); the value itself is never repeated, as it
may be a secret.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from resilient_cache.adapters.redis_options import RedisOptions, pool_settings
from resilient_cache.domain import defaults
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.validation import check_namespace
from resilient_cache.layers.circuit_breaker import check_open_times
from resilient_cache.layers.retry import check_backoff

ENV_PREFIX = "CACHE_"
_REDIS = RedisOptions()  # the adapter's defaults, stated once


class RetrySettings(BaseModel):
    """The retry layer: attempts, full-jitter backoff, retry budget."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    attempts: int = Field(
        defaults.ATTEMPTS, ge=1, le=10, description="tries per call, the first included"
    )
    backoff_base: float = Field(defaults.BACKOFF_BASE, gt=0, description="backoff base, seconds")
    backoff_max: float = Field(defaults.BACKOFF_MAX, gt=0, description="backoff cap, seconds")
    budget_ratio: float = Field(
        defaults.BUDGET_RATIO, ge=0, le=1, description="retries per call allowed"
    )
    budget_min_per_second: float = Field(
        defaults.BUDGET_MIN_PER_SECOND, ge=0, description="retries always allowed per s"
    )
    budget_window: int = Field(
        defaults.BUDGET_WINDOW, ge=1, le=3600, description="budget window, seconds"
    )


class BreakerSettings(BaseModel):
    """The circuit breaker layer."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    fail_max: int = Field(
        defaults.FAIL_MAX, ge=1, description="consecutive failures that open the circuit"
    )
    reset_timeout: float = Field(
        defaults.RESET_TIMEOUT, gt=0, description="first open time, seconds"
    )
    reset_timeout_max: float = Field(
        defaults.RESET_TIMEOUT_MAX, gt=0, description="cap of the doubling open time"
    )
    success_threshold: int = Field(
        defaults.SUCCESS_THRESHOLD, ge=1, description="probe successes that close it"
    )
    half_open_permits: int = Field(
        defaults.HALF_OPEN_PERMITS, ge=1, description="probes at once in half-open"
    )
    count_out_of_memory: bool = Field(False, description="let OUT_OF_MEMORY trip it")


class EncryptionSettings(BaseModel):
    """Value encryption (EncryptionLayer, the ``encryption`` extra); off while ``keys`` is empty."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    keys: dict[str, SecretStr] = Field(
        default_factory=dict, description="key id -> 32-byte key, base64 (JSON object)"
    )
    current: str | None = Field(None, description="the key id that encrypts")
    accept_plaintext: bool = Field(False, description="read values written unencrypted")
    allow_plaintext_counters: bool = Field(False, description="increment/decrement in clear")

    def layer_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~resilient_cache.EncryptionLayer` (secrets revealed)."""
        return {
            "keys": {key_id: key.get_secret_value() for key_id, key in self.keys.items()},
            "current": self.current,
            "accept_plaintext": self.accept_plaintext,
            "allow_plaintext_counters": self.allow_plaintext_counters,
        }


class CompressionSettings(BaseModel):
    """Value compression (CompressionLayer); off unless ``enabled``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    enabled: bool = Field(False, description="compress values above the threshold")
    threshold: int = Field(1024, ge=0, description="compress values longer than this (bytes)")
    algorithm: Literal["auto", "zstd", "zlib"] = Field(
        "auto", description="zstd if installed (the compression extra), else zlib"
    )
    level: int | None = Field(None, description="compression level; default: the algorithm's")

    def layer_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~resilient_cache.CompressionLayer`."""
        return {"threshold": self.threshold, "algorithm": self.algorithm, "level": self.level}


class NearCacheSettings(BaseModel):
    """The in-process near cache (NearCacheLayer), kept coherent by Redis client tracking."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    enabled: bool = Field(False, description="serve hot keys from process memory")
    max_entries: int = Field(10_000, ge=1, description="entries held at most")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="bytes held at most")
    max_age: float = Field(60.0, gt=0, description="seconds an entry is served at most")
    ping_interval: float = Field(
        1.0, gt=0, description="silence after which the channel is pinged (lost after 2x)"
    )


class ObservabilitySettings(BaseModel):
    """Which telemetry layers the stack gets, and how chatty the logs are."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    metrics: bool = Field(True, description="Prometheus metrics (MetricsLayer)")
    tracing: bool = Field(True, description="OpenTelemetry spans and histogram (TracingLayer)")
    logging: bool = Field(True, description="structlog events (LoggingLayer)")
    log_keys: bool = Field(False, description="include keys in failure events (PII!)")
    log_successes: bool = Field(False, description="a debug event per successful call")


class RedisSettings(BaseModel):
    """The connection: pool, timeouts, credentials, TLS (see :class:`RedisOptions`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    socket_timeout: float | None = Field(
        _REDIS.socket_timeout, gt=0, description="bound on one read or write; default: none"
    )
    connect_timeout: float = Field(_REDIS.connect_timeout, gt=0)
    max_connections: int = Field(_REDIS.max_connections, ge=1)
    health_check_interval: int = Field(_REDIS.health_check_interval, ge=0)
    socket_keepalive: bool = _REDIS.socket_keepalive
    client_name: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    db: int | None = Field(None, ge=0)
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_ca_data: str | None = Field(None, description="CA certificates as PEM text")
    ssl_check_hostname: bool = _REDIS.ssl_check_hostname
    ssl_cert_reqs: str = Field(_REDIS.ssl_cert_reqs, description="'required' or 'none'")
    ssl_min_version: str = Field(_REDIS.ssl_min_version, description="'TLSv1.2' or 'TLSv1.3'")
    allow_insecure_tls: bool = Field(
        _REDIS.allow_insecure_tls, description="allow switching TLS verification off"
    )
    coalesce_reads: bool = Field(
        _REDIS.coalesce_reads, description="batch concurrent gets into one MGET"
    )
    pipeline_commands: bool = Field(
        _REDIS.pipeline_commands,
        description="send the commands of one event-loop iteration together on one connection",
    )

    def options(self, *, deadline: float) -> dict[str, Any]:
        """Keyword options for :meth:`RedisAdapter.from_url`, bounded by the deadline."""
        options = self.model_dump(exclude_none=True)
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        options["operation_timeout"] = deadline
        return options


def _addresses(value: object) -> object:
    """``"h1:7000,h2:7001"`` from the environment, or a JSON list, or a list in code."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON list or comma-separated host:port") from None
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _check_addresses(addresses: list[str]) -> list[str]:
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each address must be host:port, got {address!r}")
    return addresses


class ClusterSettings(BaseModel):
    """Redis Cluster (``CACHE_TOPOLOGY=cluster``): where to start discovering the nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    nodes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="seed nodes, host:port, comma-separated"
    )
    hash_tag_namespace: bool = Field(
        False, description="store keys as {namespace}:key: one slot per namespace"
    )
    tls: bool = Field(False, description="connect to every node with TLS (rediss)")

    _split = field_validator("nodes", mode="before")(classmethod(lambda cls, v: _addresses(v)))
    _valid = field_validator("nodes")(classmethod(lambda cls, v: _check_addresses(v)))


class SentinelSettings(BaseModel):
    """Redis Sentinel (``CACHE_TOPOLOGY=sentinel``): the sentinels and the service they watch."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="sentinels, host:port, comma-separated"
    )
    service_name: str | None = Field(None, min_length=1, description="the monitored master's name")
    username: str | None = Field(None, description="ACL user on the sentinels")
    password: SecretStr | None = Field(None, description="password on the sentinels")
    tls: bool = Field(False, description="TLS to the sentinels and the data nodes")

    _split = field_validator("addresses", mode="before")(classmethod(lambda cls, v: _addresses(v)))
    _valid = field_validator("addresses")(classmethod(lambda cls, v: _check_addresses(v)))


class CacheSettings(BaseSettings):
    """All settings, grouped: connection (``redis``), ``retry``, ``breaker``, ``observability``.

    Build it from the environment with :meth:`from_env`, or in code with keywords.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,  # a bad URL must not be echoed: it may hold a password
    )

    redis_url: str = Field("redis://127.0.0.1:6379/0", repr=False)
    topology: Literal["standalone", "cluster", "sentinel"] = Field(
        "standalone", description="standalone (redis_url), cluster or sentinel"
    )
    namespace: str | None = Field(None, min_length=1)
    name: str = Field("default", min_length=1, description="the `cache` label in telemetry")
    deadline: float = Field(
        defaults.DEADLINE, gt=0, le=60, description="bound on a whole call, seconds"
    )
    bulk_deadline: float = Field(
        defaults.BULK_DEADLINE,
        gt=0,
        le=3600,
        description="bound on delete_pattern and flush, seconds",
    )
    redis: RedisSettings = RedisSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    encryption: EncryptionSettings = EncryptionSettings()
    compression: CompressionSettings = CompressionSettings()
    near_cache: NearCacheSettings = NearCacheSettings()
    cluster: ClusterSettings = ClusterSettings()
    sentinel: SentinelSettings = SentinelSettings()

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, namespace: str | None) -> str | None:
        try:
            return check_namespace(namespace)
        except ConfigurationError as exc:
            raise ValueError(str(exc).removeprefix("namespace: ")) from None

    @field_validator("redis_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        try:
            pool_settings(url, {})
        except ConfigurationError as exc:
            raise ValueError(str(exc).removeprefix("url: ")) from None
        return url

    def model_post_init(self, context: Any, /) -> None:
        if self.redis.socket_timeout is not None and self.redis.socket_timeout > self.deadline:
            raise ConfigurationError(
                f"{ENV_PREFIX}REDIS__SOCKET_TIMEOUT",
                f"must not exceed the deadline ({self.deadline}s)",
            )
        try:  # the URL and the connection options together, as the adapter will see them
            pool_settings(self.redis_url, self.redis.options(deadline=self.deadline))
        except ConfigurationError as exc:
            name = "REDIS_URL" if exc.setting == "url" else f"REDIS__{exc.setting.upper()}"
            raise ConfigurationError(ENV_PREFIX + name, str(exc).split(": ", 1)[1]) from None
        self._check_topology()
        if self.encryption.keys and self.encryption.current not in self.encryption.keys:
            raise ConfigurationError(
                f"{ENV_PREFIX}ENCRYPTION__CURRENT", "must name one of the encryption keys' ids"
            )
        # the layers' own rules, naming the variables
        b, r = self.breaker, self.retry
        check_open_times(
            b.reset_timeout, b.reset_timeout_max, setting=f"{ENV_PREFIX}BREAKER__RESET_TIMEOUT"
        )
        check_backoff(r.backoff_base, r.backoff_max, setting=f"{ENV_PREFIX}RETRY__BACKOFF_BASE")

    def _check_topology(self) -> None:
        """Each topology's settings present, and no other topology's."""
        cluster, sentinel = self.cluster.nodes, self.sentinel.addresses
        if self.topology == "cluster" and not cluster:
            raise ConfigurationError(
                f"{ENV_PREFIX}CLUSTER__NODES", "needs at least one seed node with topology=cluster"
            )
        if self.topology == "sentinel":
            if not sentinel:
                raise ConfigurationError(
                    f"{ENV_PREFIX}SENTINEL__ADDRESSES", "needs at least one sentinel"
                )
            if not self.sentinel.service_name:
                raise ConfigurationError(
                    f"{ENV_PREFIX}SENTINEL__SERVICE_NAME", "needs the monitored master's name"
                )
        for name, given, topology in (("CLUSTER__NODES", cluster, "cluster"),
                                      ("SENTINEL__ADDRESSES", sentinel, "sentinel")):  # fmt: skip
            if given and self.topology != topology:
                raise ConfigurationError(
                    ENV_PREFIX + name,
                    f"is set, but the topology is {self.topology!r}: set "
                    f"{ENV_PREFIX}TOPOLOGY={topology}, or unset it",
                )

    def redis_options(self) -> RedisOptions:
        """The connection settings as the adapter's options value."""
        return RedisOptions(**self.redis.options(deadline=self.deadline))

    @classmethod
    def from_env(cls, **overrides: Any) -> CacheSettings:
        """Read ``CACHE_*`` variables; keywords win over the environment.

        Raises:
            ConfigurationError: naming the first bad variable (never echoing its value).
        """
        _check_names(os.environ)
        try:
            return cls(**overrides)
        except SettingsError as exc:  # a variable that is not the JSON its field needs
            field = str(exc).partition('field "')[2].partition('"')[0] or "?"
            raise ConfigurationError(
                f"{ENV_PREFIX}{field.upper()}__*",
                "a variable of this group is not the JSON its setting needs (an object or a list)",
            ) from None
        except ValidationError as exc:
            error = exc.errors()[0]
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, ConfigurationError):  # a check across fields, named already
                raise cause from None
            variable = ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper()
            raise ConfigurationError(variable, error["msg"].removeprefix("Value error, ")) from None


def _known_variables() -> list[str]:
    names = []
    for name, info in CacheSettings.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names += [f"{ENV_PREFIX}{name}__{field}".upper() for field in group.model_fields]
        else:
            names.append(f"{ENV_PREFIX}{name}".upper())
    return names


def _check_names(environ: Mapping[str, str]) -> None:
    """Refuse a misspelt setting instead of silently using the default.

    Inside a group (``CACHE_RETRY__...``) every name must be known. At the top level other
    software may own a ``CACHE_*`` variable, so only a near miss of a known name is refused.
    """
    known = _known_variables()
    groups = {name.split("__")[0] + "__" for name in known if "__" in name}
    for variable in (v.upper() for v in environ if v.upper().startswith(ENV_PREFIX)):
        if variable in known:
            continue
        near = difflib.get_close_matches(variable, known, n=1, cutoff=0.85)
        if variable.startswith(tuple(groups)) or near:
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigurationError(variable, f"unknown setting{hint}")

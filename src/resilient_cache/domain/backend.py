"""What a backend tells about itself: where it connects, and its connection pool.

Telemetry (the metrics and tracing layers) reads these through the layers' ``endpoint``
and ``pool_stats()``; the adapters fill them in.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Endpoint", "PoolStats"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an adapter connects (for telemetry: ``server.address``, ``server.port``).

    Behind Redis Sentinel the master moves: ``address``/``port`` are then the first
    sentinel's, and ``service_name`` the monitored master's name.
    """

    address: str
    port: int | None
    db: int
    service_name: str | None = None


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the connection pool: connections idle, in use, and the cap."""

    idle: int
    in_use: int
    max_connections: int

"""Invalidation messages from Redis's own client tracking, for the near cache.

:class:`RedisTrackingSource` keeps ONE dedicated connection that asks Redis to announce
every change of a key under the namespace, by anyone::

    CLIENT ID                                   -> <id>
    CLIENT TRACKING on REDIRECT <id> BCAST PREFIX <namespace>:
    SUBSCRIBE __redis__:invalidate

Why this form (RESP2, broadcast mode, redirected to the connection itself):

* **BCAST with the namespace prefix**: Redis announces a write to any key under the
  prefix, whoever makes it (this library on another instance, ``redis-cli``, a script, an
  expiry or an eviction), without having to remember which keys each client read. The
  default (non-BCAST) mode tracks the keys read *on the tracking connection*, and the
  adapter reads on its pooled connections, so it would announce nothing useful.
* **RESP2 redirect to itself, on one connection**: the invalidations arrive as ordinary
  pub/sub ``message`` replies, read with redis-py's plain ``read_response`` (no RESP3 push
  handler, which redis-py 8.1 wires only for its own sync client-side cache), and the
  tracking state lives on the very connection that receives the messages: when that
  connection dies, both go together and the reader sees it at once. With two connections
  (tracking on one, redirected to another) the death of the tracking one is silent in
  RESP2. ``protocol=2`` is set explicitly: redis-py 8 speaks RESP3 by default.
* **Failover**: behind Sentinel the connection goes to the master the sentinels name, and
  is dropped (the channel is lost, then re-established on the new master) as soon as the
  sentinel watcher sees the master move, within ``ping_interval``.
* **Liveness**: while no message arrives, a ``PING`` every ``ping_interval`` seconds; no
  reply within another ``ping_interval`` is a lost channel (a half-open TCP connection,
  a cut proxy), so a silent failure is noticed within ``2 * ping_interval``.

State the near cache reads: :attr:`healthy` (subscribed and listening) and
:attr:`generation`, which goes up each time the channel is (re)established. Losing the
channel tells the listeners ``None`` (forget everything): writes made while nobody listened
were never announced. The background task starts on :meth:`start` (the first read of the
near cache), reconnects with backoff (``reconnect_min`` doubling up to ``reconnect_max``)
and stops on :meth:`aclose`.

Redis Cluster is refused: tracking is per node, so a BCAST subscription would be needed on
every primary, followed across resharding and failovers; that is not implemented.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection as Connection

from resilient_cache.adapters.redis_adapter import RedisAdapter
from resilient_cache.adapters.redis_cluster import RedisClusterAdapter
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.listeners import notify
from resilient_cache.domain.near_cache import InvalidationListener
from resilient_cache.log import get_logger

__all__ = ["CHANNEL", "RedisTrackingSource"]

CHANNEL: Final = "__redis__:invalidate"
"""Where Redis sends invalidation messages in RESP2 redirect mode."""

_log = get_logger()
_FAILURES: Final = (rx.RedisError, OSError, TimeoutError)


class _ChannelLostError(rx.ConnectionError):
    """No reply to a PING in time: the connection is half-open or cut."""


class RedisTrackingSource:
    """Invalidations for the keys of one namespace, from ``CLIENT TRACKING ... BCAST``.

    Args:
        connect: makes a new, unconnected redis-py asyncio ``Connection``.
        namespace: the adapter's namespace (``None``: every key of the database).
        ping_interval: seconds of silence before a PING, and to wait for its reply.
        reconnect_min, reconnect_max: the reconnection backoff, in seconds.

    Build it with :meth:`for_adapter`.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        namespace: str | None,
        *,
        ping_interval: float = 1.0,
        reconnect_min: float = 0.05,
        reconnect_max: float = 2.0,
    ) -> None:
        if ping_interval <= 0 or reconnect_min <= 0 or reconnect_max < reconnect_min:
            raise ConfigurationError(
                "near_cache.tracking", "intervals must be > 0 and reconnect_max >= reconnect_min"
            )
        self._connect = connect
        self._outdated: Callable[[Any], bool] | None = None  # behind Sentinel: master moved
        self._prefix = f"{namespace}:" if namespace else ""
        self._ping_interval = ping_interval
        self._pause_min = reconnect_min
        self._pause_max = reconnect_max
        self._listeners: list[InvalidationListener] = []
        self._task: asyncio.Task[None] | None = None
        self._healthy = False
        self._up = asyncio.Event()
        self.generation = 0
        """Goes up each time the channel is (re)established."""
        self.client_id: int | None = None
        """The server's id of the channel's connection while it is up (``CLIENT KILL ID``)."""

    @classmethod
    def for_adapter(cls, adapter: object, **options: Any) -> RedisTrackingSource:
        """A source on the same server, credentials, TLS and namespace as ``adapter``.

        Raises:
            ConfigurationError: ``adapter`` is a ``RedisClusterAdapter`` (see the module
                docstring) or not a ``RedisAdapter``.
        """
        if isinstance(adapter, RedisClusterAdapter):
            raise ConfigurationError(
                "near_cache",
                "not supported with Redis Cluster: client tracking is per node and the "
                "near cache does not subscribe on every primary",
            )
        if not isinstance(adapter, RedisAdapter):
            raise ConfigurationError(
                "near_cache", f"needs a RedisAdapter, got {type(adapter).__name__}"
            )
        connection_class = adapter._connection_class
        kwargs = {**adapter._connection_kwargs, "protocol": 2}
        source = cls(lambda: connection_class(**kwargs), adapter._namespace, **options)
        if adapter._sentinel is not None:
            source._outdated = adapter._sentinel.outdated
        return source

    def __repr__(self) -> str:
        return (
            f"RedisTrackingSource(prefix={self._prefix!r}, healthy={self._healthy}, "
            f"generation={self.generation})"
        )

    @property
    def healthy(self) -> bool:
        """Whether invalidations are being received right now."""
        return self._healthy

    def add_listener(self, listener: InvalidationListener) -> None:
        """Call ``listener`` with each invalidation (and ``None`` when the channel is lost)."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start the background task if it is not running (needs a running event loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"resilient_cache near-cache tracking {self._prefix!r}"
            )

    async def wait_healthy(self, seconds: float) -> bool:
        """Start if needed and wait up to ``seconds`` for the channel; is it up?"""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._up.wait()
        return self._healthy

    async def aclose(self) -> None:
        """Stop the task and close the connection (started again by :meth:`start`)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._up = asyncio.Event()  # usable again, from another event loop too

    # -- the background task -----------------------------------------------------------

    def _tell(self, keys: Sequence[str] | None) -> None:
        notify(self._listeners, keys)

    async def _run(self) -> None:
        pause = self._pause_min
        while True:
            conn = self._connect()
            try:
                await self._subscribe(conn)
                pause = self._pause_min
                await self._listen(conn)
            except _FAILURES as exc:
                _log.warning(
                    "resilient_cache.near_cache_channel_lost",
                    prefix=self._prefix,
                    error=type(exc).__name__,
                )
            except Exception:  # a bug or an unexpected reply: log it, keep the channel going
                _log.exception("resilient_cache.near_cache_channel_failed", prefix=self._prefix)
            finally:
                self._down()
                with contextlib.suppress(*_FAILURES):
                    await conn.disconnect()
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._pause_max)

    async def _subscribe(self, conn: Connection) -> None:
        timeout = self._ping_interval * 2
        await conn.connect()  # type: ignore[no-untyped-call]
        client_id = int(await self._command(conn, timeout, "CLIENT", "ID"))
        prefix = ("PREFIX", self._prefix) if self._prefix else ()
        await self._command(
            conn, timeout, "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", *prefix
        )
        reply = await self._command(conn, timeout, "SUBSCRIBE", CHANNEL)
        if not isinstance(reply, list) or _text(reply[0]) != "subscribe":
            raise rx.ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")
        self.client_id = client_id
        self.generation += 1
        self._healthy = True
        self._up.set()

    async def _command(self, conn: Connection, seconds: float, *args: Any) -> Any:
        await conn.send_command(*args)
        reply = await conn.read_response(timeout=seconds)
        if reply is None:
            raise _ChannelLostError(f"no reply to {args[0]} within {seconds}s")
        return reply

    async def _listen(self, conn: Connection) -> None:
        awaiting_pong = False
        while True:
            reply = await conn.read_response(timeout=self._ping_interval)
            if self._outdated is not None and self._outdated(conn):
                raise _ChannelLostError("the master moved (Sentinel failover)")
            if reply is None:  # silence: is the connection still there?
                if awaiting_pong:
                    raise _ChannelLostError(f"no PONG within {self._ping_interval}s")
                await conn.send_command("PING")
                awaiting_pong = True
                continue
            if not isinstance(reply, list) or not reply:
                continue
            kind = _text(reply[0])
            if kind == "pong":
                awaiting_pong = False
            elif kind == "message" and len(reply) == 3:
                self._on_message(reply[2])

    def _on_message(self, data: object) -> None:
        if data is None:  # FLUSHALL / FLUSHDB
            self._tell(None)
            return
        keys = data if isinstance(data, list) else [data]
        cut = len(self._prefix)
        self._tell([_text(key)[cut:] for key in keys])

    def _down(self) -> None:
        self._up.clear()
        self.client_id = None
        if self._healthy:
            self._healthy = False
            self._tell(None)


def _text(value: object) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)

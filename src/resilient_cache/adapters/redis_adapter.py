"""RedisAdapter: :class:`CacheProtocol` on redis-py's asyncio client and hiredis.

Only the modules of ``adapters/`` import ``redis`` (this one, ``redis_cluster.py``,
``tracking.py`` and their private helpers, ``_sentinel.py`` for Redis Sentinel among them);
the domain and the layers never do. What it guarantees on top of redis-py:

* **One network attempt per call.** redis-py's own retry is switched off (it retries ten
  times by default); retrying belongs to the retry layer, which knows what is safe.
* **A bound on every call.** ``operation_timeout`` covers the wait for a pooled
  connection, connecting, sending and reading, as a whole (redis-py bounds each step
  alone, so a call could otherwise take several times its socket timeout).
* **Honest failures.** Every exception maps through ``adapters/_errors.py`` to an
  :class:`ErrorCode`, the original kept as ``cause``; a failure after the command may have
  left says so (``maybe_applied``). Because the adapter takes a connection from the pool
  itself before sending, it knows exactly whether a command could have been sent, so an
  ``increment`` that failed to connect stays retryable and one that timed out does not.
* **No mix-ups.** A connection interrupted mid-reply (timeout, cancellation) is dropped
  by redis-py, never reused with a stale reply in it.
* **No secrets.** Passwords never appear in ``repr``, error messages or details.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import ConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from resilient_cache.adapters._coalesce import CommandPipeliner, PartialReplies, ReadCoalescer
from resilient_cache.adapters._commands import (
    SCAN_COUNT,
    KeyCommands,
    cancellations,
    check_not_swallowed,
    swallowed,
    went_away,
)
from resilient_cache.adapters._errors import PoolTimeoutError, partial, to_error
from resilient_cache.adapters._handshake import PLAIN_HANDSHAKE
from resilient_cache.adapters._pool import Pool
from resilient_cache.adapters._sentinel import SentinelConnection, SentinelMaster, sentinel_client
from resilient_cache.adapters._tls import TlsProbe
from resilient_cache.adapters._tls import cut_off as _cut_off
from resilient_cache.adapters.redis_options import (
    DEFAULT_OPERATION_TIMEOUT,
    pool_settings,
    redact_url,
)
from resilient_cache.domain.backend import Endpoint, PoolStats
from resilient_cache.domain.deadline import (
    QUEUED,
    connection_state,
)
from resilient_cache.domain.errors import CacheError, ConfigurationError, ErrorCode
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.validation import (
    Limits,
)

_NO_RETRY: Final = Retry(NoBackoff(), 0)


class RedisAdapter(KeyCommands):
    """A :class:`CacheProtocol` on Redis. Build it with :meth:`from_url` or :meth:`from_sentinel`.

    Args:
        client: a ``redis.asyncio.Redis`` you built yourself; the adapter makes its own
            connections with its pool's settings (address, credentials, TLS,
            ``max_connections``, and the ``timeout`` of a ``BlockingConnectionPool``), with
            redis-py's internal retry off. You keep ownership: :meth:`aclose` closes the
            adapter's connections, not your client. Prefer ``decode_responses=False``.
        namespace: prefix every key with ``"<namespace>:"``, invisibly to callers.
        limits: key and value size limits (see :class:`~resilient_cache.Limits`).
        operation_timeout: bound on a whole call, in seconds (default 0.5).
        coalesce_reads: see :class:`~resilient_cache.RedisOptions` (default ``False``).
        pipeline_commands: see :class:`~resilient_cache.RedisOptions` (default ``True``).
    """

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str | None = None,
        limits: Limits | None = None,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        coalesce_reads: bool = False,
        pipeline_commands: bool = True,
    ) -> None:
        self._init_keys(namespace, f"{namespace}:", limits, operation_timeout)
        settings: ConnectionPool = client.connection_pool
        # kept alive: redis-py's Sentinel connections (a master_for() client) hold only a
        # weak reference to their pool
        self._client = client
        connection_class = settings.connection_class
        kwargs = {**settings.connection_kwargs, "retry": _NO_RETRY}
        self._pool: Pool[Any] = Pool(
            lambda: connection_class(**kwargs), int(settings.max_connections)
        )
        self._pool_timeout: float | None = getattr(settings, "timeout", None)
        self._connection_class = connection_class
        self._connection_kwargs = kwargs
        self._tls = issubclass(connection_class, SSLConnection)
        # connections that saw a failure after which the server may close them (a protocol
        # error, a cut): the next call that takes one reconnects it first
        self._spoilt: weakref.WeakSet[Any] = weakref.WeakSet()
        self._probe = TlsProbe(
            kwargs.get("host"), kwargs.get("port"), tls=self._tls,
            client_certificate=bool(kwargs.get("ssl_certfile")),
        )  # fmt: skip
        self._coalescer = ReadCoalescer(self._fetch_many) if coalesce_reads else None
        self._pipeliner = CommandPipeliner(self._send_batch) if pipeline_commands else None
        self._secrets: tuple[str, ...] = tuple(filter(None, [kwargs.get("password")]))
        where = (
            kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        )
        self._display = f"{where}/{kwargs.get('db', 0)}"
        self._endpoint = Endpoint(
            address=str(kwargs.get("path") or kwargs.get("host", "localhost")),
            port=None if kwargs.get("path") else int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0)),
        )
        # behind Sentinel: the master moves (adapters/_sentinel.py)
        self._sentinel: SentinelMaster | None = None
        if issubclass(connection_class, SentinelConnection):
            sentinel = self._sentinel = kwargs["sentinel_master"]
            where = ",".join(f"{host}:{port}" for host, port in sentinel.sentinels)
            self._display = f"{sentinel.service_name} via sentinels {where}/{kwargs.get('db', 0)}"
            host, port = sentinel.sentinels[0]
            self._endpoint = replace(
                self._endpoint, address=host, port=port, service_name=sentinel.service_name
            )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str | None = None,
        limits: Limits | None = None,
        **options: Any,
    ) -> RedisAdapter:
        """Build an adapter with its own connection pool; nothing connects yet.

        ``url`` is ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS,
        certificate verification on) or ``unix:///path/to/socket[?db=N]``. ``options``
        are the fields of :class:`RedisOptions`.

        Raises:
            ConfigurationError: an unknown option, a bad value, or an unusable URL.
        """
        opts, kwargs = pool_settings(url, options)
        try:
            pool = BlockingConnectionPool.from_url(
                url, retry=_NO_RETRY, **kwargs, **PLAIN_HANDSHAKE
            )
        except (ValueError, TypeError) as exc:
            message = str(exc)
            for secret in (opts.password, urlsplit(url).password):
                if secret:  # as given, and as it is once percent-decoded
                    message = message.replace(secret, "***").replace(unquote(secret), "***")
            raise ConfigurationError("url", f"{message} ({redact_url(url)})") from None
        return cls(
            Redis(connection_pool=pool),
            namespace=namespace,
            limits=limits,
            operation_timeout=opts.operation_timeout,
            coalesce_reads=opts.coalesce_reads,
            pipeline_commands=opts.pipeline_commands,
        )

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[str],
        service_name: str,
        *,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        tls: bool = False,
        namespace: str | None = None,
        limits: Limits | None = None,
        **options: Any,
    ) -> RedisAdapter:
        """Build an adapter on the master that Redis Sentinel names; nothing connects yet.

        The adapter follows the master through failovers without a restart (see
        docs/scale-out.md): it listens to the sentinels' ``+switch-master`` and
        reconnects every connection when the master moves, or when a write meets a
        replica (READONLY, retried by the retry layer).

        Args:
            sentinels: ``"host:port"`` of each sentinel (``"[::1]:26379"`` for IPv6).
            service_name: the monitored master's name (``sentinel monitor <name> ...``).
            sentinel_username: ACL user on the sentinels, when they require one.
            sentinel_password: password on the sentinels (the data nodes' is
                ``password``); never shown anywhere.
            tls: TLS to the sentinels and the data nodes (the ``ssl_*`` options apply).
            namespace: as for :meth:`from_url`.
            limits: as for :meth:`from_url`.
            options: the fields of :class:`RedisOptions`, for the data nodes (``username``,
                ``password``, ``db``, TLS, timeouts, pool); the sentinels get the same
                timeouts, keepalive and TLS settings.

        Raises:
            ConfigurationError: no sentinel, a bad address, no service name, an unknown
                option or a bad value.
        """
        opts, client = sentinel_client(
            sentinels, service_name, options,
            username=sentinel_username, password=sentinel_password, tls=tls,
        )  # fmt: skip
        adapter = cls(
            client,
            namespace=namespace,
            limits=limits,
            operation_timeout=opts.operation_timeout,
            coalesce_reads=opts.coalesce_reads,
            pipeline_commands=opts.pipeline_commands,
        )
        if sentinel_password:
            adapter._secrets += (sentinel_password,)
        return adapter

    def __repr__(self) -> str:
        return f"RedisAdapter({self._display!r}, namespace={self._namespace!r})"

    # -- lifecycle ---------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the adapter's connections (a client passed in stays open).

        The adapter stays usable: a later call connects again.
        """
        self._probe.cancel()
        if self._coalescer is not None:
            await self._coalescer.aclose()
        if self._pipeliner is not None:
            await self._pipeliner.aclose()
        for conn in self._pool.close():
            await conn.disconnect()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    def pool_stats(self) -> PoolStats:
        """Count the pool's connections (for the pool gauge; also shows leaks in tests)."""
        pool = self._pool
        return PoolStats(idle=pool.idle, in_use=pool.in_use, max_connections=pool.max_size)

    # -- the one place that talks to Redis ---------------------------------------

    async def _round_trip(
        self,
        operation: str,
        key: str | None,
        commands: Sequence[tuple[Any, ...]] | Callable[[], Sequence[tuple[Any, ...]]],
        *,
        write: bool = False,
        single: bool = False,
        errors_in_place: bool = False,
    ) -> Any:
        """Send ``commands`` in one round trip and return their replies, or the error.

        ``commands`` may be a function, called once a connection is ready: the commands to
        send at that moment (none: nothing is sent, the replies are ``[]``).

        An error reply to one of several pipelined commands does not stop the others from
        being read (the connection stays in step); the first one becomes the error.
        ``single``: return the one command's reply itself, not a list of one.
        ``errors_in_place``: an error reply stays in its place in the list (an exception)
        instead of becoming the call's error.
        """
        conn: Any = None
        sent = fresh = pipeline = False
        replies: list[Any] = []  # as they are read: a pipeline's callers get theirs
        loop = asyncio.get_running_loop()
        bound, outer, expiry = self._deadline(loop)
        before = cancellations()
        try:
            try:
                # None while connecting (Redis's business); QUEUED, set by the pool, while
                # every connection is busy, and left so if the call is cut short there.
                connection_state.set(None)
                conn = self._pool.take() or await self._wait_for_connection()
                fresh = True  # until _ready says the connection was already up
                fresh = await self._ready(conn)
                connection_state.set(loop.time())
                if callable(commands):  # a pipeline's: what its callers still wait for, now
                    # a PING due on an idle connection first: nothing may await between
                    # choosing the commands and handing them to the socket
                    await conn.check_health()
                    commands = commands()
                    if not commands:
                        return []
                    pipeline = True
                sent = True
                first_error = await _exchange(conn, commands, replies, check_health=not pipeline)
                if (
                    first_error is not None
                    and errors_in_place
                    and any(isinstance(reply, Exception) and _spoils(reply) for reply in replies)
                ):
                    self._spoilt.add(conn)  # a Protocol error: Redis closes it
                if fresh:
                    self._probe.forget()  # the port answers as Redis: no old verdict applies
                check_not_swallowed(before)
            except asyncio.CancelledError:
                if expiry is None or not expiry.cut():
                    raise  # the caller's own cancellation (or its deadline's)
                raise TimeoutError from None  # ours: mapped to TIMEOUT below
            if first_error is not None and not errors_in_place:
                raise first_error
            return replies[0] if single else replies
        except Exception as exc:  # mapped below; CancelledError is not an Exception
            if swallowed(before, expiry):
                raise asyncio.CancelledError from exc
            # once the command was handed to the connection, it may have been sent
            error = self._failed(operation, key, exc, conn, maybe_applied=sent and write)
            left = min(bound, outer if outer is not None else bound) - loop.time()
            try:
                error = await self._explain(
                    error, exc, had_connection=conn is not None, fresh=fresh, sent=sent,
                    seconds_left=left,
                )  # fmt: skip
            except asyncio.CancelledError:
                if expiry is None or not expiry.cut():
                    raise  # the caller's own cancellation (or its deadline's)
                # our deadline, during the diagnosis: the error as it was
            # a pipeline that failed part way: the replies read are their callers'
            return PartialReplies(replies, error) if pipeline and replies else error
        finally:
            if expiry is not None:
                expiry.finish()
            if conn is not None:
                # interrupted mid-command (timeout, cancellation), redis-py has already
                # dropped the socket: the connection reconnects when next used
                self._pool.give_back(conn)

    def _failed(
        self, operation: str, key: str | None, exc: Exception, conn: Any, *, maybe_applied: bool
    ) -> CacheError:
        """The error for ``exc``; what it says about the connection and the master, noted."""
        if conn is not None and _spoils(exc):
            self._spoilt.add(conn)  # reconnected before its next use
        error = self._error(operation, key, exc, maybe_applied=maybe_applied)
        if error.code is ErrorCode.READONLY and self._sentinel is not None:
            # a replica answered: the master moved; every connection asks again
            self._sentinel.distrust(drop_connections=True)
        return error

    async def _explain(
        self,
        error: CacheError,
        exc: Exception,
        *,
        had_connection: bool,
        fresh: bool,
        sent: bool,
        seconds_left: float,
    ) -> CacheError:
        """Make ``error`` say more when the round trip's circumstances tell more."""
        if not had_connection and isinstance(exc, TimeoutError):
            if connection_state.get() == QUEUED:
                message = f"no free connection in the pool within {self._timeout}s"
                return replace(error, message=message, trips_breaker=False)
        elif isinstance(exc, PoolTimeoutError):
            return replace(error, trips_breaker=False)  # the client is saturated
        elif fresh and isinstance(exc, TimeoutError) and self._tls and not sent:
            message = (
                f"{error.message}, in the TLS handshake (a plaintext port never answers "
                "one: use redis://?)"
            )
            return replace(error, message=message)
        elif fresh and error.code is ErrorCode.CONNECTION and _cut_off(exc):
            # a new connection dropped before any reply: a TLS mismatch looks like this
            diagnosis = await self._probe.explain(seconds_left)
            if diagnosis is not None:
                tls = CacheError.of(
                    ErrorCode.TLS,
                    f"{diagnosis} ({self._display})",
                    operation=error.operation,
                    key=error.key,
                    details=error.details,
                    cause=exc,
                )
                return replace(tls, maybe_applied=error.maybe_applied)
        return error

    async def _wait_for_connection(self) -> Any:
        """Queue for a connection (every one is busy), within ``pool_timeout`` if set."""
        if self._pool_timeout is None:
            return await self._pool.wait()
        try:
            async with asyncio.timeout(self._pool_timeout):
                return await self._pool.wait()
        except TimeoutError:
            raise PoolTimeoutError(
                f"no free connection in the pool within pool_timeout={self._pool_timeout}s"
            ) from None

    async def _ready(self, conn: Any) -> bool:
        """Connect ``conn`` if it is not, or reconnect it if the server closed it meanwhile
        (or, behind Sentinel, if the master moved since it connected).

        Returns whether it was (re)connected now.
        """
        if conn.is_connected:
            if (self._spoilt and conn in self._spoilt) or (  # an empty set costs no lookup
                self._sentinel is not None and self._sentinel.outdated(conn)
            ):
                self._spoilt.discard(conn)
                stale = True
            else:
                stale = await went_away(conn)
            if not stale:
                return False
            # unread data or EOF: a restart, an idle timeout or a kill on the server side
            await conn.disconnect()
        self._spoilt.discard(conn)  # a fresh connection, whatever the old one saw
        await conn.connect()
        return True

    def _call(
        self, operation: str, key: str | None, *command: Any, write: bool = False
    ) -> Coroutine[Any, Any, Any]:
        """Run one command; its coroutine returns the reply or a :class:`CacheError`.

        With ``pipeline_commands``, a command issued while another is in flight joins the
        next pipeline; a command alone goes at once (no wait for the loop's next turn).
        """
        pipeliner = self._pipeliner
        if pipeliner is not None and (self._pool.in_use or pipeliner.gathering):
            return self._pipelined(pipeliner, operation, key, command, write)
        return self._round_trip(operation, key, (command,), write=write, single=True)

    async def _pipelined(
        self,
        pipeliner: CommandPipeliner,
        operation: str,
        key: str | None,
        command: tuple[Any, ...],
        write: bool,
    ) -> Any:
        """:meth:`_call` through the pipeliner: the command's reply, or its own error."""
        reply = await pipeliner.call(command, write=write)
        if isinstance(reply, CacheError):  # the batch's round trip failed: told as this call's
            error = CacheError.of(
                reply.code, reply.message, operation=operation, key=key,
                details=reply.details, maybe_applied=reply.maybe_applied and write,
                cause=reply.cause,
            )  # fmt: skip
            return replace(error, trips_breaker=error.trips_breaker and reply.trips_breaker)
        if isinstance(reply, Exception):  # an error reply to this command: not applied
            return self._failed(operation, key, reply, None, maybe_applied=False)
        return reply

    def _send_batch(
        self, commands: Callable[[], Sequence[tuple[Any, ...]]], writes: bool
    ) -> Coroutine[Any, Any, Any]:
        """One round trip for the commands the pipeliner gathered, errors in place."""
        return self._round_trip("pipeline", None, commands, write=writes, errors_in_place=True)

    def _error(
        self, operation: str, key: str | None, exc: BaseException, *, maybe_applied: bool
    ) -> CacheError:
        return to_error(
            operation, key, exc, may_have_left=maybe_applied, server=self._display,
            secrets=self._secrets, timeout=self._timeout,
        )  # fmt: skip

    # -- CacheProtocol -----------------------------------------------------------

    async def _get(self, operation: str, key: str) -> Result[str | None, CacheError]:
        full = self._key(operation, key)
        if isinstance(full, CacheError):
            return Failure(full)
        if self._coalescer is None:
            reply = await self._call(operation, key, "GET", full)
        else:
            reply = await self._coalescer.get(full)
            if isinstance(reply, CacheError):  # the batch's error, told as this call's
                reply = replace(reply, operation=operation, key=key)
        return self._decoded(operation, key, reply)

    async def _fetch_many(self, keys: Sequence[bytes]) -> Sequence[Any] | CacheError:
        """One round trip for a batch of coalesced GETs (a lone key stays a GET)."""
        if len(keys) == 1:
            replies: list[Any] | CacheError = await self._round_trip(
                "get", None, [("GET", keys[0])]
            )
            return replies
        size = self._limits.max_batch_keys
        if len(keys) > size:  # so many callers at once: MGETs of max_batch_keys, in turn
            replies = []
            for start in range(0, len(keys), size):
                chunk = await self._fetch_many(keys[start : start + size])
                if isinstance(chunk, CacheError):
                    return chunk
                replies += chunk
            return replies
        values: list[Any] | CacheError = await self._call("get", None, "MGET", *keys)
        if isinstance(values, CacheError) and values.code is ErrorCode.AUTH:
            # NOPERM on one key refuses the whole MGET: ask again key by key, in one round
            # trip, so that each caller gets its own answer (the refused keys their AUTH)
            replies = await self._round_trip(
                "get", None, [("GET", key) for key in keys], errors_in_place=True
            )
            if isinstance(replies, CacheError):
                return replies
            return [
                self._error("get", None, reply, maybe_applied=False)
                if isinstance(reply, Exception)
                else reply
                for reply in replies
            ]
        return values

    async def ping(self) -> Result[bool, CacheError]:
        """``Success(True)`` when Redis answers PING."""
        reply = await self._call("ping", None, "PING")
        return Failure(reply) if isinstance(reply, CacheError) else Success(True)

    async def _delete_matching(self, operation: str, pattern: bytes) -> int | CacheError:
        deleted = 0
        cursor: Any = 0
        while True:
            reply = await self._call(
                operation, None, "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
            )
            if isinstance(reply, CacheError):
                return partial(reply, deleted)
            cursor, keys = reply
            if keys:
                count = await self._call(operation, None, "UNLINK", *keys, write=True)
                if isinstance(count, CacheError):
                    return partial(count, deleted)
                deleted += int(count)
            if int(cursor) == 0:
                return deleted

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """Return every requested key (``None`` for missing ones) with one MGET."""
        fulls = self._many_keys(keys)
        if isinstance(fulls, CacheError):
            return Failure(fulls)
        if not fulls:
            return Success({})
        reply = await self._call("get_many", None, "MGET", *fulls.values())
        if isinstance(reply, CacheError):
            return Failure(reply)
        return self._many_values({}, zip(fulls, reply, strict=True))

    async def set_many(
        self, mapping: dict[str, str], ttl: int | None = None
    ) -> Result[None, CacheError]:
        """Store every pair atomically in one round trip: MSET, or MULTI/SET EX/EXEC."""
        checked = self._many_items(mapping, ttl)
        if not isinstance(checked, tuple):
            return checked
        pairs, seconds = checked
        if seconds is None:
            flat = (part for pair in pairs for part in pair)
            reply = await self._call("set_many", None, "MSET", *flat, write=True)
            return Failure(reply) if isinstance(reply, CacheError) else Success(None)
        commands = [("MULTI",), *(("SET", k, v, "EX", seconds) for k, v in pairs), ("EXEC",)]
        replies = await self._round_trip("set_many", None, commands, write=True)
        if isinstance(replies, CacheError):
            return Failure(replies)
        failed = next((r for r in replies[-1] if isinstance(r, Exception)), None)
        if failed is not None:
            return Failure(self._error("set_many", None, failed, maybe_applied=False))
        return Success(None)


async def _exchange(
    conn: Any, commands: Sequence[tuple[Any, ...]], replies: list[Any], *, check_health: bool
) -> rx.ResponseError | None:
    """Write ``commands`` on ``conn`` at once and read their replies into ``replies``, in
    order (those read stay there if a later one fails): an error reply stays in its place
    (the connection stays in step). Returns the first error reply, if any."""
    if len(commands) == 1:
        await conn.send_command(*commands[0], check_health=check_health)
    else:
        await conn.send_packed_command(conn.pack_commands(commands), check_health=check_health)
    first_error: rx.ResponseError | None = None
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except rx.ResponseError as exc:
            first_error = first_error or exc
            replies.append(exc)
    return first_error


def _spoils(exc: Exception) -> bool:
    """Whether a connection that raised ``exc`` may be closed or out of step: anything but
    a plain error reply, and the error reply Redis sends before closing (``Protocol
    error``: a bulk longer than ``proto-max-bulk-len``, a malformed request)."""
    return not isinstance(exc, rx.ResponseError) or str(exc).startswith("Protocol error")

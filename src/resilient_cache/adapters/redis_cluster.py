"""RedisClusterAdapter: :class:`CacheProtocol` on Redis Cluster (redis-py's asyncio RedisCluster).

Only modules in ``resilient_cache.adapters`` import ``redis``; the domain and the layers
never do. What it guarantees on top of
redis-py (docs/scale-out.md tells the whole story):

* **One network attempt per call.** redis-py's cluster retry is off (``Retry(NoBackoff(),
  0)``); MOVED, ASK and TRYAGAIN are still followed inside the call by redis-py (up to 16
  hops): they are routing, not failures.
* **A bound on every call.** ``operation_timeout`` (or the caller's earlier deadline) covers
  the topology refresh, connecting, sending and reading, as a whole; a bulk delete applies
  it to each round trip.
* **Self-healing topology.** After a connection error, a timeout, CLUSTERDOWN or a
  redirection storm the adapter re-reads ``CLUSTER SLOTS`` at the start of its next call
  (at most every 250 ms): redis-py does that by itself only for single commands, never for
  pipelines when its retries are off, so multi-key calls would fail forever after a failover.
* **Multi-key calls across slots.** ``get_many`` sends one ``MGET`` per slot, ``set_many``
  one ``MSET`` (or one atomic script with a TTL) per slot, grouped into one pipeline per
  node, all nodes at once: one round trip per node. ``set_many`` is all-or-nothing *per
  slot*; a partial failure says how many slot groups were written.
* **Honest failures.** Every exception maps to an :class:`ErrorCode` through the table both
  adapters share (``adapters/_errors.py``); redis-py does not say whether a command left the
  client, so a write that failed with CONNECTION or TIMEOUT is ``maybe_applied`` unless the
  failure was surely before sending (no connection could be made, no node serves the slot).
* **No secrets.** As with RedisAdapter, no password in ``repr``, messages or details.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final, TypeVar

from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from resilient_cache.adapters._cluster_support import (
    SET_WITH_TTL,
    by_slot,
    cluster_settings,
    netloc,
    parse_seeds,
    url_seed,
)
from resilient_cache.adapters._commands import (
    SCAN_COUNT,
    KeyCommands,
    cancellations,
    check_not_swallowed,
    swallowed,
    went_away,
)
from resilient_cache.adapters._errors import MAX_MESSAGE, partial, to_error
from resilient_cache.adapters._handshake import PLAIN_HANDSHAKE
from resilient_cache.adapters.redis_options import (
    DEFAULT_OPERATION_TIMEOUT,
    RedisOptions,
)
from resilient_cache.domain.backend import Endpoint, PoolStats
from resilient_cache.domain.deadline import deadline_expired
from resilient_cache.domain.defaults import BATCH_SLICE
from resilient_cache.domain.errors import CacheError, ConfigurationError, DetailValue, ErrorCode
from resilient_cache.domain.result import Failure, Result, Success
from resilient_cache.domain.turns import Turns
from resilient_cache.domain.validation import (
    Limits,
    invalid,
)

T = TypeVar("T")

_REFRESH_INTERVAL: Final = 0.25
"""At most one forced topology refresh per this many seconds."""

Command = tuple[Any, ...]


class RedisClusterAdapter(KeyCommands):
    """A :class:`CacheProtocol` on Redis Cluster. Build it with :meth:`from_nodes`/:meth:`from_url`.

    Args:
        client: a ``redis.asyncio.cluster.RedisCluster`` you built yourself; the adapter
            takes it over: it switches redis-py's retry off and :meth:`aclose` closes it.
            Prefer ``decode_responses=False``.
        namespace: prefix every key with ``"<namespace>:"``, invisibly to callers.
        limits: key and value size limits (see :class:`~resilient_cache.Limits`).
        hash_tag_namespace: store keys as ``"{<namespace>}:key"``, so that all the
            namespace's keys share one hash slot (one node): ``set_many`` becomes
            all-or-nothing and ``get_many`` one command, at the price of putting the whole
            namespace on one node. Needs a namespace.
        operation_timeout: bound on a whole call, in seconds (default 0.5).

    Raises:
        ConfigurationError: a bad namespace or ``operation_timeout``, or
            ``hash_tag_namespace`` without a namespace.
    """

    def __init__(
        self,
        client: RedisCluster,
        /,
        *,
        hash_tag_namespace: bool = False,
        namespace: str | None = None,
        limits: Limits | None = None,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
    ) -> None:
        prefix = f"{{{namespace}}}:" if hash_tag_namespace else f"{namespace}:"
        self._init_keys(namespace, prefix, limits, operation_timeout)
        if hash_tag_namespace and namespace is None:
            raise ConfigurationError(
                "hash_tag_namespace", "needs a namespace: it becomes the hash tag '{namespace}:'"
            )
        client.set_retry(Retry(NoBackoff(), 0))  # one network attempt per call
        self._client = client
        self._hash_tag = hash_tag_namespace
        self._stale = False  # the topology must be re-read before the next call
        self._refreshed_at = -math.inf
        kwargs = client.get_connection_kwargs()
        self._secrets: tuple[str, ...] = tuple(filter(None, [kwargs.get("password")]))
        self._max_per_node = int(kwargs.get("max_connections") or 100)
        seeds = list(client.nodes_manager.startup_nodes.values())
        first = seeds[0]
        more = f" (+{len(seeds) - 1} seeds)" if len(seeds) > 1 else ""
        self._display = f"{netloc(first.host, int(first.port))}{more}"
        self._endpoint = Endpoint(address=first.host, port=int(first.port), db=0)

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[str],
        *,
        namespace: str | None = None,
        limits: Limits | None = None,
        hash_tag_namespace: bool = False,
        tls: bool = False,
        **options: Any,
    ) -> RedisClusterAdapter:
        """Build an adapter on the cluster these seed nodes belong to; nothing connects yet.

        ``nodes`` are ``"host:port"`` seeds (any few nodes of the cluster: the others are
        discovered); ``tls=True`` connects with TLS, certificate verification on.
        ``options`` are the fields of :class:`RedisOptions` that make sense on a cluster:
        ``operation_timeout``, ``connect_timeout``, ``socket_timeout``, ``max_connections``
        (per node), ``health_check_interval``, ``socket_keepalive``, ``client_name``,
        ``username``, ``password``, ``credential_provider`` and the ``ssl_*`` options.

        Raises:
            ConfigurationError: bad seeds, an unknown or unsupported option, a bad value.
        """
        seeds = parse_seeds(nodes)
        scheme = "rediss" if tls else "redis"
        opts, kwargs = cluster_settings(f"{scheme}://{netloc(*seeds[0])}", options)
        for seed in seeds[1:]:  # the same checks (and plaintext warning) for every seed
            cluster_settings(f"{scheme}://{netloc(*seed)}", options)
        return cls._build(
            seeds, kwargs, namespace=namespace, limits=limits,
            hash_tag_namespace=hash_tag_namespace, opts=opts,
        )  # fmt: skip

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        hash_tag_namespace: bool = False,
        namespace: str | None = None,
        limits: Limits | None = None,
        **options: Any,
    ) -> RedisClusterAdapter:
        """Build an adapter from ``redis://[user:password@]host:port`` (``rediss://``: TLS)
        naming one node of the cluster; the others are discovered. See :meth:`from_nodes`.

        Raises:
            ConfigurationError: an unknown or unsupported option, a bad value or URL.
        """
        opts, kwargs = cluster_settings(url, options)
        seed, credentials = url_seed(url, (opts.password,))
        kwargs.update(credentials)  # the URL's, as RedisAdapter.from_url does
        return cls._build(
            [seed], kwargs, namespace=namespace, limits=limits,
            hash_tag_namespace=hash_tag_namespace, opts=opts,
        )  # fmt: skip

    @classmethod
    def _build(
        cls,
        seeds: list[tuple[str, int]],
        kwargs: dict[str, Any],
        *,
        namespace: str | None,
        limits: Limits | None,
        hash_tag_namespace: bool,
        opts: RedisOptions,
    ) -> RedisClusterAdapter:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            retry=Retry(NoBackoff(), 0),
            # serve the slots that are served: a partly covered cluster fails only the
            # calls for the uncovered slots (CONNECTION), not every call
            require_full_coverage=False,
            **kwargs,
            **PLAIN_HANDSHAKE,
        )
        return cls(
            client,
            namespace=namespace,
            limits=limits,
            hash_tag_namespace=hash_tag_namespace,
            operation_timeout=opts.operation_timeout,
        )

    def __repr__(self) -> str:
        tag = ", hash_tag_namespace=True" if self._hash_tag else ""
        return f"RedisClusterAdapter({self._display!r}, namespace={self._namespace!r}{tag})"

    # -- lifecycle ---------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection to every node. A later call connects (and discovers) again."""
        client = self._client
        await client.aclose()
        # redis-py skips the close when it already planned a refresh (after an error)
        with contextlib.suppress(Exception):
            await client.nodes_manager.aclose()
            await client.nodes_manager.aclose("startup_nodes")

    @property
    def client(self) -> RedisCluster:
        """The redis-py cluster client (to look at the topology; do not send commands)."""
        return self._client

    def pool_stats(self) -> PoolStats:
        """Connections summed over every known node; the cap is ``max_connections`` per node
        times the number of nodes."""
        idle = total = 0
        nodes = self._client.get_nodes()
        for node in nodes:
            total += len(getattr(node, "_connections", ()))
            idle += len(getattr(node, "_free", ()))
        return PoolStats(
            idle=idle, in_use=total - idle, max_connections=self._max_per_node * len(nodes)
        )

    # -- the one place that talks to the cluster ---------------------------------

    async def _run(
        self,
        operation: str,
        key: str | None,
        work: Callable[[], Awaitable[T]],
        *,
        write: bool = False,
    ) -> T | CacheError:
        """Run ``work`` (redis-py calls) within the call's bound; its result or the error."""
        loop = asyncio.get_running_loop()
        bound, _, expiry = self._deadline(loop)
        sent = False  # the topology refresh comes first: a failure there sent nothing
        before = cancellations()
        try:
            try:
                if self._stale:
                    await self._refresh(loop.time())
                sent = True
                try:
                    reply = await work()
                except rx.ConnectionError:
                    if write or loop.time() >= bound:
                        raise
                    # a read, once more: redis-py keeps a node's pooled connections when the
                    # node restarts, and the first command on one finds it closed (a
                    # half-open breaker probe would then open the circuit again)
                    check_not_swallowed(before)
                    reply = await work()
                check_not_swallowed(before)
                return reply
            except asyncio.CancelledError:
                if expiry is None or not expiry.cut():
                    if deadline_expired():  # cut by the caller's deadline: maybe a dead node
                        self._stale = True
                    raise  # the caller's own cancellation (or its deadline's)
                raise TimeoutError from None  # ours: mapped to TIMEOUT below
        except Exception as exc:  # mapped below; CancelledError is not an Exception
            if swallowed(before, expiry):
                raise asyncio.CancelledError from exc
            return self._error(operation, key, exc, write=write and sent)
        finally:
            if expiry is not None:
                expiry.finish()

    async def _refresh(self, now: float) -> None:
        """Re-read the topology (``CLUSTER SLOTS``), at most every ``_REFRESH_INTERVAL``."""
        if now - self._refreshed_at < _REFRESH_INTERVAL:
            return
        self._stale = False
        self._refreshed_at = now
        try:
            await self._client.nodes_manager.initialize()
        except BaseException:
            self._stale = True
            raise

    def _call(
        self, operation: str, key: str | None, *command: Any, write: bool = False, **options: Any
    ) -> Coroutine[Any, Any, Any]:
        """Run one command; its coroutine returns the reply or a :class:`CacheError`.

        ``options`` go to redis-py (``target_nodes``).
        """
        send = self._client.execute_command
        return self._run(operation, key, lambda: send(*command, **options), write=write)

    async def _batch(
        self, operation: str, commands: list[tuple[int, Command]], *, write: bool = False
    ) -> list[Any] | CacheError:
        """Run ``(slot, command)`` pairs, each command on its slot, one pipeline per node.

        Each node's commands go straight onto one of its connections (:func:`_on_node`):
        redis-py's cluster pipeline would work out every command's slot, keys and policy
        again, ~15 us each, which for the ~7,800 slots of 10,000 keys held the event loop
        for a hundred milliseconds. A command answered with MOVED or ASK was not run: it
        goes again through redis-py's pipeline, which follows the redirection.

        Returns each command's reply, or its :class:`CacheError` (a failed node's error for
        each of its commands); a :class:`CacheError` alone if the topology is unknown.
        """
        if len(commands) == 1:
            (_, command), = commands  # fmt: skip
            return [await self._call(operation, None, *command, write=write)]
        client = self._client

        async def per_node() -> list[Any]:
            await client.initialize()  # the topology, to group by node
            groups: dict[str, tuple[ClusterNode, list[int]]] = {}
            for index, (slot, _) in enumerate(commands):
                node = client.nodes_manager.get_node_from_slot(slot)
                groups.setdefault(node.name, (node, []))[1].append(index)
            cache = client.nodes_manager.nodes_cache
            sends = (
                _on_node(node, [commands[i][1] for i in g], cache) for node, g in groups.values()
            )
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
            replies: list[Any] = [None] * len(commands)
            for (_, group), outcome in zip(groups.values(), outcomes, strict=True):
                _place(replies, group, outcome)
            moved = [i for i, reply in enumerate(replies) if isinstance(reply, _REDIRECTED)]
            if moved:
                self._stale = True  # the slots moved: re-read them before the next call
                try:
                    again: Any = await self._pipeline([commands[i][1] for i in moved])
                except Exception as exc:  # a node's failure: the error of each command
                    again = exc
                _place(replies, moved, again)
            return replies

        replies = await self._run(operation, None, per_node, write=write)
        if isinstance(replies, CacheError):
            return replies
        return [
            self._error(operation, None, reply, write=write)
            if isinstance(reply, Exception)
            else reply
            for reply in replies
        ]

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        pipe = self._client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        # raise_on_error=False: each command's error comes back in its place (and redis-py's
        # raise would put the command, values included, into the message)
        return await pipe.execute(raise_on_error=False)

    def _error(
        self, operation: str, key: str | None, exc: BaseException, *, write: bool
    ) -> CacheError:
        node = getattr(exc, "connection", None)  # redis-py tags errors with the node
        server = node.name if isinstance(node, ClusterNode) else self._display
        error = to_error(
            operation, key, exc, may_have_left=write, server=server, secrets=self._secrets,
            timeout=self._timeout,
        )  # fmt: skip
        if error.code in (ErrorCode.CONNECTION, ErrorCode.TIMEOUT) and not isinstance(
            exc, rx.MaxConnectionsError
        ):
            self._stale = True  # a dead node, a failover, a redirection storm: re-read
        return error

    # -- CacheProtocol: one key ------------------------------------------------------

    async def ping(self) -> Result[bool, CacheError]:
        """``Success(True)`` when every primary answers PING."""
        reply = await self._call("ping", None, "PING", target_nodes=RedisCluster.PRIMARIES)
        return Failure(reply) if isinstance(reply, CacheError) else Success(True)

    # -- CacheProtocol: many keys ------------------------------------------------------

    async def get_many(self, keys: list[str]) -> Result[dict[str, str | None], CacheError]:
        """Return every requested key (``None`` for missing ones): one MGET per slot, one
        round trip per node."""
        distinct = self._many_keys(keys)
        if isinstance(distinct, CacheError):
            return Failure(distinct)
        if not distinct:
            return Success({})
        groups = by_slot((full, key) for key, full in distinct.items())
        commands = [
            (slot, ("MGET", *(full for full, _ in members))) for slot, members in groups.items()
        ]
        replies = await self._batch("get_many", commands)
        if isinstance(replies, CacheError):
            return Failure(replies)
        values: dict[str, str | None] = {}
        turns = Turns()
        for members, reply in zip(groups.values(), replies, strict=True):
            if turns.due():
                await asyncio.sleep(0)  # a turn for the other tasks: 10,000 keys, ~7,800 slots
            if isinstance(reply, CacheError):
                return Failure(reply)
            decoded = self._many_values(values, zip((k for _, k in members), reply, strict=True))
            if isinstance(decoded, Failure):
                return decoded
        return Success({key: values[key] for key in distinct})  # the caller's order

    async def set_many(
        self, mapping: dict[str, str], ttl: int | None = None
    ) -> Result[None, CacheError]:
        """Store every pair; all or nothing within each hash slot.

        One ``MSET`` per slot (with ``ttl``: one script running ``SET ... EX`` for each of
        the slot's keys, atomically), one pipeline per node. Keys in one slot (a hash tag,
        or ``hash_tag_namespace``) make the whole call all-or-nothing. A failure after some
        slot groups were written says ``maybe_applied`` and counts them in its details.
        """
        checked = self._many_items(mapping, ttl)
        if not isinstance(checked, tuple):
            return checked
        pairs, seconds = checked
        groups = by_slot(pairs)
        commands: list[tuple[int, Command]] = []
        for slot, members in groups.items():
            if seconds is None:
                commands.append((slot, ("MSET", *(part for pair in members for part in pair))))
            else:
                fulls = [full for full, _ in members]
                raw_values = [value for _, value in members]
                script = ("EVAL", SET_WITH_TTL, len(fulls), *fulls, *raw_values, seconds)
                commands.append((slot, script))
        replies = await self._batch("set_many", commands, write=True)
        if isinstance(replies, CacheError):
            return Failure(replies)
        failed = [reply for reply in replies if isinstance(reply, CacheError)]
        if not failed:
            return Success(None)
        return Failure(_partly_written(failed[0], failed, len(replies)))

    async def _delete_matching(self, operation: str, pattern: bytes) -> int | CacheError:
        client = self._client
        known = await self._run(operation, None, client.initialize)
        if isinstance(known, CacheError):
            return known
        results = await asyncio.gather(
            *(self._delete_on(node, operation, pattern) for node in client.get_primaries())
        )
        deleted = sum(count for count, _ in results)
        error = next((error for _, error in results if error is not None), None)
        return deleted if error is None else partial(error, deleted)

    async def _delete_on(
        self, node: ClusterNode, operation: str, pattern: bytes
    ) -> tuple[int, CacheError | None]:
        """SCAN one primary to the end, UNLINK each batch slot by slot."""
        deleted = 0
        cursor: Any = 0
        while True:
            reply = await self._call(
                operation, None, "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT,
                target_nodes=node,
            )  # fmt: skip
            if isinstance(reply, CacheError):
                return deleted, reply
            cursor, keys = _scan_reply(reply)
            if keys:
                groups = by_slot((key, None) for key in keys)
                commands = [
                    (slot, ("UNLINK", *(key for key, _ in members)))
                    for slot, members in groups.items()
                ]
                counts = await self._batch(operation, commands, write=True)
                if isinstance(counts, CacheError):
                    return deleted, counts
                deleted += sum(int(c) for c in counts if not isinstance(c, CacheError))
                failed = next((c for c in counts if isinstance(c, CacheError)), None)
                if failed is not None:
                    return deleted, failed
            if int(cursor) == 0:
                return deleted, None

    async def _send_script(
        self, operation: str, key: str | None, *command: Any, write: bool = False
    ) -> Any:
        count = int(command[2])
        if len(by_slot((full, None) for full in command[3 : 3 + count])) > 1:
            return invalid(
                operation,
                key,
                "a script's keys must share one hash slot on Redis Cluster: give them a "
                "common hash tag ('{user42}:a', '{user42}:b') or use hash_tag_namespace=True",
            )
        return await self._call(operation, key, *command, write=write)


def _scan_reply(reply: Any) -> tuple[Any, list[bytes]]:
    """``SCAN``'s reply through RedisCluster: ``({node: cursor}, keys)`` (or ``(cursor, keys)``)."""
    cursor, keys = reply
    if isinstance(cursor, Mapping):
        cursor = next(iter(cursor.values()), 0)
    return cursor, list(keys)


def _partly_written(first: CacheError, failures: list[CacheError], groups: int) -> CacheError:
    """A set_many failure over several slot groups, told honestly: the first group's error,
    how many groups were confirmed written, and ``maybe_applied`` if any may have been."""
    written = groups - len(failures)
    details: dict[str, DetailValue] = {
        **first.details,
        "slot_groups": groups,
        "slot_groups_written": written,
        "slot_groups_failed": len(failures),
    }
    if groups == 1:
        return replace(first, details=MappingProxyType(details))
    message = (
        f"{first.message} ({written} of {groups} slot groups confirmed written; "
        "each group is all or nothing)"
    )
    maybe = written > 0 or any(failure.maybe_applied for failure in failures)
    return replace(
        first,
        message=message[:MAX_MESSAGE],
        details=MappingProxyType(details),
        maybe_applied=maybe,
        # another attempt rewrites every group: harmless for SET (idempotent), so the
        # code's retryable flag stands
    )


_REDIRECTED: Final = (rx.MovedError, rx.AskError, rx.TryAgainError)
"""Replies that say a command was not run on this node (the slot moved, or is moving)."""


async def _on_node(
    node: ClusterNode, commands: list[Command], cache: Mapping[str, ClusterNode]
) -> list[Any]:
    """Send ``commands`` on one connection of ``node`` and read every reply, in order.

    An error reply stays in its place (the connection stays in step). A pooled connection
    the node closed meanwhile (a restart, a kill) is reopened before anything is sent. The
    commands are packed a slice at a time, yielding to the event loop in between, then
    written at once (a health check redis-py finds due runs before anything is sent, never
    between two slices); reading takes turns too (:class:`Turns`), since replies already
    buffered are parsed without suspending. A failure leaves replies unread: the
    connection is closed before it goes back, the replies read so far are kept and the
    failure, tagged with the node, stands for each of the others. A cancellation is raised.

    ``cache`` is redis-py's cache of the topology's nodes: a topology refresh may drop
    ``node`` from it meanwhile (a replica marked failing, say), and then no one would ever
    close a connection given back to it (``aclose`` closes the cached nodes): it is closed.
    """
    connection = node.acquire_connection()
    replies: list[Any] = []
    try:
        marked = getattr(node, "disconnect_if_needed", None)  # redis-py 8: marked to reconnect
        if marked is not None:
            await marked(connection)
        if connection.is_connected and await went_away(connection):
            await connection.disconnect()
        packed: list[bytes] = []
        for start in range(0, len(commands), BATCH_SLICE):
            if start:
                await asyncio.sleep(0)
            packed += connection.pack_commands(commands[start : start + BATCH_SLICE])
        await connection.send_packed_command(packed)
        turns = Turns()
        for _ in commands:
            if turns.due():
                await asyncio.sleep(0)
            try:
                replies.append(await connection.read_response())
            except rx.ResponseError as exc:
                replies.append(exc)
        return replies
    except Exception as exc:
        await connection.disconnect(nowait=True)
        exc.connection = node  # type: ignore[attr-defined]  # as redis-py tags it, for _error
        return replies + [exc] * (len(commands) - len(replies))
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    finally:
        if cache.get(node.name) is not node:
            await connection.disconnect(nowait=True)
        release = getattr(node, "release", None)
        if release is not None:
            release(connection)
        else:  # redis-py before 8 puts a connection back itself
            node._free.append(connection)


def _place(replies: list[Any], indexes: list[int], outcome: Any) -> None:
    """Put a group's replies (or its one exception, for each) at their indexes."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
        raise outcome  # a cancellation: never a reply
    for position, index in enumerate(indexes):
        replies[index] = outcome if isinstance(outcome, BaseException) else outcome[position]

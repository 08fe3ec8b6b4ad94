"""Redis Sentinel for :class:`~resilient_cache.RedisAdapter`: find the master, follow it.

redis-py's own Sentinel support asks the sentinels where the master is only when a
connection connects, so a pooled connection stays on the old master after a failover until
that master closes it. After ``SENTINEL FAILOVER`` the old master runs on as a master for
~10 s (until a sentinel demotes it), and acknowledges writes that vanish when it resyncs
from the new one. Here:

* :class:`SentinelMaster` knows where the master is. A background task, started by the
  first connection and stopped by :meth:`SentinelMaster.aclose`, subscribes to the
  ``+switch-master`` channel of a sentinel (another one when that one fails) and, while
  calls happen, asks again every second in case a message was missed. When the master
  moves, the ``epoch`` goes up: every connection made before is outdated, and the adapter
  reconnects it the next time it takes it from its pool (a connection in use finishes
  its command first).
* :class:`SentinelConnection` connects to that master. An address in doubt (at start,
  after a connection to it failed, after a READONLY reply) is asked of the sentinels
  first: in turn, the first that names a healthy master (not ``s_down``/``o_down``) wins
  and is asked first next time; one that fails goes last. Concurrent connections share
  one question. When no sentinel can be reached at all, connections go to the last
  master the sentinels named: sentinels down must not take the cache down with them.

A new connection is not checked with ``ROLE``: the sentinels name a node only once it
reported itself master to them, a stale address is caught by the READONLY reply of the
first write (which makes every connection ask again), and ``ROLE`` is outside the
least-privilege ACL (:mod:`resilient_cache.acl`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from resilient_cache.adapters._handshake import PLAIN_HANDSHAKE
from resilient_cache.adapters.redis_options import RedisOptions, sentinel_settings
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.log import get_logger

Address = tuple[str, int]

SWITCH_CHANNEL: Final = "+switch-master"
"""Where a sentinel announces a new master: ``<name> <old-ip> <old-port> <new-ip> <new-port>``."""

POLL_INTERVAL: Final = 1.0
"""Seconds between two questions to the sentinels while calls happen (a missed message)."""

DOUBT_WAIT: Final = 0.05
"""Longest a new connection waits for the sentinels when a master is known but in doubt;
then it goes to the known master (hung sentinels must not take a healthy master down)."""
ANSWER_GRACE: Final = 0.02
"""After the first healthy answer, how long the other sentinels' answers are awaited: the
highest ``config-epoch`` wins (a sentinel cut off from its peers names an older master)."""
_PAUSE_MIN: Final = 0.1  # after the watched sentinel failed, before watching another
_PAUSE_MAX: Final = 2.0
_AUTH_ERRORS: Final = (
    rx.AuthenticationError,
    rx.AuthorizationError,
    rx.NoPermissionError,
    rx.AuthenticationWrongNumberOfArgsError,
)
_UNREACHABLE: Final = (rx.ConnectionError, rx.TimeoutError, OSError)
_log = get_logger()


class MasterNotFoundError(rx.ConnectionError):
    """No sentinel named a healthy master (it is down, failing over, or unknown to them)."""


class _SentinelsUnreachableError(rx.ConnectionError):
    """No sentinel answered at all."""


class SentinelMaster:
    """Where the master of ``service_name`` is, according to the sentinels, kept current.

    Args:
        sentinels: the sentinels' ``(host, port)``.
        service_name: the monitored master's name.
        client_kwargs: redis-py connection arguments for the sentinels (credentials,
            timeouts, TLS); redis-py's internal retry is switched off here.
    """

    def __init__(
        self, sentinels: Sequence[Address], service_name: str, client_kwargs: dict[str, Any]
    ) -> None:
        self.service_name = service_name
        self.sentinels = tuple(sentinels)
        kwargs = {**client_kwargs, "retry": Retry(NoBackoff(), 0)}
        self._clients = [Redis(host=host, port=port, **kwargs) for host, port in sentinels]
        self.master: Address | None = None
        """The master's address, as last named by a sentinel (``None``: not asked yet)."""
        self.epoch = 0
        """Goes up each time the master moves: older connections must reconnect."""
        self._trusted = False  # False: ask the sentinels before the next connection
        self._changes = 0  # news of the master so far (a slower, older answer is ignored)
        self._doubts = 0  # distrust() calls so far (an answer older than a doubt is no trust)
        self._active = False  # calls happened since the watcher last asked
        self._lookup: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SentinelMaster({self.service_name!r}, master={self.master!r})"

    # -- what the adapter and its connections ask --------------------------------------

    def outdated(self, conn: SentinelConnection) -> bool:
        """Whether ``conn`` connected before the master last moved (it must reconnect)."""
        self._active = True
        return conn.epoch != self.epoch

    async def address(self) -> tuple[Address, int]:
        """The master's address for a new connection, and the epoch it connects in.

        Raises:
            redis.exceptions.ConnectionError: no sentinel named a healthy master
                (``AuthenticationError`` when every sentinel refused the credentials).
        """
        self._watch()
        if self.master is None:
            await self._locate()  # nothing known: the answer is needed (the caller's deadline
            # bounds the wait)
        elif not self._trusted:
            await self._locate(wait=DOUBT_WAIT)  # else the known master, while they answer
        assert self.master is not None  # _locate raised otherwise
        return self.master, self.epoch

    def distrust(self, *, drop_connections: bool) -> None:
        """The master may have moved (a connection failed, or it answered READONLY): the
        next connection asks the sentinels first; ``drop_connections``: every existing
        connection reconnects too."""
        self._trusted = False
        self._doubts += 1
        if drop_connections:
            self.epoch += 1

    async def aclose(self) -> None:
        """Stop watching and close the connections to the sentinels (reusable after)."""
        tasks = {task for task in (self._watcher, self._lookup) if task is not None}
        self._watcher = self._lookup = None
        while tasks:  # a cancellation can be lost in a client's own timeout: cancel again
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=0.1)
        self._trusted = False
        for client in self._clients:
            with contextlib.suppress(rx.RedisError, OSError):  # nothing left to save
                await client.aclose()

    # -- asking the sentinels ----------------------------------------------------------

    async def _locate(self, wait: float | None = None) -> None:
        """Ask the sentinels, sharing a question already under way; ``wait``: give up
        waiting after this many seconds (the question goes on for the next callers)."""
        task = self._lookup
        if task is None or task.done():
            task = self._lookup = asyncio.get_running_loop().create_task(self._ask())
            task.add_done_callback(_consume)
        try:
            if wait is not None:
                await asyncio.wait((task,), timeout=wait)
                if not task.done():
                    return
            # shielded: a caller cut by its deadline leaves the question to the others
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise rx.ConnectionError("the adapter was closed meanwhile") from None
            raise

    async def _ask(self) -> None:
        changes, doubts = self._changes, self._doubts
        try:
            found = await self._ask_sentinels()
        except _SentinelsUnreachableError:
            if self.master is None:
                raise
            _log.warning(
                "resilient_cache.sentinels_unreachable",
                service=self.service_name,
                master=_show(self.master),
            )
            # keep the last master named, trusted again: no answer is no news (the watcher
            # asks again while calls happen); a doubt raised meanwhile still stands
            self._trusted = self._doubts == doubts
            return
        if self._changes == changes:  # else newer news came while we asked
            # an answer to a question asked before a doubt cannot lift that doubt
            self._move(found, trust=self._doubts == doubts)

    async def _ask_sentinels(self) -> Address:
        """Ask every sentinel at once; the first healthy answer, or the highest
        ``config-epoch`` among those that come within :data:`ANSWER_GRACE` of it, wins.

        Each question is bounded by the sentinels' socket timeout, so the whole lookup is
        too, however many sentinels hang.
        """
        loop = asyncio.get_running_loop()
        asked = {loop.create_task(self._ask_one(client)): client for client in self._clients}
        problems: dict[str, list[str]] = {}  # what went wrong -> where
        refused = unreachable = 0
        answers: list[tuple[int, Address, Redis]] = []
        pending: set[asyncio.Task[dict[str, Any]]] = set(asked)
        until: float | None = None
        try:
            while pending:
                timeout = None if until is None else max(0.0, until - loop.time())
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break  # the grace after the first answer is over
                for task in done:
                    client = asked[task]
                    where = _show(_address_of(client))
                    exc = task.exception()
                    if exc is None:
                        state = task.result()
                        if state["is_master"] and not state["is_sdown"] and not state["is_odown"]:
                            epoch = int(state.get("config-epoch") or 0)
                            answers.append((epoch, (str(state["ip"]), int(state["port"])), client))
                            until = until or loop.time() + ANSWER_GRACE
                            continue
                        down = f"the master {state['ip']}:{state['port']} is down"
                        problems.setdefault(down, []).append(where)
                        continue
                    self._to_back(client)
                    if isinstance(exc, _AUTH_ERRORS):
                        refused += 1
                    elif isinstance(exc, _UNREACHABLE):
                        unreachable += 1
                    problems.setdefault(str(exc) or type(exc).__name__, []).append(where)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if answers:
            _, address, client = max(answers, key=lambda answer: answer[0])
            self._to_front(client)
            return address
        detail = "; ".join(f"{', '.join(where)}: {text}" for text, where in problems.items())
        if refused == len(asked):
            raise rx.AuthenticationError(f"every sentinel refused the credentials: {detail}")
        if unreachable == len(asked):
            raise _SentinelsUnreachableError(f"no sentinel answered: {detail}")
        raise MasterNotFoundError(
            f"no sentinel names a healthy master for {self.service_name!r}: {detail}"
        )

    async def _ask_one(self, client: Redis) -> dict[str, Any]:
        state: dict[str, Any] = await client.sentinel_master(  # type: ignore[assignment]
            self.service_name
        )
        return state

    def _move(self, address: Address, *, trust: bool = True) -> None:
        """The sentinels name ``address`` as the master now."""
        self._trusted = trust
        if address == self.master:
            return
        previous, self.master = self.master, address
        self._changes += 1
        self.epoch += 1
        if previous is not None:
            _log.info(
                "resilient_cache.sentinel_master_switched",
                service=self.service_name,
                from_address=_show(previous),
                to_address=_show(address),
            )

    def _to_front(self, client: Redis) -> None:
        if client in self._clients and self._clients[0] is not client:
            self._clients.remove(client)
            self._clients.insert(0, client)

    def _to_back(self, client: Redis) -> None:
        if client in self._clients and self._clients[-1] is not client:
            self._clients.remove(client)
            self._clients.append(client)

    # -- the watcher -------------------------------------------------------------------

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(
                self._follow(), name=f"resilient_cache sentinel watcher {self.service_name}"
            )

    async def _follow(self) -> None:
        """Listen to the first sentinel's ``+switch-master``; another one when it fails."""
        pause = _PAUSE_MIN
        me = asyncio.current_task()
        while self._watcher is me:  # else aclose() ended it (or a newer watcher took over)
            client = self._clients[0]
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(SWITCH_CHANNEL)
                await self._refresh()  # a switch before we listened
                pause = _PAUSE_MIN
                while self._clients[0] is client and self._watcher is me:  # else a lookup
                    # found it failing, or aclose() ended the watch
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=POLL_INTERVAL
                    )
                    if message is not None:
                        self._on_message(message.get("data"))
                    elif self._active:
                        self._active = False
                        await self._refresh()
            except (rx.RedisError, OSError) as exc:
                self._to_back(client)
                _log.warning(
                    "resilient_cache.sentinel_watch_failed",
                    service=self.service_name,
                    sentinel=_show(_address_of(client)),
                    error=type(exc).__name__,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, _PAUSE_MAX)
            finally:
                # typed from redis-py 8.2 on, untyped before: a typed name suits both
                close: Callable[[], Awaitable[None]] = pubsub.aclose
                with contextlib.suppress(rx.RedisError, OSError):
                    await close()

    def _on_message(self, data: object) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        parts = text.split()
        if len(parts) == 5 and parts[0] == self.service_name and parts[4].isdigit():
            self._move((parts[3], int(parts[4])))

    async def _refresh(self) -> None:
        with contextlib.suppress(rx.RedisError):  # the calls fail meanwhile, and say why
            await self._locate()


class SentinelConnection(Connection):
    """A connection to the master that :class:`SentinelMaster` names when it connects."""

    def __init__(self, *, sentinel_master: SentinelMaster, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sentinel_master = sentinel_master
        self.epoch = -1

    async def connect(self) -> None:
        if self.is_connected:
            return
        master = self.sentinel_master
        (self.host, self.port), self.epoch = await master.address()
        connected = False
        try:
            await super().connect()  # type: ignore[no-untyped-call]
            connected = True
        finally:
            if not connected:  # refused, timed out or cut: ask the sentinels next time
                master.distrust(drop_connections=False)


class SentinelSSLConnection(SentinelConnection, SSLConnection):
    """:class:`SentinelConnection` over TLS."""


def sentinel_client(
    sentinels: object,
    service_name: object,
    options: dict[str, Any],
    *,
    username: object,
    password: object,
    tls: bool,
) -> tuple[RedisOptions, Redis]:
    """Check the settings of :meth:`RedisAdapter.from_sentinel`; return its options and a
    client whose pool makes a :class:`SentinelConnection` each (the adapter takes its
    settings and makes its own connections with them).

    Raises:
        ConfigurationError: naming the bad setting.
    """
    for name, value in (("sentinel_username", username), ("sentinel_password", password)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(name, f"must be a str, got {type(value).__name__}")
    opts, addresses, kwargs = sentinel_settings(sentinels, service_name, options, tls=tls)
    client_kwargs = sentinel_client_kwargs(
        opts,
        kwargs,
        username=username if isinstance(username, str) else None,
        password=password if isinstance(password, str) else None,
    )
    pool = BlockingConnectionPool(
        connection_class=SentinelSSLConnection if tls else SentinelConnection,
        sentinel_master=SentinelMaster(addresses, str(service_name), client_kwargs),
        retry=Retry(NoBackoff(), 0),
        **kwargs,
        **PLAIN_HANDSHAKE,
    )
    return opts, Redis(connection_pool=pool)


def sentinel_client_kwargs(
    opts: RedisOptions,
    data_kwargs: dict[str, Any],
    *,
    username: str | None,
    password: str | None,
) -> dict[str, Any]:
    """redis-py arguments for the connections to the sentinels.

    Their own credentials (a sentinel's ACL is not the data nodes'); the data nodes'
    timeouts, keepalive and TLS settings. No client name: ``CLIENT SETNAME`` would need one
    more command in the sentinels' ACL than ``+sentinel|master +subscribe``.
    """
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": opts.connect_timeout,
        "socket_timeout": opts.socket_timeout or opts.connect_timeout,
        "socket_keepalive": opts.socket_keepalive,
        **PLAIN_HANDSHAKE,  # a sentinel's ACL refuses CLIENT SETINFO too
    }
    if username is not None:
        kwargs["username"] = username
    if password is not None:
        kwargs["password"] = password
    tls = {name: value for name, value in data_kwargs.items() if name.startswith("ssl_")}
    if tls:
        kwargs.update(tls, ssl=True)
    return kwargs


def _address_of(client: Redis) -> Address:
    settings = client.connection_pool.connection_kwargs
    return str(settings.get("host")), int(settings.get("port", 0))


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _consume(task: asyncio.Task[None]) -> None:
    """Retrieve a lookup's error that no caller awaited (they all gave up meanwhile)."""
    if not task.cancelled():
        task.exception()

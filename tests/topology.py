"""Real Redis Cluster and Sentinel deployments for the tests, built from redis-server processes.

* :class:`RedisClusterProcesses`: N primaries with M replicas each (default 3 x 1), formed with
  ``redis-cli --cluster create``; kill a primary with SIGKILL and wait for its replica's
  promotion; bring a node back; :meth:`~RedisClusterProcesses.heal` undoes what a test broke.
* :class:`RedisSentinelProcesses`: a master, a replica and 3 sentinels (quorum 2); a forced
  ``SENTINEL FAILOVER`` or a SIGKILL of the master, each waited until the sentinels agree on
  the new master and it answers ``ROLE`` as a master.

Every process listens on the loopback interface on a free port (never a fixed or default
one), lives in a private temporary directory, and is stopped by its PID (:meth:`cleanup`,
also when the start fails half-way). Both classes are context managers.

The helpers are synchronous, like :class:`~resilient_cache.testing.ServerProcess`: they poll
with short sleeps. From an async test call them through ``asyncio.to_thread`` when the event
loop must keep running meanwhile (e.g. to measure what a client sees during a failover).

The pytest fixtures are at the end of this module: ``redis_cluster`` (a module-scoped cluster,
healed and flushed before each test) and ``redis_sentinel`` (a fresh deployment per test). A
test module imports them (``from tests.topology import redis_cluster, ...``) and lists them in
its ``__all__``; a ``pytest_plugins`` entry would import this module a second time.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from resilient_cache.testing import LOOPBACK, RedisServer, ServerProcess, free_port
from tests.servers import require_binary

__all__ = [
    "CLUSTER_SLOTS",
    "Address",
    "ClusterNodeServer",
    "NodeView",
    "RedisClusterProcesses",
    "RedisSentinelProcesses",
    "SentinelServer",
    "TopologyError",
    "private_cluster",
    "query",
    "redis_cli_binary",
    "redis_cluster",
    "redis_cluster_deployment",
    "redis_sentinel",
    "try_query",
]

T = TypeVar("T")

Address = tuple[str, int]
"""``(host, port)``, what redis-py's ``startup_nodes``/``Sentinel([...])`` take."""

CLUSTER_SLOTS: Final = 16384
_MAX_PORT: Final = 65535
_CLUSTER_BUS_OFFSET: Final = 10000  # the bus port when ``cluster-port`` is not set
_POLL: Final = 0.05
_FAST_SYNC: Final = ("--repl-diskless-sync-delay", "0")
"""A replica's full sync starts at once (Redis 7 waits 5 s for more replicas by default)."""


class TopologyError(RuntimeError):
    """A deployment did not reach the expected state in time (the message shows why)."""


# --- raw access to one server -------------------------------------------------------------


def query(port: int, *args: str, timeout: float = 1.0) -> Any:
    """Send one command to ``127.0.0.1:port`` and return the raw reply (strings decoded).

    One connection, no retry, no redis-py response callback (``execute_command("CLUSTER",
    "INFO")`` is looked up as ``CLUSTER``, which has none), so the reply is what the server
    said. Raises redis-py's errors (``ConnectionError`` when nothing listens).
    """
    client = redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
    )
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def try_query(port: int, *args: str, timeout: float = 1.0) -> Any | None:
    """:func:`query`, or ``None`` if the server does not answer or answers an error."""
    try:
        return query(port, *args, timeout=timeout)
    except (redis.RedisError, OSError):
        return None


def _info_fields(text: str | None) -> dict[str, str]:
    """``INFO`` / ``CLUSTER INFO`` text as a dict."""
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _pairs(reply: Any) -> dict[str, str]:
    """A ``SENTINEL MASTER``-like reply as a dict: a map (RESP3, redis-py 8's default) or a
    flat ``[k1, v1, k2, v2...]`` array (RESP2)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply or [])
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


def _wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    diagnostics: Callable[[], str],
) -> T:
    """Poll ``condition`` until it returns something other than ``None``/``False``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TopologyError(f"{what}: not reached in {timeout:.0f}s\n{diagnostics()}")
        time.sleep(_POLL)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _server_version(binary: str) -> tuple[int, ...]:
    """``(7, 0, 15)`` from ``redis-server --version`` (``(0,)`` if unreadable)."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out.stdout)
    return tuple(int(part) for part in match.groups()) if match else (0,)


def _tail(path: os.PathLike[str] | str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as file:
            return "".join(file.readlines()[-lines:])
    except OSError:
        return ""


# --- Redis Cluster ------------------------------------------------------------------------


class ClusterNodeServer(RedisServer):
    """One ``redis-server --cluster-enabled yes`` of a :class:`RedisClusterProcesses`.

    ``port`` and ``bus_port`` are given (chosen free by the deployment); ``nodes.conf`` lives
    in the node's own directory, so a :meth:`restart` rejoins the cluster with the same
    identity (as a replica of whoever took its slots meanwhile).
    """

    name = "redis-cluster-node"

    def __init__(
        self,
        binary: str,
        port: int,
        bus_port: int,
        *,
        node_timeout_ms: int,
        explicit_bus_port: bool,
    ) -> None:
        super().__init__(binary)
        self.port = port
        self.bus_port = bus_port
        self.node_timeout_ms = node_timeout_ms
        self.explicit_bus_port = explicit_bus_port
        self.node_id = ""
        """The cluster node id (``CLUSTER MYID``), known once the node has started."""

    @property
    def address(self) -> Address:
        return (LOOPBACK, self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _argv(self) -> list[str]:
        argv = [
            *super()._argv(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # fail over whatever the replica's lag: the tests want a promotion every time
            "--cluster-replica-validity-factor", "0",
            "--cluster-require-full-coverage", "yes",
            "--cluster-allow-reads-when-down", "no",
            "--cluster-announce-ip", LOOPBACK,
            *_FAST_SYNC,
        ]  # fmt: skip
        if self.explicit_bus_port:
            argv += ["--cluster-port", str(self.bus_port)]
        return argv

    def start(self, ready_timeout: float = 10.0) -> None:
        super().start(ready_timeout)
        self.node_id = str(query(self.port, "CLUSTER", "MYID"))

    def __repr__(self) -> str:
        return f"<ClusterNodeServer {LOOPBACK}:{self.port} id={self.node_id[:8]}>"


@dataclass(frozen=True, slots=True)
class NodeView:
    """One line of ``CLUSTER NODES``: how one node sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None  # for a replica: the id of its primary
    slots: tuple[tuple[int, int], ...]  # ranges, inclusive

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @property
    def slot_count(self) -> int:
        return sum(end - start + 1 for start, end in self.slots)

    @classmethod
    def parse(cls, line: str) -> NodeView:
        # <id> <ip:port@cport[,hostname]> <flags> <primary|-> <ping> <pong> <epoch> <link> <slot>...
        fields = line.split()
        port = int(fields[1].split("@", 1)[0].rsplit(":", 1)[1])
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated/imported: not owned yet
                continue
            start, _, end = item.partition("-")
            slots.append((int(start), int(end or start)))
        return cls(
            node_id=fields[0],
            port=port,
            flags=frozenset(fields[2].split(",")),
            primary_id=None if fields[3] == "-" else fields[3],
            slots=tuple(slots),
        )


class RedisClusterProcesses:
    """A Redis Cluster of ``primaries`` x (1 + ``replicas``) redis-server processes.

    ``start()`` picks free loopback ports (client and cluster-bus ports both free), starts
    every node in its own directory, runs ``redis-cli --cluster create ... --cluster-yes``
    and waits until every node reports ``cluster_state:ok`` with all 16384 slots served
    and every replica in sync with its primary. ``cleanup()`` stops every process by PID
    and removes the directories (``start()`` calls it itself if it fails).

    Args:
        server_binary: ``redis-server``.
        cli_binary: ``redis-cli`` (only for ``--cluster create``).
        primaries: how many primaries (3 is the minimum Redis Cluster accepts).
        replicas: replicas per primary.
        node_timeout_ms: ``cluster-node-timeout``: a dead primary is flagged failing after
            this, and its replica starts an election about 0.5-1 s later.
    """

    def __init__(
        self,
        server_binary: str = "redis-server",
        cli_binary: str = "redis-cli",
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
    ) -> None:
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self.server_binary = server_binary
        self.cli_binary = cli_binary
        self.primary_count = primaries
        self.replicas_per_primary = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[ClusterNodeServer] = []
        self.create_output = ""
        """What ``redis-cli --cluster create`` printed."""
        self._slots_at_kill: dict[str, tuple[tuple[int, int], ...]] = {}

    # life cycle

    def start(self, timeout: float = 60.0) -> None:
        """Start the nodes, form the cluster, and wait until it is healthy."""
        try:
            explicit_bus = _server_version(self.server_binary) >= (7, 0, 0)
            count = self.primary_count * (1 + self.replicas_per_primary)
            for port, bus_port in self._pick_ports(count, explicit_bus=explicit_bus):
                node = ClusterNodeServer(
                    self.server_binary,
                    port,
                    bus_port,
                    node_timeout_ms=self.node_timeout_ms,
                    explicit_bus_port=explicit_bus,
                )
                self.nodes.append(node)  # before start(): cleanup() removes its directory
                node.start()
            self._create(timeout)
            # Redis 7 leaves a replica whose replication offset is still 0 out of CLUSTER
            # SLOTS (so out of redis-py's topology): a first write gives every replica an
            # offset. FLUSHALL on an empty primary is such a write.
            _wait_until(
                lambda: len(self.primaries()) == self.primary_count,
                timeout,
                "primaries known",
                self.diagnostics,
            )
            self.flushall()
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise

    @staticmethod
    def _pick_ports(count: int, *, explicit_bus: bool) -> list[tuple[int, int]]:
        """``count`` distinct (port, bus port) pairs, all free right now.

        Redis >= 7 takes ``cluster-port``: any other free port. Older servers use port + 10000,
        which must be free too (and <= 65535).
        """
        taken: set[int] = set()
        pairs: list[tuple[int, int]] = []
        while len(pairs) < count:
            port = free_port()
            if port in taken:
                continue
            if explicit_bus:
                bus = free_port()
                if bus in taken or bus == port:
                    continue
            else:
                bus = port + _CLUSTER_BUS_OFFSET
                if bus > _MAX_PORT or bus in taken or not _port_is_free(bus):
                    continue
            taken.update((port, bus))
            pairs.append((port, bus))
        return pairs

    def _create(self, timeout: float) -> None:
        argv = [
            self.cli_binary,
            "--cluster", "create",
            *(f"{LOOPBACK}:{node.port}" for node in self.nodes),
            "--cluster-replicas", str(self.replicas_per_primary),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise TopologyError(
                f"redis-cli --cluster create did not finish in {timeout:.0f}s:\n"
                f"{exc.stdout!r}\n{self.diagnostics()}"
            ) from exc
        self.create_output = done.stdout + done.stderr
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise TopologyError(
                f"redis-cli --cluster create failed ({done.returncode}):\n"
                f"{self.create_output}\n{self.diagnostics()}"
            )

    def cleanup(self) -> None:
        """Stop every node by its PID (SIGTERM, then SIGKILL) and remove its directory."""
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # addresses

    @property
    def startup_nodes(self) -> list[Address]:
        """``(host, port)`` of every node that is running (for ``ClusterNode(host, port)``)."""
        return [node.address for node in self.running_nodes()]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` of one running node (``RedisCluster.from_url``)."""
        return f"redis://{LOOPBACK}:{self.running_nodes()[0].port}"

    def running_nodes(self) -> list[ClusterNodeServer]:
        return [node for node in self.nodes if node.running]

    def node_by_id(self, node_id: str) -> ClusterNodeServer:
        return next(node for node in self.nodes if node.node_id == node_id)

    def node_by_port(self, port: int) -> ClusterNodeServer:
        return next(node for node in self.nodes if node.port == port)

    # topology, as the running nodes see it

    def view(self, observer: ClusterNodeServer | None = None) -> list[NodeView]:
        """``CLUSTER NODES`` as seen by ``observer`` (default: the first running node)."""
        node = observer or self.running_nodes()[0]
        text = query(node.port, "CLUSTER", "NODES")
        return [NodeView.parse(line) for line in str(text).splitlines() if line.strip()]

    @staticmethod
    def keyslot(key: str | bytes) -> int:
        """The hash slot of ``key`` (hash tags ``{...}`` included), computed locally."""
        return key_slot(key.encode() if isinstance(key, str) else key)

    def primary_for_slot(self, slot: int) -> ClusterNodeServer:
        """The node serving ``slot`` right now (as the first running node sees it)."""
        for entry in self.view():
            serves = any(start <= slot <= end for start, end in entry.slots)
            if entry.is_primary and not entry.failing and serves:
                return self.node_by_id(entry.node_id)
        raise TopologyError(f"no healthy primary serves slot {slot}")

    def primary_for_key(self, key: str | bytes) -> ClusterNodeServer:
        return self.primary_for_slot(self.keyslot(key))

    def replicas_of(self, primary: ClusterNodeServer) -> list[ClusterNodeServer]:
        """The nodes that replicate ``primary`` (running or not)."""
        return [
            self.node_by_id(entry.node_id)
            for entry in self.view()
            if entry.primary_id == primary.node_id and not entry.is_primary
        ]

    def primaries(self) -> list[ClusterNodeServer]:
        """The healthy primaries that serve slots."""
        return [
            self.node_by_id(entry.node_id)
            for entry in self.view()
            if entry.is_primary and entry.slots and not entry.failing
        ]

    def replicas(self) -> list[ClusterNodeServer]:
        return [
            self.node_by_id(entry.node_id)
            for entry in self.view()
            if not entry.is_primary and not entry.failing
        ]

    # faults

    def kill(self, node: ClusterNodeServer) -> None:
        """SIGKILL ``node`` (a crash: no goodbye to the cluster), and reap it."""
        served = [e.slots for e in self._views_of(node) if e.node_id == node.node_id and e.slots]
        if served:
            self._slots_at_kill[node.node_id] = served[0]
        node.stop(kill=True)

    def wait_for_failover(
        self, old_primary: ClusterNodeServer, timeout: float = 30.0
    ) -> ClusterNodeServer:
        """Wait until a replica of ``old_primary`` (killed with :meth:`kill`) serves the slots
        it served, seen by every running node, and every running node says
        ``cluster_state:ok``; return the new primary."""
        slots = self._slots_at_kill.get(old_primary.node_id)
        if slots is None:
            raise TopologyError(f"{old_primary} served no slots when it was killed")

        def promoted() -> ClusterNodeServer | None:
            new_ids: set[str] = set()
            for node in self.running_nodes():
                views = try_query(node.port, "CLUSTER", "NODES")
                info = _info_fields(try_query(node.port, "CLUSTER", "INFO"))
                if views is None or info.get("cluster_state") != "ok":
                    return None
                owners = [NodeView.parse(line) for line in str(views).splitlines() if line.strip()]
                owner = next((e for e in owners if e.is_primary and e.slots == slots), None)
                if owner is None or owner.failing or owner.node_id == old_primary.node_id:
                    return None
                new_ids.add(owner.node_id)
            if len(new_ids) != 1:
                return None
            new = self.node_by_id(new_ids.pop())
            role = try_query(new.port, "ROLE")
            return new if role and role[0] == "master" else None

        return _wait_until(promoted, timeout, "failover", self.diagnostics)

    def _views_of(self, node: ClusterNodeServer) -> list[NodeView]:
        """How the running nodes see ``node`` (one entry per observer that answers)."""
        found: list[NodeView] = []
        for observer in self.running_nodes():
            text = try_query(observer.port, "CLUSTER", "NODES")
            for line in str(text or "").splitlines():
                if line.startswith(node.node_id):
                    found.append(NodeView.parse(line))
        return found

    def restart(self, node: ClusterNodeServer, timeout: float = 30.0) -> None:
        """Start a stopped ``node`` again (same port, same ``nodes.conf``) and wait until the
        cluster is healthy with it (a former primary comes back as a replica)."""
        if node.running:
            node.stop()
        node.start()
        self.wait_healthy(timeout)

    def heal(self, timeout: float = 30.0) -> None:
        """Restart every stopped node and wait until the cluster is healthy again."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_healthy(timeout)

    def flushall(self) -> None:
        """Empty every primary (``FLUSHALL``); replicas follow."""
        for node in self.primaries():
            query(node.port, "FLUSHALL")

    # health

    def health_problems(self) -> list[str]:
        """Why the cluster is not healthy yet (empty when it is)."""
        problems: list[str] = []
        expected = len(self.nodes)
        for node in self.nodes:
            if not node.running:
                problems.append(f"{node}: not running")
                continue
            info = _info_fields(try_query(node.port, "CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok":
                problems.append(f"{node}: cluster_state={info.get('cluster_state')}")
            if info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
                problems.append(f"{node}: cluster_slots_ok={info.get('cluster_slots_ok')}")
            if info.get("cluster_known_nodes") != str(expected):
                problems.append(f"{node}: cluster_known_nodes={info.get('cluster_known_nodes')}")
            text = try_query(node.port, "CLUSTER", "NODES")
            views = [NodeView.parse(line) for line in str(text or "").splitlines() if line]
            bad = [f"{v.port}:{','.join(sorted(v.flags))}" for v in views if v.failing]
            if bad:
                problems.append(f"{node}: sees failing nodes {bad}")
            primaries = [v for v in views if v.is_primary and v.slots]
            if len(primaries) != self.primary_count:
                problems.append(f"{node}: sees {len(primaries)} primaries with slots")
            replicas = [v for v in views if not v.is_primary]
            if len(replicas) != self.primary_count * self.replicas_per_primary:
                problems.append(f"{node}: sees {len(replicas)} replicas")
            slots = try_query(node.port, "CLUSTER", "SLOTS") or []
            short = [f"{r[0]}-{r[1]}" for r in slots if len(r) - 2 != 1 + self.replicas_per_primary]
            if short:
                problems.append(f"{node}: CLUSTER SLOTS lacks replicas for {short}")
            role = try_query(node.port, "ROLE")
            if role and role[0] == "slave" and role[3] != "connected":
                problems.append(f"{node}: replica link {role[3]}")
        return problems

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every node is running, agrees on the topology, says ``cluster_state:ok``
        with every slot served, and every replica is connected to its primary."""
        _wait_until(
            lambda: not self.health_problems(), timeout, "healthy cluster", self.diagnostics
        )

    def diagnostics(self) -> str:
        """What went wrong, for an error message: problems, each node's view, log tails."""
        parts = ["problems: " + "; ".join(self.health_problems() or ["none"])]
        for node in self.nodes:
            state = "running" if node.running else "stopped"
            parts.append(f"--- {node} ({state})")
            parts.append(str(try_query(node.port, "CLUSTER", "INFO") or "").strip())
            parts.append(str(try_query(node.port, "CLUSTER", "NODES") or "").strip())
            parts.append("log tail:\n" + _tail(node.log_path, 8))
        if self.create_output:
            parts.append("--- redis-cli --cluster create:\n" + self.create_output[-2000:])
        return "\n".join(parts)


# --- Redis Sentinel -----------------------------------------------------------------------


class SentinelServer(ServerProcess):
    """One ``redis-server <conf> --sentinel`` (there is no need for a redis-sentinel binary).

    ``config`` holds the sentinel directives; ``port``, ``bind``, ``dir`` are added here. The
    file is written once: a sentinel rewrites it (``CONFIG REWRITE``) with what it learns, and
    a :meth:`restart` starts from that.
    """

    name = "redis-sentinel"

    def __init__(self, binary: str, config: list[str]) -> None:
        super().__init__(binary)
        self.config = config
        self.myid = secrets.token_hex(20)  # 40 hex characters, like a run id

    @property
    def config_path(self) -> str:
        return str(self.dir / "sentinel.conf")

    @property
    def address(self) -> Address:
        return (LOOPBACK, self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout: float = 10.0) -> None:
        if not os.path.exists(self.config_path):
            lines = [
                f"port {self.port}",
                f"bind {LOOPBACK}",
                f"dir {self.dir}",
                "daemonize no",
                f"sentinel myid {self.myid}",
                *self.config,
            ]
            with open(self.config_path, "w") as file:
                file.write("\n".join(lines) + "\n")
        super().start(ready_timeout)

    def _argv(self) -> list[str]:
        return [self.binary, self.config_path, "--sentinel"]

    def _answers(self) -> bool:
        return try_query(self.port, "PING") is True

    def __repr__(self) -> str:
        return f"<SentinelServer {LOOPBACK}:{self.port}>"


class RedisSentinelProcesses:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching them.

    The sentinels' configuration names each other (``known-sentinel``) and the replica
    (``known-replica``), so they agree within a second of starting instead of waiting for
    the hello messages (every 2 s) and the master's INFO (every 10 s).

    Args:
        server_binary: ``redis-server`` (also runs the sentinels, with ``--sentinel``).
        service_name: the monitored master's name (``master_for(service_name)``).
        replicas: how many replicas of the master.
        sentinels: how many sentinels; ``quorum`` of them must agree the master is down.
        down_after_ms: ``down-after-milliseconds``: no answer for this long = down.
        failover_timeout_ms: ``failover-timeout`` (also: no new automatic failover of this
            master for twice this long after one started).
    """

    def __init__(
        self,
        server_binary: str = "redis-server",
        *,
        service_name: str = "resilient-cache",
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.server_binary = server_binary
        self.service_name = service_name
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: list[RedisServer] = []
        """The data nodes: ``servers[0]`` is the first master, then the replicas."""
        self.sentinel_servers: list[SentinelServer] = []

    # life cycle

    def start(self, timeout: float = 30.0) -> None:
        """Start master, replicas (in sync), then the sentinels; wait until they agree."""
        try:
            master = RedisServer(self.server_binary, *_FAST_SYNC)
            self.servers.append(master)
            master.start()
            for _ in range(self.replica_count):
                replica = RedisServer(
                    self.server_binary, *_FAST_SYNC, "--replicaof", LOOPBACK, str(master.port)
                )
                self.servers.append(replica)
                replica.start()
            _wait_until(self._replicas_in_sync, timeout, "replicas in sync", self.diagnostics)
            for _ in range(self.sentinel_count):
                self.sentinel_servers.append(SentinelServer(self.server_binary, []))
            for sentinel in self.sentinel_servers:
                sentinel.config = self._sentinel_config(sentinel, master)
                sentinel.start()
            self.wait_agreed(timeout)
        except BaseException:
            self.cleanup()
            raise

    def _sentinel_config(self, me: SentinelServer, master: RedisServer) -> list[str]:
        name = self.service_name
        lines = [
            "sentinel resolve-hostnames no",
            "sentinel announce-hostnames no",
            f"sentinel monitor {name} {LOOPBACK} {master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        lines += [f"sentinel known-replica {name} {LOOPBACK} {s.port}" for s in self.servers[1:]]
        lines += [
            f"sentinel known-sentinel {name} {LOOPBACK} {other.port} {other.myid}"
            for other in self.sentinel_servers
            if other is not me
        ]
        return lines

    def cleanup(self) -> None:
        """Stop the sentinels then the data nodes by PID, and remove their directories."""
        for process in [*self.sentinel_servers, *self.servers]:
            process.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # addresses

    @property
    def sentinels(self) -> list[Address]:
        """``(host, port)`` of every running sentinel (``Sentinel(sentinels)``)."""
        return [s.address for s in self.sentinel_servers if s.running]

    def _sentinel_reply(self, *args: str) -> Any:
        errors: list[str] = []
        for sentinel in self.sentinel_servers:
            if sentinel.running:
                try:
                    return query(sentinel.port, *args)
                except redis.RedisError as exc:
                    errors.append(f"{sentinel}: {exc!r}")
        raise TopologyError(f"no sentinel answered {args}: {errors}")

    def master_address(self) -> Address:
        """The master's address, asked to a sentinel (``GET-MASTER-ADDR-BY-NAME``)."""
        host, port = self._sentinel_reply("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        return (str(host), int(port))

    def server_at(self, address: Address) -> RedisServer:
        return next(s for s in self.servers if s.port == address[1])

    def master(self) -> RedisServer:
        """The data node that the sentinels call master now."""
        return self.server_at(self.master_address())

    # faults

    def failover(self, *, wait: bool = True, timeout: float = 30.0) -> Address:
        """``SENTINEL FAILOVER``: promote a replica without asking the other sentinels.

        With ``wait``, return once every sentinel names a new master that answers ``ROLE``
        as a master. The old master keeps running and keeps accepting writes until a
        sentinel reconfigures it as a replica (``+convert-to-slave``, seconds later: see
        :meth:`wait_old_master_demoted`).
        """
        old = self.master_address()
        self._sentinel_reply("SENTINEL", "FAILOVER", self.service_name)
        return self.wait_for_new_master(old, timeout) if wait else old

    def kill_master(self, *, wait: bool = True, timeout: float = 30.0) -> Address:
        """SIGKILL the master; with ``wait``, return the new master's address once promoted
        (without ``wait``, return the killed master's address)."""
        old = self.master_address()
        self.server_at(old).stop(kill=True)
        return self.wait_for_new_master(old, timeout) if wait else old

    def wait_for_new_master(self, old: Address, timeout: float = 30.0) -> Address:
        """Wait until every running sentinel names the same master, not ``old``, and it
        answers ``ROLE`` as a master."""

        def switched() -> Address | None:
            seen: set[Address] = set()
            for sentinel in self.sentinel_servers:
                if not sentinel.running:
                    continue
                reply = try_query(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
                )
                if not reply:
                    return None
                seen.add((str(reply[0]), int(reply[1])))
            if len(seen) != 1:
                return None
            address = seen.pop()
            if address == old:
                return None
            role = try_query(address[1], "ROLE")
            return address if role and role[0] == "master" else None

        return _wait_until(switched, timeout, "sentinel failover", self.diagnostics)

    def wait_old_master_demoted(self, old: Address, timeout: float = 30.0) -> float:
        """Wait until the (still running) ``old`` master reports ``ROLE`` slave; return how
        long that took from now."""
        started = time.monotonic()

        def demoted() -> bool:
            role = try_query(old[1], "ROLE")
            return role is not None and role[0] == "slave"

        _wait_until(demoted, timeout, "old master demoted", self.diagnostics)
        return time.monotonic() - started

    # health

    def _replicas_in_sync(self) -> bool:
        """Every replica has finished its first sync (``ROLE`` says ``connected``)."""
        roles = [try_query(server.port, "ROLE") for server in self.servers[1:]]
        return all(role is not None and role[3] == "connected" for role in roles)

    def agreement_problems(self) -> list[str]:
        """Why the sentinels do not agree yet (empty when they do)."""
        problems: list[str] = []
        masters: set[str] = set()
        for sentinel in self.sentinel_servers:
            if not sentinel.running:
                problems.append(f"{sentinel}: not running")
                continue
            state = _pairs(try_query(sentinel.port, "SENTINEL", "MASTER", self.service_name))
            if not state:
                problems.append(f"{sentinel}: does not answer SENTINEL MASTER")
                continue
            masters.add(f"{state.get('ip')}:{state.get('port')}")
            if state.get("flags") != "master":
                problems.append(f"{sentinel}: master flags {state.get('flags')}")
            if state.get("num-slaves") != str(self.replica_count):
                problems.append(f"{sentinel}: num-slaves={state.get('num-slaves')}")
            others = state.get("num-other-sentinels")
            if others != str(self.sentinel_count - 1):
                problems.append(f"{sentinel}: num-other-sentinels={others}")
            replicas = try_query(sentinel.port, "SENTINEL", "REPLICAS", self.service_name)
            for replica in map(_pairs, replicas or []):
                if replica.get("flags") != "slave" or replica.get("master-link-status") != "ok":
                    problems.append(
                        f"{sentinel}: replica {replica.get('port')} flags={replica.get('flags')}"
                        f" link={replica.get('master-link-status')}"
                    )
            peers = try_query(sentinel.port, "SENTINEL", "SENTINELS", self.service_name)
            for peer in map(_pairs, peers or []):
                if peer.get("flags") != "sentinel":
                    problems.append(f"{sentinel}: peer {peer.get('port')} {peer.get('flags')}")
            if try_query(sentinel.port, "SENTINEL", "CKQUORUM", self.service_name) is None:
                problems.append(f"{sentinel}: CKQUORUM fails")
        if len(masters) > 1:
            problems.append(f"sentinels disagree on the master: {sorted(masters)}")
        return problems

    def wait_agreed(self, timeout: float = 30.0) -> None:
        """Wait until every sentinel sees the same healthy master, its replicas with a
        working link, and the other sentinels."""
        _wait_until(
            lambda: not self.agreement_problems(), timeout, "sentinel agreement", self.diagnostics
        )

    def diagnostics(self) -> str:
        parts = ["problems: " + "; ".join(self.agreement_problems() or ["none"])]
        for server in self.servers:
            state = "running" if server.proc and server.proc.poll() is None else "stopped"
            parts.append(
                f"--- redis {server.port} ({state}): ROLE {try_query(server.port, 'ROLE')}"
            )
            parts.append("log tail:\n" + _tail(server.log_path, 6))
        for sentinel in self.sentinel_servers:
            parts.append(f"--- {sentinel}")
            parts.append("log tail:\n" + _tail(sentinel.log_path, 12))
        return "\n".join(parts)


# --- pytest fixtures ----------------------------------------------------------------------
#
# Scope: a cluster costs ~2 s to start (redis-cli --cluster create alone sleeps ~1 s), so one
# per test module (``redis_cluster_deployment``); the function-scoped ``redis_cluster`` hands
# each test that cluster healthy and empty. Tests that share it must not fail a node over:
# its ``cluster-node-timeout`` is long (SHARED_NODE_TIMEOUT_MS), so that no stall of a busy
# machine fails a primary over under another test's feet, and ``redis_cluster`` fails a test
# whose primaries changed. A test that kills or fails over a node takes ``private_cluster``, a
# cluster of its own with the fast 1 s node timeout. A sentinel deployment starts in ~1 s and
# a failover cannot be undone quickly, so ``redis_sentinel`` builds a fresh one per test.
# ``redis_binary`` (redis-server, session-scoped) comes from tests/conftest.py.

SHARED_NODE_TIMEOUT_MS: Final = 15_000
"""``cluster-node-timeout`` of the shared cluster: only a node silent this long fails over."""


@pytest.fixture(scope="session")
def redis_cli_binary() -> str:
    """``redis-cli``: skip without it (fail under ``CI=true``), like redis-server."""
    return require_binary("redis-cli", "RESILIENT_CACHE_REDIS_CLI")


@pytest.fixture(scope="module")
def redis_cluster_deployment(
    redis_binary: str, redis_cli_binary: str
) -> Iterator[RedisClusterProcesses]:
    """A 3-primary/3-replica cluster for the test module (see :func:`redis_cluster`)."""
    with RedisClusterProcesses(
        redis_binary, redis_cli_binary, node_timeout_ms=SHARED_NODE_TIMEOUT_MS
    ) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(
    redis_cluster_deployment: RedisClusterProcesses,
) -> Iterator[RedisClusterProcesses]:
    """The module's cluster, healthy and empty, for one test that fails no node over.

    The test may pause a node, fill its memory or move a slot, but not kill a node or fail
    it over (take :func:`private_cluster` for that): the same primaries serve the next test,
    and a change of primaries during the test fails it.
    """
    cluster = redis_cluster_deployment
    cluster.heal()
    cluster.flushall()
    before = sorted(node.port for node in cluster.primaries())
    yield cluster
    after = sorted(node.port for node in cluster.primaries())
    if after != before:
        pytest.fail(
            f"the shared cluster's primaries changed during the test ({before} -> {after}): "
            f"a failover; a test that causes one takes private_cluster\n{cluster.diagnostics()}"
        )


@pytest.fixture
def private_cluster(redis_binary: str, redis_cli_binary: str) -> Iterator[RedisClusterProcesses]:
    """A 3-primary/3-replica cluster of the test's own (~2 s to start), free to be killed
    and failed over: a dead primary is replaced within about 2 s (1 s node timeout)."""
    with RedisClusterProcesses(redis_binary, redis_cli_binary) as cluster:
        yield cluster


@pytest.fixture
def redis_sentinel(redis_binary: str) -> Iterator[RedisSentinelProcesses]:
    """A fresh master, replica and 3 sentinels for one test (~1 s to start), free to be
    failed over or killed: a failover cannot be undone quickly (a killed master restarted
    is a *master* again until the sentinels convert it, 8 s or more later)."""
    with RedisSentinelProcesses(redis_binary) as deployment:
        yield deployment

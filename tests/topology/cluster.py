"""A real Redis Cluster of redis-server processes, and its pytest fixtures."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest
from redis.crc import key_slot

from resilient_cache.adapters._commands import info_fields
from resilient_cache.testing import LOOPBACK, RedisServer, Started, free_port, server_version
from tests.servers import require_binary
from tests.topology.common import (
    CLUSTER_BUS_OFFSET,
    CLUSTER_SLOTS,
    FAST_SYNC,
    MAX_PORT,
    Address,
    TopologyError,
    port_is_free,
    query,
    tail,
    try_query,
    wait_until,
)

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
            *FAST_SYNC,
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


class RedisClusterProcesses(Started):
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
            explicit_bus = server_version(self.server_binary) >= (7, 0, 0)
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
            wait_until(
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
                bus = port + CLUSTER_BUS_OFFSET
                if bus > MAX_PORT or bus in taken or not port_is_free(bus):
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
                info = info_fields(try_query(node.port, "CLUSTER", "INFO"))
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

        return wait_until(promoted, timeout, "failover", self.diagnostics)

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
            info = info_fields(try_query(node.port, "CLUSTER", "INFO"))
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
        wait_until(lambda: not self.health_problems(), timeout, "healthy cluster", self.diagnostics)

    def diagnostics(self) -> str:
        """What went wrong, for an error message: problems, each node's view, log tails."""
        parts = ["problems: " + "; ".join(self.health_problems() or ["none"])]
        for node in self.nodes:
            state = "running" if node.running else "stopped"
            parts.append(f"--- {node} ({state})")
            parts.append(str(try_query(node.port, "CLUSTER", "INFO") or "").strip())
            parts.append(str(try_query(node.port, "CLUSTER", "NODES") or "").strip())
            parts.append("log tail:\n" + tail(node.log_path, 8))
        if self.create_output:
            parts.append("--- redis-cli --cluster create:\n" + self.create_output[-2000:])
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

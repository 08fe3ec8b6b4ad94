"""The deployments the campaign runs against, and the faults it does to them.

Each deployment starts its own processes on free loopback ports and stops them by PID:

* ``standalone``: one redis-server behind a Toxiproxy proxy;
* ``cluster``: 3 primaries x 1 replica, every node behind its own proxy (each node
  announces its proxy's port, so redis-py's topology, MOVED replies included, goes through
  Toxiproxy);
* ``sentinel``: a master, a replica and three sentinels.

A fault is an async function ``(deployment, rng, seconds) -> Fault``: it breaks something,
waits ``seconds``, repairs it, and says what it did and, for the model, what it may have
lost (:class:`~tests.torture.model.Event`). The blocking helpers (process control, the
Toxiproxy API, waiting for a failover) run in a thread so the calls under test go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from resilient_cache.testing import LOOPBACK, RedisServer, Started, free_port
from resilient_cache.testing.toxiproxy import Proxy, Stream, Toxiproxy, ToxiproxyServer
from tests.topology import RedisClusterProcesses, RedisSentinelProcesses
from tests.topology.common import try_query
from tests.torture.model import Event

TOXICS: Final = (
    "latency", "timeout", "reset_peer", "slow_close", "limit_data", "slicer", "bandwidth",
)  # fmt: skip
MAXCLIENTS: Final = 10_000
"""redis-server's default ``maxclients``, restored after the fault that lowers it."""
BULK_KEYS: Final = 200_000
"""Keys of the large dataset a ``loading`` restart reads back (about 0.2-0.5 s of LOADING)."""


@dataclass
class Fault:
    """One fault applied: its kind, when, and its parameters."""

    kind: str
    start: float
    end: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def admin(port: int, *args: str, timeout: float = 2.0) -> Any:
    """One command on a fresh connection (raises redis-py's errors)."""
    client = redis.Redis(
        host=LOOPBACK, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
        decode_responses=True, single_connection_client=True,
    )  # fmt: skip
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def undo_settings(port: int) -> None:
    """Undo what the faults set on a server: a client pause, maxmemory, maxclients."""
    admin(port, "CLIENT", "UNPAUSE")
    admin(port, "CONFIG", "SET", "maxmemory", "0")
    admin(port, "CONFIG", "SET", "maxclients", str(MAXCLIENTS))


def signal_pid(server: Any, sig: signal.Signals) -> None:
    proc = getattr(server, "proc", None)
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, sig)


class Deployment(Started):
    """A running topology: how to reach it, what can be done to it, how to repair it."""

    name: str
    faults: dict[str, tuple[float, Callable[[Any, random.Random, float], Awaitable[Fault]]]]
    """kind -> (weight, fault)"""
    revivals: int = 0
    """Times its toxiproxy-server was found dead (panicked) and started again (:func:`revive`)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """``CacheSettings`` fields that reach this deployment."""

    @abstractmethod
    def heal(self) -> list[Event]:
        """Undo every fault and wait until the deployment serves again (blocking); what
        that lost (a server found dead comes back empty)."""

    def unplanned(self) -> list[str]:
        """Changes nobody asked for since the last call (e.g. a spontaneous failover)."""
        return []

    def data_ports(self) -> list[int]:
        """The ports of the servers that hold data (for server-side commands)."""
        return []

    def pids(self) -> list[int]:
        return []


def keep_log(server: ToxiproxyServer) -> Path:
    """A copy of the server's log in ``build/`` (its own directory goes at cleanup)."""
    assert server.proc is not None
    kept = Path("build") / f"torture-toxiproxy-{server.proc.pid}.log"
    kept.parent.mkdir(exist_ok=True)
    kept.write_text(server.log_path.read_text(errors="replace"))
    return kept


def revive(server: ToxiproxyServer, proxies: dict[Any, Proxy]) -> dict[Any, Proxy] | None:
    """Start a dead toxiproxy-server again on its port, with its proxies on theirs.

    toxiproxy-server 2.12.0 panics now and then when a toxic is added while clients connect
    (``index out of range`` in ``ToxicLink.AddToxic``: a link set up from the chain as it was
    before the toxic, then given the toxic again). That is the campaign's tool failing, not
    the library: its log is kept in ``build/`` and the campaign goes on, as after a fault
    that refused connections for a moment. Returns the new proxies (same keys), or ``None``
    if the server was running.
    """
    if server.proc is None or server.proc.poll() is None:
        return None
    keep_log(server)
    server.start()
    return {
        key: server.client.create_proxy(
            proxy.name, f"{LOOPBACK}:{proxy.listen_port}", proxy.upstream
        )
        for key, proxy in proxies.items()
    }


# -- the faults shared by every deployment --------------------------------------------


async def _toxic(proxies: list[Proxy], rng: random.Random, seconds: float) -> Fault:
    kind = rng.choice(TOXICS)
    stream: Stream = rng.choice(("upstream", "downstream"))
    toxicity = rng.choice((1.0, 1.0, round(rng.uniform(0.3, 0.99), 2)))
    attributes: dict[str, int] = {
        "latency": {"latency": rng.randint(20, 900), "jitter": rng.randint(0, 300)},
        "timeout": {"timeout": rng.choice((0, rng.randint(50, 800)))},
        "reset_peer": {"timeout": rng.randint(0, 300)},
        "slow_close": {"delay": rng.randint(50, 1500)},
        "limit_data": {"bytes": rng.randint(1, 20_000)},
        "slicer": {
            "average_size": rng.randint(1, 200),
            "size_variation": rng.randint(0, 1),
            "delay": rng.randint(0, 3000),
        },
        "bandwidth": {"rate": rng.randint(1, 200)},
    }[kind]
    name = f"{kind}_{stream}_{rng.randrange(1 << 30)}"
    fault = Fault(f"toxic:{kind}", time.monotonic(), params={
        "stream": stream, "toxicity": toxicity, "proxies": len(proxies), **attributes,
    })  # fmt: skip

    def add() -> None:
        for proxy in proxies:
            proxy.add_toxic(kind, stream=stream, toxicity=toxicity, name=name, **attributes)

    def remove() -> None:
        for proxy in proxies:
            with contextlib.suppress(Exception):
                proxy.remove_toxic(name)

    await asyncio.to_thread(add)
    try:
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(remove)
        fault.end = time.monotonic()
    return fault


async def _disabled(proxies: list[Proxy], seconds: float) -> Fault:
    fault = Fault("proxy_disabled", time.monotonic(), params={"proxies": len(proxies)})

    def switch(on: bool) -> None:
        for proxy in proxies:
            proxy.enable() if on else proxy.disable()

    await asyncio.to_thread(switch, False)
    try:
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(switch, True)
        fault.end = time.monotonic()
    return fault


async def _sigstop(servers: list[Any], kind: str, seconds: float) -> Fault:
    fault = Fault(kind, time.monotonic(), params={"processes": len(servers)})
    for server in servers:
        signal_pid(server, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        for server in servers:
            signal_pid(server, signal.SIGCONT)
        fault.end = time.monotonic()
    return fault


async def _client_pause(port: int, rng: random.Random, seconds: float) -> Fault:
    mode = rng.choice(("WRITE", "ALL"))
    fault = Fault("client_pause", time.monotonic(), params={"mode": mode})
    await asyncio.to_thread(admin, port, "CLIENT", "PAUSE", str(int(seconds * 1000)), mode)
    await asyncio.sleep(seconds)
    with contextlib.suppress(redis.RedisError):
        await asyncio.to_thread(admin, port, "CLIENT", "UNPAUSE")
    fault.end = time.monotonic()
    return fault


async def _client_kill(ports: list[int], rng: random.Random, seconds: float) -> Fault:
    fault = Fault("client_kill", time.monotonic(), params={"servers": len(ports)})
    until = time.monotonic() + seconds
    kills = 0
    while True:
        for port in ports:
            kind = rng.choice(("normal", "normal", "pubsub"))
            with contextlib.suppress(redis.RedisError):
                kills += int(await asyncio.to_thread(admin, port, "CLIENT", "KILL", "TYPE", kind))
        if time.monotonic() >= until:
            break
        await asyncio.sleep(rng.uniform(0.05, 0.3))
    fault.params["killed"] = kills
    fault.end = time.monotonic()
    return fault


async def _oom(port: int, seconds: float) -> Fault:
    fault = Fault("oom", time.monotonic())
    used = int((await asyncio.to_thread(admin, port, "INFO", "memory"))["used_memory"])
    await asyncio.to_thread(admin, port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    await asyncio.to_thread(admin, port, "CONFIG", "SET", "maxmemory", str(used))
    try:
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(admin, port, "CONFIG", "SET", "maxmemory", "0")
        fault.end = time.monotonic()
    return fault


async def _maxclients(port: int, seconds: float) -> Fault:
    fault = Fault("maxclients", time.monotonic())
    # one connection held open: it restores maxclients even while new ones are refused
    held = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, single_connection_client=True)
    try:
        clients = int((await asyncio.to_thread(held.info, "clients"))["connected_clients"])
        await asyncio.to_thread(held.config_set, "maxclients", clients)
        fault.params["maxclients"] = clients
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(held.config_set, "maxclients", MAXCLIENTS)
        held.close()
        fault.end = time.monotonic()
    return fault


# -- standalone -----------------------------------------------------------------------


class Standalone(Deployment):
    """One redis-server behind a Toxiproxy proxy."""

    name = "standalone"

    def __init__(self, redis_binary: str, toxiproxy_binary: str) -> None:
        self.server = RedisServer(redis_binary)
        self.toxiproxy = ToxiproxyServer(toxiproxy_binary)
        self.proxy: Proxy | None = None
        self.faults = {
            "toxic": (6.0, lambda d, r, s: _toxic([d.proxy], r, s)),
            "proxy_disabled": (1.0, lambda d, r, s: _disabled([d.proxy], s)),
            "sigstop": (1.5, lambda d, r, s: _sigstop([d.server], "sigstop", s)),
            "sigkill": (0.7, Standalone._sigkill),
            "client_pause": (1.0, lambda d, r, s: _client_pause(d.server.port, r, s)),
            "client_kill": (1.0, lambda d, r, s: _client_kill([d.server.port], r, s)),
            "readonly": (1.0, Standalone._readonly),
            "oom": (1.0, lambda d, r, s: _oom(d.server.port, s)),
            "loading": (0.5, Standalone._loading),
            "maxclients": (0.7, lambda d, r, s: _maxclients(d.server.port, s)),
        }

    def start(self) -> None:
        self.server.start()
        self.toxiproxy.start()
        self.proxy = self.toxiproxy.client.create_proxy(
            "redis", f"{LOOPBACK}:0", f"{LOOPBACK}:{self.server.port}"
        )
        self._populate()

    def _populate(self) -> None:
        admin(self.server.port, "DEBUG", "POPULATE", str(BULK_KEYS), "bulk", "100", timeout=30)

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            signal_pid(self.server, signal.SIGCONT)
        self.toxiproxy.cleanup()
        self.server.cleanup()

    def settings(self) -> dict[str, Any]:
        assert self.proxy is not None
        return {"redis_url": f"redis://{LOOPBACK}:{self.proxy.listen_port}/0"}

    def heal(self) -> list[Event]:
        signal_pid(self.server, signal.SIGCONT)
        lost: list[Event] = []
        if self.server.proc is None or self.server.proc.poll() is not None:
            began = time.monotonic()
            self._rdb().unlink(missing_ok=True)
            self.server.start()
            lost.append(Event("wipe", began, time.monotonic(), "found dead, restarted empty"))
        assert self.proxy is not None
        revived = revive(self.toxiproxy, {"redis": self.proxy})
        if revived is not None:
            self.proxy = revived["redis"]
            self.revivals += 1
        self.toxiproxy.client.reset()  # every proxy enabled, every toxic gone
        undo_settings(self.server.port)
        admin(self.server.port, "REPLICAOF", "NO", "ONE")
        return lost

    def data_ports(self) -> list[int]:
        return [self.server.port]

    def pids(self) -> list[int]:
        return [p.pid for p in (self.server.proc,) if p is not None]

    def _rdb(self) -> Path:
        return self.server.dir / "dump.rdb"

    async def _sigkill(self, rng: random.Random, seconds: float) -> Fault:
        fault = Fault("sigkill", time.monotonic())
        await asyncio.to_thread(self.server.stop, kill=True)
        await asyncio.sleep(seconds)
        self._rdb().unlink(missing_ok=True)
        await asyncio.to_thread(self.server.start)
        fault.end = time.monotonic()
        fault.events.append(Event("wipe", fault.start, fault.end, "SIGKILL and restart"))
        await asyncio.to_thread(self._populate)
        return fault

    async def _readonly(self, rng: random.Random, seconds: float) -> Fault:
        fault = Fault("readonly", time.monotonic())
        nobody = free_port()  # a master that never answers: the server keeps its data
        await asyncio.to_thread(admin, self.server.port, "REPLICAOF", LOOPBACK, str(nobody))
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(admin, self.server.port, "REPLICAOF", "NO", "ONE")
            fault.end = time.monotonic()
        return fault

    async def _loading(self, rng: random.Random, seconds: float) -> Fault:
        """SHUTDOWN SAVE, then a restart that reads the large dataset back (LOADING)."""
        fault = Fault("loading", time.monotonic())

        def restart() -> None:
            with contextlib.suppress(redis.RedisError):
                admin(self.server.port, "SHUTDOWN", "SAVE", timeout=30)
            if self.server.proc is not None:
                self.server.proc.wait(30)
            self.server.start(ready_timeout=60)  # PING answers -LOADING until it is done
            self._rdb().unlink(missing_ok=True)

        await asyncio.to_thread(restart)
        fault.end = time.monotonic()
        return fault


# -- cluster --------------------------------------------------------------------------


class Cluster(Deployment):
    """3 primaries x 1 replica, every node reached through its own Toxiproxy proxy."""

    name = "cluster"

    def __init__(self, redis_binary: str, cli_binary: str, toxiproxy_binary: str) -> None:
        # node timeout 3 s: a freeze of up to 1.5 s never starts a failover by itself
        self.cluster = RedisClusterProcesses(redis_binary, cli_binary, node_timeout_ms=3000)
        self.toxiproxy = ToxiproxyServer(toxiproxy_binary)
        self.proxies: dict[int, Proxy] = {}  # node port -> its proxy
        self._primaries: set[str] = set()
        on = self._on_primary
        self.faults = {
            "toxic_one": (3.0, lambda d, r, s: on(r, lambda p: _toxic([d.proxies[p.port]], r, s))),
            "toxic_all": (2.0, lambda d, r, s: _toxic(list(d.proxies.values()), r, s)),
            "proxy_disabled": (
                1.0, lambda d, r, s: on(r, lambda p: _disabled([d.proxies[p.port]], s)),
            ),
            "sigstop_primary": (
                1.5, lambda d, r, s: on(r, lambda p: _sigstop([p], "sigstop_primary", min(s, 1.5))),
            ),
            "freeze_all": (
                1.0, lambda d, r, s: _sigstop(list(d.cluster.nodes), "freeze_all", min(s, 1.5)),
            ),
            "failover": (0.7, Cluster._failover),
            "kill_primary": (0.3, Cluster._kill_primary),
            "client_pause": (1.0, lambda d, r, s: on(r, lambda p: _client_pause(p.port, r, s))),
            "client_kill": (
                1.0, lambda d, r, s: _client_kill([n.port for n in d.cluster.nodes], r, s),
            ),
            "oom": (1.0, lambda d, r, s: on(r, lambda p: _oom(p.port, s))),
            "maxclients": (0.5, lambda d, r, s: on(r, lambda p: _maxclients(p.port, s))),
        }  # fmt: skip

    async def _on_primary(
        self, rng: random.Random, fault: Callable[[Any], Awaitable[Fault]]
    ) -> Fault:
        """``fault`` on a random primary (the nodes are asked in a thread: one may be frozen)."""
        primaries = await asyncio.to_thread(self.cluster.primaries)
        return await fault(rng.choice(primaries))

    def start(self) -> None:
        self.cluster.start()
        self.toxiproxy.start()
        for node in self.cluster.nodes:
            proxy = self.toxiproxy.client.create_proxy(
                f"node-{node.port}", f"{LOOPBACK}:0", f"{LOOPBACK}:{node.port}"
            )
            self.proxies[node.port] = proxy
            admin(node.port, "CONFIG", "SET", "cluster-announce-port", str(proxy.listen_port))
        self.cluster.wait_healthy()
        self._primaries = self._primary_ids()

    def _primary_ids(self) -> set[str]:
        return {node.node_id for node in self.cluster.primaries()}

    def cleanup(self) -> None:
        for node in self.cluster.nodes:
            with contextlib.suppress(Exception):
                signal_pid(node, signal.SIGCONT)
        self.toxiproxy.cleanup()
        self.cluster.cleanup()

    def settings(self) -> dict[str, Any]:
        nodes = [f"{LOOPBACK}:{p.listen_port}" for p in self.proxies.values()]
        return {"topology": "cluster", "cluster": {"nodes": nodes}}

    def heal(self) -> list[Event]:
        for node in self.cluster.nodes:
            signal_pid(node, signal.SIGCONT)
        dead = [node for node in self.cluster.nodes if not node.running]
        began = time.monotonic()
        revived = revive(self.toxiproxy, self.proxies)
        if revived is not None:
            self.proxies = revived
            self.revivals += 1
        self.toxiproxy.client.reset()
        self.cluster.heal(timeout=60)
        for node in self.cluster.nodes:
            undo_settings(node.port)
        # a node found dead comes back as a replica and resyncs: like a failover
        return [Event("lossy", began, time.monotonic(), "node restarted")] if dead else []

    def unplanned(self) -> list[str]:
        now = self._primary_ids()
        changed = now != self._primaries
        self._primaries = now
        return ["the primaries changed (a failover)"] if changed else []

    def data_ports(self) -> list[int]:
        return [node.port for node in self.cluster.primaries()]

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.cluster.nodes if n.proc is not None]

    async def _failover(self, rng: random.Random, seconds: float) -> Fault:
        """``CLUSTER FAILOVER`` on a replica: the coordinated switch (no write lost)."""
        replica = rng.choice(await asyncio.to_thread(self.cluster.replicas))
        fault = Fault("failover", time.monotonic())

        def switch() -> None:
            admin(replica.port, "CLUSTER", "FAILOVER")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                role = try_query(replica.port, "ROLE")
                if role and role[0] == "master":
                    break
                time.sleep(0.05)
            self.cluster.wait_healthy(30)

        await asyncio.to_thread(switch)
        fault.end = time.monotonic()
        self._primaries = await asyncio.to_thread(self._primary_ids)
        return fault

    async def _kill_primary(self, rng: random.Random, seconds: float) -> Fault:
        """SIGKILL a primary; its replica takes over after the node timeout (writes the
        replica had not received are lost); the old primary comes back as a replica."""
        primary = rng.choice(await asyncio.to_thread(self.cluster.primaries))
        fault = Fault("kill_primary", time.monotonic())

        def crash() -> None:
            self.cluster.kill(primary)
            self.cluster.wait_for_failover(primary, timeout=60)
            self.cluster.restart(primary, timeout=60)

        await asyncio.to_thread(crash)
        fault.end = time.monotonic()
        fault.events.append(Event("lossy", fault.start, fault.end, "primary SIGKILLed"))
        self._primaries = await asyncio.to_thread(self._primary_ids)
        return fault


# -- sentinel -------------------------------------------------------------------------


class Sentinel(Deployment):
    """A master, a replica and three sentinels (quorum 2)."""

    name = "sentinel"

    def __init__(self, redis_binary: str) -> None:
        # down-after 2 s: a freeze of up to 1.5 s never starts a failover by itself
        self.deployment = RedisSentinelProcesses(redis_binary, down_after_ms=2000)
        self._master: tuple[str, int] | None = None
        on = self._on_master
        self.faults = {
            "sigstop_master": (
                1.5, lambda d, r, s: on(lambda m: _sigstop([m], "sigstop_master", min(s, 1.5))),
            ),
            "sentinels_hang": (1.5, Sentinel._sentinels_hang),
            "failover": (0.4, Sentinel._failover),
            "kill_master": (0.2, Sentinel._kill_master),
            "client_pause": (1.0, lambda d, r, s: on(lambda m: _client_pause(m.port, r, s))),
            "client_kill": (
                1.0, lambda d, r, s: _client_kill([x.port for x in d.deployment.servers], r, s),
            ),
            "oom": (1.0, lambda d, r, s: on(lambda m: _oom(m.port, s))),
            "maxclients": (0.5, lambda d, r, s: on(lambda m: _maxclients(m.port, s))),
        }  # fmt: skip

    async def _on_master(self, fault: Callable[[Any], Awaitable[Fault]]) -> Fault:
        """``fault`` on the current master (the sentinels are asked in a thread)."""
        return await fault(await asyncio.to_thread(self.deployment.master))

    def start(self) -> None:
        self.deployment.start()
        self._master = self.deployment.master_address()

    def cleanup(self) -> None:
        for server in (*self.deployment.servers, *self.deployment.sentinel_servers):
            with contextlib.suppress(Exception):
                signal_pid(server, signal.SIGCONT)
        self.deployment.cleanup()

    def settings(self) -> dict[str, Any]:
        addresses = [f"{host}:{port}" for host, port in self.deployment.sentinels]
        return {
            "topology": "sentinel",
            "sentinel": {"addresses": addresses, "service_name": self.deployment.service_name},
        }

    def heal(self) -> list[Event]:
        for server in (*self.deployment.servers, *self.deployment.sentinel_servers):
            signal_pid(server, signal.SIGCONT)
        began = time.monotonic()
        dead = [s for s in self.deployment.servers if s.proc is None or s.proc.poll() is not None]
        for server in self.deployment.servers:
            if server.proc is None or server.proc.poll() is not None:
                server.start()
        self.deployment.wait_agreed(60)
        for server in self.deployment.servers:
            undo_settings(server.port)
        return [Event("lossy", began, time.monotonic(), "server restarted")] if dead else []

    def unplanned(self) -> list[str]:
        now = self.deployment.master_address()
        changed = now != self._master
        self._master = now
        return ["the master changed (a failover)"] if changed else []

    def data_ports(self) -> list[int]:
        return [self.deployment.master().port]

    def pids(self) -> list[int]:
        servers = (*self.deployment.servers, *self.deployment.sentinel_servers)
        return [s.proc.pid for s in servers if s.proc is not None]

    async def _sentinels_hang(self, rng: random.Random, seconds: float) -> Fault:
        hung = rng.sample(self.deployment.sentinel_servers, rng.randint(1, 3))
        fault = await _sigstop(hung, "sentinels_hang", seconds)
        fault.params["sentinels"] = len(hung)
        return fault

    async def _failover(self, rng: random.Random, seconds: float) -> Fault:
        fault = Fault("failover", time.monotonic())
        await asyncio.to_thread(self.deployment.failover, timeout=60)
        fault.params["switched_s"] = round(time.monotonic() - fault.start, 2)
        await asyncio.to_thread(self.deployment.wait_agreed, 60)
        fault.end = time.monotonic()
        fault.params["agreed_s"] = round(fault.end - fault.start, 2)
        # SENTINEL FAILOVER promotes the replica without waiting for it to catch up
        fault.events.append(Event("lossy", fault.start, fault.end, "sentinel failover"))
        self._master = await asyncio.to_thread(self.deployment.master_address)
        return fault

    async def _kill_master(self, rng: random.Random, seconds: float) -> Fault:
        fault = Fault("kill_master", time.monotonic())

        def crash() -> None:
            old = self.deployment.master()
            self.deployment.kill_master(timeout=60)
            old.start()  # comes back empty; the sentinels make it a replica
            self.deployment.wait_agreed(60)

        await asyncio.to_thread(crash)
        fault.end = time.monotonic()
        fault.events.append(Event("lossy", fault.start, fault.end, "master SIGKILLed"))
        self._master = await asyncio.to_thread(self.deployment.master_address)
        return fault


def toxiproxy_of(deployment: Deployment) -> Toxiproxy | None:
    server = getattr(deployment, "toxiproxy", None)
    return server.client if server is not None else None

"""A real Redis Sentinel deployment of redis-server processes, and its pytest fixture."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from resilient_cache.testing import LOOPBACK, RedisServer, ServerProcess, Started
from tests.topology.common import (
    FAST_SYNC,
    Address,
    TopologyError,
    pairs,
    query,
    tail,
    try_query,
    wait_until,
)

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


class RedisSentinelProcesses(Started):
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
            master = RedisServer(self.server_binary, *FAST_SYNC)
            self.servers.append(master)
            master.start()
            for _ in range(self.replica_count):
                replica = RedisServer(
                    self.server_binary, *FAST_SYNC, "--replicaof", LOOPBACK, str(master.port)
                )
                self.servers.append(replica)
                replica.start()
            wait_until(self._replicas_in_sync, timeout, "replicas in sync", self.diagnostics)
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

        return wait_until(switched, timeout, "sentinel failover", self.diagnostics)

    def wait_old_master_demoted(self, old: Address, timeout: float = 30.0) -> float:
        """Wait until the (still running) ``old`` master reports ``ROLE`` slave; return how
        long that took from now."""
        started = time.monotonic()

        def demoted() -> bool:
            role = try_query(old[1], "ROLE")
            return role is not None and role[0] == "slave"

        wait_until(demoted, timeout, "old master demoted", self.diagnostics)
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
            state = pairs(try_query(sentinel.port, "SENTINEL", "MASTER", self.service_name))
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
            for replica in map(pairs, replicas or []):
                if replica.get("flags") != "slave" or replica.get("master-link-status") != "ok":
                    problems.append(
                        f"{sentinel}: replica {replica.get('port')} flags={replica.get('flags')}"
                        f" link={replica.get('master-link-status')}"
                    )
            peers = try_query(sentinel.port, "SENTINEL", "SENTINELS", self.service_name)
            for peer in map(pairs, peers or []):
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
        wait_until(
            lambda: not self.agreement_problems(), timeout, "sentinel agreement", self.diagnostics
        )

    def diagnostics(self) -> str:
        parts = ["problems: " + "; ".join(self.agreement_problems() or ["none"])]
        for server in self.servers:
            state = "running" if server.proc and server.proc.poll() is None else "stopped"
            parts.append(
                f"--- redis {server.port} ({state}): ROLE {try_query(server.port, 'ROLE')}"
            )
            parts.append("log tail:\n" + tail(server.log_path, 6))
        for sentinel in self.sentinel_servers:
            parts.append(f"--- {sentinel}")
            parts.append("log tail:\n" + tail(sentinel.log_path, 12))
        return "\n".join(parts)


@pytest.fixture
def redis_sentinel(redis_binary: str) -> Iterator[RedisSentinelProcesses]:
    """A fresh master, replica and 3 sentinels for one test (~1 s to start), free to be
    failed over or killed: a failover cannot be undone quickly (a killed master restarted
    is a *master* again until the sentinels convert it, 8 s or more later)."""
    with RedisSentinelProcesses(redis_binary) as deployment:
        yield deployment

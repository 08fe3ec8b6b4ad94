"""The Cluster and Sentinel deployments of tests/topology.py, proven with raw redis-py.

They form, serve keys, and fail over: a SIGKILLed cluster primary is replaced by its replica;
a Sentinel master is replaced after ``SENTINEL FAILOVER`` or a SIGKILL, and the same client
follows it. Each failover prints what the client saw (``pytest -s``): the time from the fault
to the first successful write, the errors meanwhile, and the acknowledged writes lost.

The clients make ONE network attempt per call (``Retry(NoBackoff(), 0)``), as the library's
adapter will: the loops here are the retry layer, so the timings are what a caller sees.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from resilient_cache.testing import LOOPBACK
from tests.topology import (
    RedisClusterProcesses,
    RedisSentinelProcesses,
    private_cluster,
    query,
    redis_cli_binary,
    redis_cluster,
    redis_cluster_deployment,
    redis_sentinel,
)

# the fixtures of tests/topology.py, imported (not a pytest_plugins entry, which would import
# tests.topology twice); listed in __all__ so that linters see them used
__all__ = [
    "private_cluster",
    "redis_cli_binary",
    "redis_cluster",
    "redis_cluster_deployment",
    "redis_sentinel",
]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PAUSE = 0.02  # between two attempts of a measuring loop
SOCKET_TIMEOUT = 0.5


def one_attempt() -> Retry:
    """No retry inside redis-py: one network attempt per call."""
    return Retry(NoBackoff(), 0)


@dataclass
class Outage:
    """What a caller saw from a fault until its first successful call."""

    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        return f"{self.seconds:.2f}s, errors {dict(self.errors)}"


async def until_success(
    call: Callable[[], Awaitable[Any]], started: float, limit: float = 30.0
) -> Outage:
    """Repeat ``call`` every PAUSE until it succeeds; time it from ``started``."""
    outage = Outage()
    while True:
        try:
            await call()
        except RedisError as exc:
            outage.errors[type(exc).__name__] += 1
            if time.monotonic() - started > limit:
                raise
            await asyncio.sleep(PAUSE)
        else:
            outage.seconds = time.monotonic() - started
            return outage


def report(label: str, text: str) -> None:
    print(f"\n[topology timing] {label}: {text}")


# --- Redis Cluster ------------------------------------------------------------------------


@asynccontextmanager
async def client_of(cluster: RedisClusterProcesses) -> AsyncIterator[RedisCluster]:
    """A redis-py cluster client of ``cluster``, one network attempt per call."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes],
        retry=one_attempt(),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        decode_responses=True,
    )
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterProcesses) -> AsyncIterator[RedisCluster]:
    async with client_of(redis_cluster) as client:
        yield client


def key_on(cluster: RedisClusterProcesses, prefix: str, *, not_on: set[int]) -> str:
    """A key whose primary's port is not in ``not_on``."""
    for i in range(10_000):
        key = f"{prefix}:{i}"
        if cluster.primary_for_key(key).port not in not_on:
            return key
    raise AssertionError("no such key")


async def test_cluster_forms_with_three_primaries_and_three_replicas(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    assert len(redis_cluster.primaries()) == 3
    assert len(redis_cluster.replicas()) == 3
    assert len(cluster_client.get_primaries()) == 3
    assert len(cluster_client.get_replicas()) == 3
    for primary in redis_cluster.primaries():
        assert len(redis_cluster.replicas_of(primary)) == 1
    client_from_url = RedisCluster.from_url(redis_cluster.url, retry=one_attempt())
    try:
        assert await client_from_url.ping() is True
        assert len(client_from_url.get_nodes()) == 6  # discovered from one node
    finally:
        await client_from_url.aclose()


async def test_keys_in_different_slots_live_on_their_primaries(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    keys: list[str] = []
    for _ in range(3):
        used = {redis_cluster.primary_for_key(k).port for k in keys}
        keys.append(key_on(redis_cluster, "k", not_on=used))
    assert len({redis_cluster.keyslot(k) for k in keys}) == 3
    for key in keys:
        assert await cluster_client.set(key, f"value of {key}") is True
    for key in keys:
        assert await cluster_client.get(key) == f"value of {key}"
        # really on the primary that serves its slot
        assert query(redis_cluster.primary_for_key(key).port, "GET", key) == f"value of {key}"

    # across slots: MGET refuses (client side); the *_nonatomic helpers split by slot
    with pytest.raises(RedisClusterException, match="same"):
        await cluster_client.mget(keys)
    assert await cluster_client.mget_nonatomic(keys) == [f"value of {k}" for k in keys]
    assert await cluster_client.mset_nonatomic(dict.fromkeys(keys, "x")) == [True] * 3
    # a hash tag puts a tenant's keys in one slot: MGET works again
    tagged = [f"{{tenant-a}}:{i}" for i in range(5)]
    assert len({redis_cluster.keyslot(k) for k in tagged}) == 1
    await cluster_client.mset({k: k for k in tagged})
    assert await cluster_client.mget(tagged) == tagged


async def test_killed_primary_is_replaced_by_its_replica(
    private_cluster: RedisClusterProcesses,
) -> None:
    async with client_of(private_cluster) as cluster_client:
        await _killed_primary_is_replaced(private_cluster, cluster_client)


async def _killed_primary_is_replaced(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    victim = redis_cluster.primary_for_key("{victim}")  # {victim}:* keys share its slot
    (replica,) = redis_cluster.replicas_of(victim)
    bystander_key = key_on(redis_cluster, "bystander", not_on={victim.port})
    await cluster_client.set("{victim}:before", "1")
    node = cluster_client.get_node(host=LOOPBACK, port=victim.port)
    assert node is not None
    assert await cluster_client.execute_command("WAIT", 1, 1000, target_nodes=node) == 1

    started = time.monotonic()
    redis_cluster.kill(victim)
    victim_outage = asyncio.create_task(
        until_success(lambda: cluster_client.set("{victim}:after", "1"), started)
    )
    bystander = Outage()  # a key on a healthy primary, written meanwhile
    while not victim_outage.done():
        try:
            await cluster_client.set(bystander_key, "1")
        except RedisError as exc:
            bystander.errors[type(exc).__name__] += 1
            bystander.seconds = time.monotonic() - started  # last failure
        await asyncio.sleep(PAUSE)
    outage = await victim_outage
    promoted = await asyncio.to_thread(redis_cluster.wait_for_failover, victim)
    settled = time.monotonic() - started

    assert promoted is replica
    assert await cluster_client.get("{victim}:before") == "1"  # acknowledged by WAIT: kept
    assert query(promoted.port, "GET", "{victim}:after") == "1"
    report("cluster primary SIGKILL -> first write to its slots", outage.describe())
    report(
        "cluster primary SIGKILL -> key on a healthy primary, last failure", bystander.describe()
    )
    report("cluster primary SIGKILL -> every node sees the promotion", f"{settled:.2f}s")


async def test_default_cluster_retry_during_a_failover(
    private_cluster: RedisClusterProcesses,
) -> None:
    """What one call sees with redis-py's default cluster retry (10 retries) when its primary
    is killed: measured, not asserted (redis-py 8.1 retries a ConnectionError at once, with
    no backoff, so all 11 attempts fail within ~0.1 s, long before the promotion)."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in private_cluster.startup_nodes],
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
    )
    try:
        await client.set("victim", "before")
        victim = private_cluster.primary_for_key("victim")
        started = time.monotonic()
        private_cluster.kill(victim)
        outcome = "succeeded"
        try:
            await client.set("victim", "after")
        except RedisError as exc:
            outcome = f"raised {type(exc).__name__}: {exc}"
        report(
            "cluster primary SIGKILL, one set() with the default retry",
            f"{outcome} after {time.monotonic() - started:.2f}s",
        )
        await asyncio.to_thread(private_cluster.wait_for_failover, victim)
    finally:
        await client.aclose()


# --- Redis Sentinel -----------------------------------------------------------------------


@pytest.fixture
async def sentinel(redis_sentinel: RedisSentinelProcesses) -> AsyncIterator[Sentinel]:
    client = Sentinel(
        redis_sentinel.sentinels,
        sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT, "retry": one_attempt()},
    )
    yield client
    await client.aclose()


def master_client(sentinel: Sentinel, deployment: RedisSentinelProcesses) -> Any:
    return sentinel.master_for(
        deployment.service_name,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=one_attempt(),
        decode_responses=True,
    )


async def test_sentinel_master_killed_new_master_found_by_the_same_client(
    redis_sentinel: RedisSentinelProcesses, sentinel: Sentinel
) -> None:
    master = master_client(sentinel, redis_sentinel)
    try:
        assert await sentinel.discover_master(redis_sentinel.service_name) == (
            redis_sentinel.master_address()
        )
        await master.set("before", "1")
        assert await master.wait(1, 1000) == 1  # on the replica before the crash

        started = time.monotonic()
        old = redis_sentinel.kill_master(wait=False)
        outage = await until_success(lambda: master.set("after", "1"), started)
        new = await asyncio.to_thread(redis_sentinel.wait_for_new_master, old)

        assert new != old
        assert master.connection_pool.master_address == new
        assert await master.get("before") == "1"
        assert query(new[1], "GET", "after") == "1"
        report("sentinel master SIGKILL -> first write", outage.describe())
    finally:
        await master.aclose()


async def test_sentinel_failover_command_and_the_writes_it_loses(
    redis_sentinel: RedisSentinelProcesses, sentinel: Sentinel
) -> None:
    """After ``SENTINEL FAILOVER`` the old master runs on, still a master, until a sentinel
    converts it (~10 s): a client's pooled connection keeps writing there, and those
    acknowledged writes vanish when it resyncs as a replica."""
    master = master_client(sentinel, redis_sentinel)
    acknowledged: dict[int, float] = {}  # sequence number -> when (since the failover)
    errors: Counter[str] = Counter()
    stop = asyncio.Event()
    started = time.monotonic()

    async def write_continuously() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                await master.set(f"seq:{seq}", seq)
                acknowledged[seq] = time.monotonic() - started
            except RedisError as exc:
                errors[type(exc).__name__] += 1
            await asyncio.sleep(PAUSE)

    try:
        await master.set("before", "1")
        assert await master.wait(1, 1000) == 1
        writer = asyncio.create_task(write_continuously())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        old = await asyncio.to_thread(redis_sentinel.failover, wait=False)
        new = await asyncio.to_thread(redis_sentinel.wait_for_new_master, old)
        promoted = time.monotonic() - started
        await asyncio.to_thread(redis_sentinel.wait_old_master_demoted, old)
        demoted = time.monotonic() - started
        await asyncio.sleep(0.5)  # writes after the demotion reach the new master
        stop.set()
        await writer

        assert master.connection_pool.master_address == new
        assert await master.get("before") == "1"
        kept = {int(k.split(":")[1]) for k in await master.keys("seq:*")}
        lost = sorted(seq for seq in acknowledged if seq not in kept)
        last = max(acknowledged)
        assert last in kept  # the same client writes to the new master now
        window = f"{acknowledged[lost[0]]:.2f}s..{acknowledged[lost[-1]]:.2f}s" if lost else "none"
        first_kept_after_loss = min(
            (acknowledged[s] for s in kept if s in acknowledged and (not lost or s > lost[-1])),
            default=0.0,
        )
        report(
            "SENTINEL FAILOVER",
            f"sentinels agree on the new master after {promoted:.2f}s; old master demoted "
            f"after {demoted:.2f}s; client errors {dict(errors)}; {len(lost)} of "
            f"{len(acknowledged)} acknowledged writes lost (acknowledged {window}); "
            f"first write that reached the new master for good at {first_kept_after_loss:.2f}s",
        )
    finally:
        stop.set()
        await master.aclose()

"""RedisAdapter behind Redis Sentinel, on real deployments (tests/topology.py).

* The whole contract suite (tests/test_contract.py) against ``RedisAdapter.from_sentinel``,
  on one deployment for the module (no test here fails it over).
* ``SENTINEL FAILOVER`` and a SIGKILL of the master, each on a fresh deployment, with writes
  going on through ``RetryLayer(CircuitBreakerLayer(adapter))`` (the library's defaults):
  every call returns within its deadline, the same adapter writes to the new master
  afterwards, and the acknowledged writes that were lost are counted and bounded. Each
  prints what the caller saw (``pytest -s``); docs/scale-out.md quotes those lines.
* READONLY: retried, never trips the breaker, makes every connection ask the sentinels again.
* Sentinel auth, the watcher's life cycle, configuration errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import structlog.testing
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

import tests.test_contract as contract
from resilient_cache import (
    CacheError,
    CacheProtocol,
    CircuitBreakerLayer,
    ConfigurationError,
    ErrorCode,
    Failure,
    Limits,
    RedisAdapter,
    Result,
    RetryLayer,
    Success,
)
from resilient_cache.layers.circuit_breaker import BreakerState
from resilient_cache.testing import LOOPBACK, free_port
from tests.conftest import CacheFactory
from tests.topology import RedisSentinelProcesses, query, redis_sentinel, try_query

# the fixture of tests/topology.py, imported (see its module docstring)
__all__ = ["redis_sentinel"]

DEADLINE = 0.5  # RetryLayer's default
SLACK = 0.1  # what a call may take beyond its deadline (DESIGN.md P1)
WRITERS = 4  # concurrent writers during a failover: several pooled connections to move
PAUSE = 0.01  # between two writes of one writer
LOSS_MARGIN = 0.5
"""How long after the sentinels agree on the new master an acknowledged write may still be
lost: the watcher hears ``+switch-master`` within milliseconds of the switch, and a
connection moves at its next use; the rest is scheduling on a loaded 2-CPU machine."""


def sentinel_addresses(deployment: RedisSentinelProcesses) -> list[str]:
    return [f"{host}:{port}" for host, port in deployment.sentinels]


def build(deployment: RedisSentinelProcesses, **options: Any) -> RedisAdapter:
    return RedisAdapter.from_sentinel(
        sentinel_addresses(deployment), deployment.service_name, **options
    )


def error_of(result: Result[Any, CacheError]) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    return result.error


def other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


def watchers() -> list[asyncio.Task[object]]:
    return [task for task in other_tasks() if "sentinel watcher" in task.get_name()]


def report(label: str, text: str) -> None:
    print(f"\n[sentinel] {label}: {text}")


# --- the contract suite, against a Sentinel-backed adapter ---------------------------------

CONTRACT_TESTS = contract.reuse(globals())


def test_the_whole_contract_suite_runs_here() -> None:
    assert len(CONTRACT_TESTS) >= 30


@pytest.fixture(scope="module")
def sentinel_deployment(redis_binary: str) -> Iterator[RedisSentinelProcesses]:
    """One deployment for the contract tests: none of them fails it over."""
    with RedisSentinelProcesses(redis_binary) as deployment:
        yield deployment


@pytest.fixture(params=["sentinel"])
async def make_cache(
    request: pytest.FixtureRequest, sentinel_deployment: RedisSentinelProcesses
) -> AsyncIterator[CacheFactory]:
    """Like the conftest ``make_cache``: Sentinel-backed adapters on one emptied database."""
    assert query(sentinel_deployment.master_address()[1], "FLUSHALL") is True
    adapters: list[RedisAdapter] = []

    async def make(*, namespace: str | None = None, limits: Limits | None = None) -> CacheProtocol:
        adapter = build(sentinel_deployment, namespace=namespace, limits=limits)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()
    assert not other_tasks()  # every watcher stopped


# --- configuration (no network) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentinels", "service_name", "options", "setting"),
    [
        ([], "svc", {}, "sentinels"),
        ("127.0.0.1:26379", "svc", {}, "sentinels"),  # a str, not a list of them
        (["127.0.0.1"], "svc", {}, "sentinels"),
        (["127.0.0.1:0"], "svc", {}, "sentinels"),
        (["127.0.0.1:x"], "svc", {}, "sentinels"),
        ([":26379"], "svc", {}, "sentinels"),
        (["127.0.0.1:26379"], "", {}, "service_name"),
        (["127.0.0.1:26379"], "two words", {}, "service_name"),
        (["127.0.0.1:26379"], None, {}, "service_name"),
        (["127.0.0.1:26379"], "svc", {"no_such_option": 1}, "no_such_option"),
        (["127.0.0.1:26379"], "svc", {"connect_timeout": 0}, "connect_timeout"),
        (["127.0.0.1:26379"], "svc", {"ssl_ca_certs": "/ca.pem"}, "ssl_ca_certs"),
        (["127.0.0.1:26379"], "svc", {"sentinel_password": 1}, "sentinel_password"),
    ],
)
def test_bad_settings_raise_configuration_error_naming_the_setting(
    sentinels: object, service_name: object, options: dict[str, object], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RedisAdapter.from_sentinel(sentinels, service_name, **options)  # type: ignore[arg-type]
    assert raised.value.setting == setting


async def test_build_cache_follows_the_sentinels(redis_sentinel: RedisSentinelProcesses) -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from resilient_cache import CacheSettings, build_cache  # noqa: PLC0415

    settings = CacheSettings.model_validate(
        {"topology": "sentinel", "namespace": "shop",
         "sentinel": {"addresses": ",".join(sentinel_addresses(redis_sentinel)),
                      "service_name": redis_sentinel.service_name}}
    )  # fmt: skip
    async with build_cache(settings, registry=CollectorRegistry()) as cache:
        assert cache.layers[-1] == "RedisAdapter"
        assert await cache.set("k", "v") == Success(None)
        assert await cache.get("k") == Success("v")


async def test_building_connects_nothing_and_hides_the_passwords() -> None:
    adapter = RedisAdapter.from_sentinel(
        ["127.0.0.1:26379", "[::1]:26380"],
        "cache-master",
        sentinel_username="watcher",
        sentinel_password="sentinel-pw",
        password="data-pw",
        db=2,
    )
    assert not other_tasks()  # no watcher before the first call
    shown = repr(adapter)
    assert "cache-master" in shown and "127.0.0.1:26379" in shown
    assert "sentinel-pw" not in shown and "data-pw" not in shown
    endpoint = adapter.endpoint
    assert (endpoint.address, endpoint.port, endpoint.db) == ("127.0.0.1", 26379, 2)
    assert endpoint.service_name == "cache-master"
    await adapter.aclose()


async def test_no_sentinel_answers_fails_open_within_the_deadline() -> None:
    adapter = RedisAdapter.from_sentinel(
        [f"{LOOPBACK}:{free_port()}", f"{LOOPBACK}:{free_port()}"], "svc", operation_timeout=0.3
    )
    started = time.monotonic()
    error = error_of(await adapter.set("k", "v"))
    assert time.monotonic() - started < 0.3 + SLACK
    assert error.code is ErrorCode.CONNECTION
    assert error.retryable and error.trips_breaker and not error.maybe_applied
    assert "no sentinel answered" in error.message
    await adapter.aclose()
    assert not other_tasks()


# --- following the master ------------------------------------------------------------------


@dataclass
class Write:
    """One ``set`` through the stack, timed from the fault (negative: before it)."""

    key: str
    started: float
    ended: float
    error: ErrorCode | None


@dataclass
class Writers:
    """``WRITERS`` coroutines writing distinct keys through ``stack`` until stopped.

    ``origin`` is the moment of the fault: set it when injecting one.
    """

    stack: CacheProtocol
    count: int = WRITERS
    prefix: str = "w"
    origin: float = 0.0
    log: list[tuple[str, float, float, ErrorCode | None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self, writer: int) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            key = f"{self.prefix}{writer}:{seq}"
            started = time.monotonic()
            result = await self.stack.set(key, str(seq))
            error = result.error.code if isinstance(result, Failure) else None
            self.log.append((key, started, time.monotonic(), error))
            await asyncio.sleep(PAUSE)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._run(i)) for i in range(self.count)]
        try:
            yield
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)

    @property
    def writes(self) -> list[Write]:
        origin = self.origin
        return [Write(k, s - origin, e - origin, error) for k, s, e, error in self.log]

    def first_success_after(self, moment: float) -> float | None:
        ok = (w.ended for w in self.writes if w.started >= moment and w.error is None)
        return min(ok, default=None)

    def recovered(self) -> float | None:
        """When the first write after the first failure succeeded."""
        failed = [w.started for w in self.writes if w.error is not None]
        return self.first_success_after(min(failed)) if failed else None

    def slowest(self) -> float:
        return max(w.ended - w.started for w in self.writes)

    def failures(self) -> Counter[str]:
        return Counter(w.error.value for w in self.writes if w.error is not None)

    async def lost(self, cache: CacheProtocol) -> list[Write]:
        """The writes acknowledged with Success that cannot be read back now."""
        acknowledged = [w for w in self.writes if w.error is None]
        missing: list[Write] = []
        for start in range(0, len(acknowledged), 200):
            batch = acknowledged[start : start + 200]
            found = (await cache.get_many([w.key for w in batch])).unwrap()
            missing += [w for w in batch if found[w.key] is None]
        return missing


def span(writes: list[Write]) -> str:
    if not writes:
        return "-"
    return f"{min(w.ended for w in writes):.2f}s..{max(w.ended for w in writes):.2f}s"


def stack_of(adapter: RedisAdapter) -> tuple[RetryLayer, list[tuple[BreakerState, float]]]:
    """RetryLayer(CircuitBreakerLayer(adapter)) with the defaults; the breaker's transitions
    (the new state, when)."""
    breaker = CircuitBreakerLayer(adapter)
    transitions: list[tuple[BreakerState, float]] = []
    breaker.add_listener(lambda old, new: transitions.append((new, time.monotonic())))
    return RetryLayer(breaker), transitions


def timeline(transitions: list[tuple[BreakerState, float]], origin: float) -> str:
    shown = [f"{state.value} at {when - origin:.2f}s" for state, when in transitions]
    return ", ".join(shown) or "stayed closed"


async def replicated(deployment: RedisSentinelProcesses, key: str) -> None:
    """Wait until every replica has ``key`` (so a failover cannot lose it)."""
    replicas = [s for s in deployment.servers if s.port != deployment.master_address()[1]]
    for _ in range(200):
        if all(try_query(s.port, "EXISTS", key) == 1 for s in replicas):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} never reached the replicas")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_sentinel_failover_is_followed_at_once_and_loses_only_the_switch_window(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    adapter = build(redis_sentinel)
    stack, transitions = stack_of(adapter)
    try:
        assert await stack.set("before", "1") == Success(None)
        await replicated(redis_sentinel, "before")
        writers = Writers(stack)
        with structlog.testing.capture_logs() as events:
            async with writers.running():
                await asyncio.sleep(0.5)  # writes before the failover
                writers.origin = time.monotonic()
                old = await asyncio.to_thread(redis_sentinel.failover, wait=False)
                new = await asyncio.to_thread(redis_sentinel.wait_for_new_master, old)
                promoted = time.monotonic() - writers.origin
                await asyncio.sleep(1.5)  # writes after it
        lost = await writers.lost(adapter)
        acknowledged = sum(w.error is None for w in writers.writes)
        window = span(lost)
        report(
            "SENTINEL FAILOVER",
            f"sentinels agreed on the new master after {promoted:.2f}s; {len(writers.writes)} "
            f"writes, failed {dict(writers.failures())}; lost {len(lost)} of {acknowledged} "
            f"acknowledged (acknowledged {window}); slowest call {writers.slowest():.3f}s; "
            f"breaker {timeline(transitions, writers.origin)}",
        )

        assert writers.slowest() <= DEADLINE + SLACK
        assert await stack.get("before") == Success("1")
        switched = [e for e in events if e["event"] == "resilient_cache.sentinel_master_switched"]
        assert [(e["from_address"], e["to_address"]) for e in switched] == [
            (f"{old[0]}:{old[1]}", f"{new[0]}:{new[1]}")
        ]
        # the same adapter writes to the new master now, not to the old one
        assert await stack.set("after", "1") == Success(None)
        assert query(new[1], "GET", "after") == "1"
        assert try_query(old[1], "GET", "after") is None
        # only what the old master acknowledged before the switch reached us is lost; without
        # the watcher, writes go on to the old master until it is demoted (~11 s, the notes)
        assert all(w.ended <= promoted + LOSS_MARGIN for w in lost), window
        assert writers.first_success_after(promoted + LOSS_MARGIN) is not None
    finally:
        await adapter.aclose()
    assert not other_tasks()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_killed_master_fails_open_then_the_same_adapter_writes_to_the_new_one(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    adapter = build(redis_sentinel)
    stack, transitions = stack_of(adapter)
    try:
        assert await stack.set("before", "1") == Success(None)
        await replicated(redis_sentinel, "before")
        writers = Writers(stack)
        direct = Writers(adapter, count=1, prefix="direct")  # no breaker: when Redis is back
        async with writers.running(), direct.running():
            await asyncio.sleep(0.5)
            writers.origin = direct.origin = time.monotonic()
            old = await asyncio.to_thread(redis_sentinel.kill_master, wait=False)
            new = await asyncio.to_thread(redis_sentinel.wait_for_new_master, old)
            promoted = time.monotonic() - writers.origin
            for _ in range(300):  # until the caller sees writes succeed again, at most 30 s
                recovered = writers.recovered()
                if recovered is not None:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
        assert recovered is not None
        lost = await writers.lost(adapter)
        before_kill = [w for w in writers.writes if w.error is None and w.ended < 0]
        failed = [w for w in writers.writes if w.error is not None]
        back = direct.recovered() or math.nan
        report(
            "SIGKILL of the master",
            f"sentinels agreed on the new master after {promoted:.2f}s; first successful write "
            f"{recovered:.2f}s after the kill (without the breaker: {back:.2f}s, "
            f"after {dict(direct.failures())}); {len(failed)} failed calls "
            f"{dict(writers.failures())} ({span(failed)}); lost {len(lost)} of "
            f"{len(before_kill)} writes acknowledged before the kill "
            f"({[f'{w.ended:.3f}s' for w in lost]}); slowest call {writers.slowest():.3f}s; "
            f"breaker {timeline(transitions, writers.origin)}",
        )

        assert writers.slowest() <= DEADLINE + SLACK
        assert await stack.get("before") == Success("1")
        assert await stack.set("after", "1") == Success(None)
        assert query(new[1], "GET", "after") == "1"
        # the breaker opened (5 failures) and closed again after its probes, no restart
        assert transitions[0][0] is BreakerState.OPEN
        assert transitions[-1][0] is BreakerState.CLOSED
        # async replication: only writes acknowledged just before the crash may be gone
        assert all(w.ended > -LOSS_MARGIN for w in lost)
        assert all(w.ended < 0 for w in lost)  # everything written after it is there
    finally:
        await adapter.aclose()
    assert not other_tasks()


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_the_watcher_moves_to_another_sentinel_when_its_own_dies(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    adapter = build(redis_sentinel)
    try:
        assert await adapter.set("k", "1") == Success(None)
        assert len(watchers()) == 1  # started by the first call
        redis_sentinel.sentinel_servers[0].stop(kill=True)  # the one it listens to
        await asyncio.sleep(0.5)  # it gives up on that one and subscribes to another
        started = time.monotonic()
        old = await asyncio.to_thread(redis_sentinel.failover, wait=False)
        new = await asyncio.to_thread(redis_sentinel.wait_for_new_master, old)
        promoted = time.monotonic() - started
        await asyncio.sleep(0.1)  # the +switch-master message, sent as the sentinels switched
        # no call meanwhile: only that message can have told the adapter
        assert await adapter.set("after", "1") == Success(None)
        assert query(new[1], "GET", "after") == "1"
        report("watcher on a dying sentinel", f"new master agreed after {promoted:.2f}s, followed")
    finally:
        await adapter.aclose()
    assert not other_tasks()


async def test_readonly_is_retried_never_trips_and_makes_connections_ask_again(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    """A master turned replica behind the sentinels' back (``REPLICAOF`` a gone master):
    writes meet READONLY, as when a client reaches a demoted master."""
    adapter = build(redis_sentinel)
    stack, transitions = stack_of(adapter)
    # redis-py's own Sentinel client turns READONLY into a ConnectionError: still READONLY
    sentinel = Sentinel(redis_sentinel.sentinels, sentinel_kwargs={"retry": Retry(NoBackoff(), 0)})
    wrapped = RedisAdapter(sentinel.master_for(redis_sentinel.service_name))
    master = redis_sentinel.master_address()
    try:
        assert await stack.set("k", "v") == Success(None)
        assert await wrapped.set("k", "v") == Success(None)
        connections = int(query(master[1], "INFO", "stats")["total_connections_received"])
        assert query(master[1], "REPLICAOF", LOOPBACK, str(free_port())) == "OK"

        error = error_of(await adapter.set("k", "w"))
        assert error.code is ErrorCode.READONLY
        assert error.retryable and not error.trips_breaker and not error.maybe_applied
        assert error_of(await wrapped.set("k", "w")).code is ErrorCode.READONLY
        for _ in range(10):  # each retried once after a backoff, none trips the breaker
            assert error_of(await stack.set("k", "w")).code is ErrorCode.READONLY
        assert transitions == []
        assert isinstance(stack.inner, CircuitBreakerLayer)
        assert stack.inner.state is BreakerState.CLOSED
        # after a READONLY, each call's connection asked the sentinels and reconnected
        reconnected = int(query(master[1], "INFO", "stats")["total_connections_received"])
        assert reconnected - connections >= 10

        assert query(master[1], "REPLICAOF", "NO", "ONE") == "OK"
        assert await stack.set("k", "w") == Success(None)
        assert await stack.get("k") == Success("w")
    finally:
        await adapter.aclose()
        await wrapped.aclose()
        await sentinel.aclose()


def watcher_connections(deployment: RedisSentinelProcesses) -> list[str]:
    """The ``sub=`` field of the sentinels' clients logged in as ``watcher``."""
    found: list[str] = []
    for server in deployment.sentinel_servers:
        client = redis.Redis(
            host=LOOPBACK, port=server.port, username="admin", password="admin-pw",
            decode_responses=True,
        )  # fmt: skip
        with client:
            for line in client.execute_command("CLIENT", "LIST").splitlines():
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                if fields.get("user") == "watcher":
                    found.append(f"sub={fields['sub']}")
    return found


SENTINEL_ACL = "-@all +sentinel|master +subscribe resetchannels &+switch-master"
"""The sentinels' ACL for the adapter's sentinel user, as docs/scale-out.md gives it."""


async def test_sentinel_credentials_are_their_own_and_never_shown(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    for server in redis_sentinel.sentinel_servers:
        rules = SENTINEL_ACL.split()
        assert query(server.port, "ACL", "SETUSER", "watcher", "on", ">s3ntinel-pw", *rules)
        assert query(server.port, "ACL", "SETUSER", "admin", "on", ">admin-pw", "+@all")
        assert query(server.port, "ACL", "SETUSER", "default", "off") == "OK"

    anonymous = build(redis_sentinel)
    error = error_of(await anonymous.ping())
    assert error.code is ErrorCode.AUTH
    assert not error.retryable and not error.trips_breaker
    await anonymous.aclose()

    wrong = build(redis_sentinel, sentinel_username="watcher", sentinel_password="wrong-pw")
    error = error_of(await wrong.ping())
    assert error.code is ErrorCode.AUTH
    assert "wrong-pw" not in str(error) and "wrong-pw" not in repr(wrong)
    await wrong.aclose()

    adapter = build(redis_sentinel, sentinel_username="watcher", sentinel_password="s3ntinel-pw")
    try:
        assert await adapter.set("k", "v") == Success(None)
        assert await adapter.get("k") == Success("v")
        assert "s3ntinel-pw" not in repr(adapter)
        # the documented ACL lets the watcher listen to +switch-master
        for _ in range(100):
            if any(sub == "sub=1" for sub in watcher_connections(redis_sentinel)):
                break
            await asyncio.sleep(0.02)
        assert "sub=1" in watcher_connections(redis_sentinel)
    finally:
        await adapter.aclose()
    assert not other_tasks()


async def test_sentinels_down_do_not_take_the_cache_down(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    adapter = build(redis_sentinel)
    try:
        assert await adapter.set("k", "v") == Success(None)
        for server in redis_sentinel.sentinel_servers:
            server.stop(kill=True)
        master = redis_sentinel.servers[0]
        assert query(master.port, "CLIENT", "KILL", "TYPE", "normal")  # the adapter reconnects
        await asyncio.sleep(0.05)  # the event loop sees the EOF
        assert await adapter.get("k") == Success("v")  # to the master the sentinels named
        # even when in doubt (a READONLY makes every connection ask the sentinels first):
        # no sentinel answers, so the connections go back to the last master named
        assert query(master.port, "REPLICAOF", LOOPBACK, str(free_port())) == "OK"
        assert error_of(await adapter.set("k", "w")).code is ErrorCode.READONLY
        assert error_of(await adapter.set("k", "w")).code is ErrorCode.READONLY  # not CONNECTION
        assert query(master.port, "REPLICAOF", "NO", "ONE") == "OK"
        assert await adapter.set("k", "w") == Success(None)
    finally:
        await adapter.aclose()
    assert not other_tasks()


async def test_closed_adapter_stops_its_watcher_and_restarts_it_when_used(
    sentinel_deployment: RedisSentinelProcesses,
) -> None:
    adapter = build(sentinel_deployment)
    assert await adapter.ping() == Success(True)
    (watcher,) = watchers()
    await adapter.aclose()
    assert watcher.done() and not other_tasks()
    assert await adapter.ping() == Success(True)  # usable again, watching again
    assert len(watchers()) == 1
    await adapter.aclose()
    assert not other_tasks()


@contextlib.contextmanager
def frozen(servers: list[Any]) -> Iterator[None]:
    """SIGSTOP the processes (they accept connections and never answer), SIGCONT after."""
    for server in servers:
        os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for server in servers:
            os.kill(server.proc.pid, signal.SIGCONT)


async def test_hung_sentinels_do_not_take_a_healthy_master_down(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    """Sentinels that hang (not dead: they accept and never answer) while the master is
    healthy: after a moment of doubt (one READONLY) the connections are bounded by the
    call's deadline, the known master keeps serving, and trust comes back. Before: each
    new connection asked the hung sentinels one after another (1.5 s), every call timed
    out, and callers in lock-step never recovered."""
    adapter = build(redis_sentinel)
    stack, _ = stack_of(adapter)
    master = redis_sentinel.master_address()
    loop = asyncio.get_running_loop()
    try:
        assert await stack.set("k", "v") == Success(None)
        with frozen(redis_sentinel.sentinel_servers):
            assert query(master[1], "REPLICAOF", LOOPBACK, str(free_port())) == "OK"
            assert error_of(await adapter.set("k", "w")).code is ErrorCode.READONLY  # doubt
            assert query(master[1], "REPLICAOF", "NO", "ONE") == "OK"
            outcomes: Counter[str] = Counter()
            slowest = 0.0
            for _ in range(10):  # 20 callers in lock-step
                started = loop.time()
                results = await asyncio.gather(*(stack.get("k") for _ in range(20)))
                slowest = max(slowest, loop.time() - started)
                outcomes.update("ok" if r == Success("v") else repr(r)[:80] for r in results)
        assert slowest < DEADLINE + SLACK
        assert outcomes == Counter({"ok": 200}), outcomes
    finally:
        await adapter.aclose()


async def test_an_answer_to_a_question_asked_before_a_doubt_does_not_lift_it(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    """A lookup under way when a READONLY (or a failed connect) raises a doubt may carry the
    pre-failover master: it must not mark that master trusted again."""
    adapter = build(redis_sentinel)
    try:
        assert await adapter.set("k", "v") == Success(None)
        sentinel = adapter._sentinel
        assert sentinel is not None
        with frozen(redis_sentinel.sentinel_servers):
            sentinel.distrust(drop_connections=False)
            lookup = asyncio.ensure_future(sentinel._locate())  # hung: under way
            await asyncio.sleep(0.05)
            sentinel.distrust(drop_connections=False)  # doubt raised meanwhile
        await lookup  # the sentinels answer now
        assert sentinel.master == redis_sentinel.master_address()
        assert not sentinel._trusted  # the next connection asks again
    finally:
        await adapter.aclose()

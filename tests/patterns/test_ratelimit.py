"""RateLimiter: exact limits on every backend, one atomic script, honest when Redis fails.

Timing is tested on MemoryCache with a ManualClock (the scripts' Python twins); on Redis,
where time is the server's, windows are long enough for every check to fall in one, except
one test that waits the ``retry_after`` Redis itself reported.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from resilient_cache import (
    BreakerState,
    CacheProtocol,
    CacheSettings,
    CircuitBreakerLayer,
    ConfigurationError,
    EncryptionLayer,
    ErrorCode,
    Failure,
    LoggingLayer,
    MemoryCache,
    MetricsLayer,
    RedisAdapter,
    RetryLayer,
    Success,
    TracingLayer,
    build_cache,
    generate_encryption_key,
)
from resilient_cache.domain.scripts import ScriptRunner
from resilient_cache.patterns.ratelimit import (
    FIXED_WINDOW,
    SLIDING_WINDOW,
    RateLimit,
    RateLimiter,
)
from resilient_cache.testing import LOOPBACK, ManualClock, ScriptedCache, free_port
from resilient_cache.testing.toxiproxy import Proxy
from tests.conftest import CacheFactory
from tests.servers import RedisServer

KEY = "rate_limit:42:search"
ALGORITHMS = pytest.mark.parametrize("sliding", [False, True], ids=["fixed", "sliding"])


def shape(decisions: list[RateLimit]) -> list[tuple[bool, int]]:
    return [(d.allowed, d.remaining) for d in decisions]


def limiter_on(cache: CacheProtocol, **settings: Any) -> RateLimiter:
    assert isinstance(cache, ScriptRunner)  # every backend of make_cache can run scripts
    return RateLimiter(cache, **settings)


@pytest.fixture
async def adapter(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> AsyncIterator[RedisAdapter]:
    """An adapter with a namespace, on the session server (emptied by ``raw_redis``)."""
    adapter = RedisAdapter.from_url(redis_server.url, namespace="app")
    yield adapter
    await adapter.aclose()


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "window", "setting"),
    [
        (0, 60, "limit"),
        (-1, 60, "limit"),
        (True, 60, "limit"),
        (1.5, 60, "limit"),
        (10, 0, "window"),
        (10, -1, "window"),
        (10, 0.0001, "window"),
        (10, float("nan"), "window"),
        (10, float("inf"), "window"),
        (10, True, "window"),
        (10, "60", "window"),
    ],
)
def test_bad_settings_are_configuration_errors(limit: Any, window: Any, setting: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RateLimiter(MemoryCache(), limit=limit, window=window)
    assert raised.value.setting == setting


async def test_a_cache_that_cannot_run_scripts_is_refused_at_construction() -> None:
    no_scripts: Any = object()
    with pytest.raises(ConfigurationError, match="cannot run scripts"):
        RateLimiter(no_scripts, limit=1, window=1)
    over_it = ScriptedCache(no_scripts)
    with pytest.raises(ConfigurationError, match="cannot run scripts"):
        RateLimiter(over_it, limit=1, window=1)
    # a layer over it answers a run with a VALIDATION failure, never an exception
    result = await over_it.run_script(FIXED_WINDOW, ["k"], [1, 1000])
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.VALIDATION


# -- the same answers on every backend (MemoryCache, Redis, Redis under the ACL) -----------


@ALGORITHMS
async def test_exactly_limit_allowed_per_window_and_the_key_keeps_a_ttl(
    make_cache: CacheFactory, sliding: bool
) -> None:
    cache = await make_cache()
    limiter = limiter_on(cache, limit=3, window=60, sliding=sliding)
    decisions = []
    for _ in range(5):
        decisions.append(await limiter.check(KEY))
        ttl = await cache.ttl(KEY)
        assert isinstance(ttl, Success) and ttl.value is not None, ttl  # never without expiry
        assert 0 < ttl.value <= 60
    assert shape(decisions) == [(True, 2), (True, 1), (True, 0), (False, 0), (False, 0)]
    assert [d.retry_after for d in decisions[:3]] == [0.0, 0.0, 0.0]
    assert all(0 < d.retry_after <= 60 for d in decisions[3:])
    assert not any(d.degraded for d in decisions)
    assert all(d.limit == 3 and d.error is None for d in decisions)
    assert (await limiter.check("rate_limit:43:search")).remaining == 2  # keys are separate


@ALGORITHMS
async def test_a_key_holding_something_else_is_a_wrong_type_failure(
    make_cache: CacheFactory, sliding: bool
) -> None:
    cache = await make_cache()
    assert await cache.set(KEY, "not a counter") == Success(None)
    decision = await limiter_on(cache, limit=3, window=60, sliding=sliding).check(KEY)
    assert decision.allowed and decision.degraded  # fail-open, and says why
    assert decision.error is not None and decision.error.code is ErrorCode.WRONG_TYPE
    assert await cache.get(KEY) == Success("not a counter")  # left intact


@ALGORITHMS
async def test_a_bad_key_is_a_validation_failure_decided_by_the_policy(
    make_cache: CacheFactory, sliding: bool
) -> None:
    cache = await make_cache()
    closed = limiter_on(cache, limit=3, window=60, sliding=sliding, fail_open=False)
    decision = await closed.check("")
    assert not decision.allowed
    assert decision.error is not None and decision.error.code is ErrorCode.VALIDATION


async def test_scripts_pass_through_the_encryption_layer() -> None:
    layer = EncryptionLayer(MemoryCache(), {"k1": generate_encryption_key()}, current="k1")
    limiter = RateLimiter(layer, limit=2, window=60, sliding=True)
    assert shape([await limiter.check(KEY) for _ in range(3)]) == [(True, 1), (True, 0), (False, 0)]


# -- timing, on MemoryCache with a ManualClock ------------------------------------------------


async def test_fixed_window_reopens_when_the_window_ends(clock: ManualClock) -> None:
    limiter = RateLimiter(MemoryCache(clock=clock), limit=3, window=10)
    first = [await limiter.check(KEY) for _ in range(4)]
    assert shape(first) == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert first[3].retry_after == pytest.approx(10.0)
    clock.advance(4)
    assert (await limiter.check(KEY)).retry_after == pytest.approx(6.0)
    clock.advance(6)  # the key expired: a new window starts with this request
    assert shape([await limiter.check(KEY)]) == [(True, 2)]


async def test_sliding_window_counts_exactly_the_last_window(clock: ManualClock) -> None:
    limiter = RateLimiter(MemoryCache(clock=clock), limit=3, window=10, sliding=True)
    seen = []
    for at in (0, 4, 8, 9, 10, 11, 14):
        clock.now = 1000.0 + at
        decision = await limiter.check(KEY)
        seen.append((at, decision.allowed, decision.remaining, round(decision.retry_after, 6)))
    assert seen == [
        (0, True, 2, 0.0),
        (4, True, 1, 0.0),
        (8, True, 0, 0.0),
        (9, False, 0, 1.0),  # the request at 0 leaves the window at 10
        (10, True, 0, 0.0),  # ... and exactly then, it has
        (11, False, 0, 3.0),  # next out: the one at 4, at 14
        (14, True, 0, 0.0),
    ]


async def test_the_fixed_window_lets_a_burst_straddle_its_end_the_sliding_one_does_not(
    clock: ManualClock,
) -> None:
    cache = MemoryCache(clock=clock)
    fixed = RateLimiter(cache, limit=3, window=10)
    sliding = RateLimiter(cache, limit=3, window=10, sliding=True)
    allowed = {"fixed": 0, "sliding": 0}
    for at in (0, 9.5, 9.6, 10.1, 10.2, 10.3):
        clock.now = 1000.0 + at
        allowed["fixed"] += (await fixed.check("f")).allowed
        allowed["sliding"] += (await sliding.check("s")).allowed
    # fixed: all 6, 5 of them within 0.8 s; sliding: never more than 3 within 10 s
    assert allowed == {"fixed": 6, "sliding": 4}


@settings(max_examples=60, deadline=None)
@given(
    gaps_ms=st.lists(st.integers(0, 3000), min_size=1, max_size=60),
    limit=st.integers(1, 5),
    window_ms=st.integers(1, 5000),
)
def test_sliding_window_never_exceeds_the_limit_in_any_window(
    gaps_ms: list[int], limit: int, window_ms: int
) -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(
        MemoryCache(clock=clock), limit=limit, window=window_ms / 1000, sliding=True
    )

    async def run() -> list[tuple[int, RateLimit]]:
        now_ms, decisions = 0, []
        for gap in gaps_ms:
            now_ms += gap
            clock.now = now_ms / 1000
            decisions.append((now_ms, await limiter.check(KEY)))
        return decisions

    allowed_at: list[int] = []
    for now_ms, decision in asyncio.run(run()):
        in_window = [t for t in allowed_at if t > now_ms - window_ms]
        # exact: refused if and only if `limit` requests were allowed in the last window
        assert decision.allowed == (len(in_window) < limit)
        if decision.allowed:
            allowed_at.append(now_ms)
            assert decision.remaining == limit - len(in_window) - 1
        else:
            leaves_at = in_window[0] + window_ms
            assert decision.retry_after == pytest.approx((leaves_at - now_ms) / 1000, abs=1e-6)


# -- Redis: the key's expiry, namespacing, NOSCRIPT ----------------------------------------


@ALGORITHMS
async def test_pttl_is_set_after_every_check_including_refusals(
    adapter: RedisAdapter, raw_redis: aioredis.Redis, sliding: bool
) -> None:
    limiter = RateLimiter(adapter, limit=2, window=30, sliding=sliding)
    for _ in range(5):
        await limiter.check(KEY)
        assert 0 < await raw_redis.pttl(f"app:{KEY}") <= 30_000  # namespaced by the adapter
    assert await raw_redis.exists(KEY) == 0
    if sliding:
        assert await raw_redis.zcard(f"app:{KEY}") == 2  # refusals are not logged
    else:
        assert await raw_redis.get(f"app:{KEY}") == b"2"


@ALGORITHMS
async def test_a_key_left_without_expiry_gets_one(
    adapter: RedisAdapter, raw_redis: aioredis.Redis, sliding: bool
) -> None:
    """A hand-written race (INCR, crash, no EXPIRE) leaves keys like this: the check heals them."""
    if sliding:
        await raw_redis.zadd(f"app:{KEY}", {"a": 1, "b": 2})
    else:
        await raw_redis.set(f"app:{KEY}", "7")
    assert await raw_redis.pttl(f"app:{KEY}") == -1
    await RateLimiter(adapter, limit=5, window=30, sliding=sliding).check(KEY)
    assert 0 < await raw_redis.pttl(f"app:{KEY}") <= 30_000


@ALGORITHMS
async def test_retry_after_is_the_time_until_a_slot_frees_up(
    adapter: RedisAdapter, raw_redis: aioredis.Redis, sliding: bool
) -> None:
    limiter = RateLimiter(adapter, limit=1, window=20, sliding=sliding)
    assert (await limiter.check(KEY)).allowed
    refused = await limiter.check(KEY)
    assert not refused.allowed
    assert 19 < refused.retry_after <= 20
    if not sliding:
        assert refused.retry_after == pytest.approx(
            await raw_redis.pttl(f"app:{KEY}") / 1000, abs=0.05
        )


@ALGORITHMS
async def test_a_short_window_reopens_after_the_reported_retry_after(
    adapter: RedisAdapter, sliding: bool
) -> None:
    limiter = RateLimiter(adapter, limit=2, window=0.2, sliding=sliding)
    assert shape([await limiter.check(KEY) for _ in range(3)]) == [(True, 1), (True, 0), (False, 0)]
    refused = await limiter.check(KEY)
    assert 0 < refused.retry_after <= 0.2
    await asyncio.sleep(refused.retry_after + 0.01)  # Redis's clock: the wait it asked for
    assert (await limiter.check(KEY)).allowed


@ALGORITHMS
async def test_noscript_falls_back_to_eval_after_script_flush(
    adapter: RedisAdapter, raw_redis: aioredis.Redis, sliding: bool
) -> None:
    script = SLIDING_WINDOW if sliding else FIXED_WINDOW
    limiter = RateLimiter(adapter, limit=3, window=60, sliding=sliding)
    await raw_redis.script_flush()  # the session's server may know it from other tests
    await raw_redis.config_resetstat()
    assert (await limiter.check(KEY)).remaining == 2  # EVALSHA, NOSCRIPT, EVAL
    assert (await limiter.check(KEY)).remaining == 1  # EVALSHA
    await raw_redis.script_flush()
    assert await raw_redis.script_exists(script.sha1) == [False]
    assert (await limiter.check(KEY)).remaining == 0  # EVALSHA, NOSCRIPT, EVAL: counted once
    assert await raw_redis.script_exists(script.sha1) == [True]  # EVAL cached it again
    stats = await raw_redis.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 3
    assert stats["cmdstat_eval"]["calls"] == 2


async def test_log_entries_are_unique_across_limiters(
    adapter: RedisAdapter, raw_redis: aioredis.Redis
) -> None:
    limiters = [RateLimiter(adapter, limit=20, window=60, sliding=True) for _ in range(3)]
    decisions = await asyncio.gather(*(limiters[i % 3].check(KEY) for i in range(25)))
    assert sum(d.allowed for d in decisions) == 20
    assert await raw_redis.zcard(f"app:{KEY}") == 20


# -- when Redis fails: fail-open, fail-closed, and saying so ----------------------------------


@ALGORITHMS
async def test_redis_down_fail_open_allows_and_fail_closed_refuses(sliding: bool) -> None:
    cache = RedisAdapter.from_url(f"redis://{LOOPBACK}:{free_port()}/0")
    opened = await RateLimiter(cache, limit=10, window=60, sliding=sliding).check(KEY)
    assert (opened.allowed, opened.remaining, opened.retry_after) == (True, 10, 0.0)
    assert opened.degraded and opened.error is not None
    assert opened.error.code is ErrorCode.CONNECTION
    closed = RateLimiter(cache, limit=10, window=60, sliding=sliding, fail_open=False)
    refused = await closed.check(KEY)
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 0, 1.0)
    assert refused.degraded
    short = RateLimiter(cache, limit=10, window=0.5, sliding=sliding, fail_open=False)
    assert (await short.check(KEY)).retry_after == 0.5  # never longer than the window
    await cache.aclose()


async def test_through_the_stack_the_open_breaker_decides_and_says_when_to_retry(
    private_redis: RedisServer,
) -> None:
    clock = ManualClock()
    settings = CacheSettings(redis_url=private_redis.url, namespace="app")
    cache = build_cache(settings, clock=clock, registry=CollectorRegistry())
    breaker = cache.find(CircuitBreakerLayer)
    assert breaker is not None
    opened = RateLimiter(cache, limit=5, window=60)
    closed = RateLimiter(cache, limit=5, window=60, fail_open=False)
    assert (await opened.check(KEY)).remaining == 4
    private_redis.stop()
    for _ in range(5):
        assert (await opened.check(KEY)).degraded
    assert breaker.state is BreakerState.OPEN
    started = time.perf_counter()
    decision = await opened.check(KEY)
    assert time.perf_counter() - started < 0.005  # no I/O while open
    assert decision.allowed and decision.remaining == 5
    assert decision.error is not None and decision.error.code is ErrorCode.CIRCUIT_OPEN
    refused = await closed.check(KEY)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(breaker.open_time)  # until the next probe
    private_redis.start()  # back, empty
    clock.advance(breaker.open_time)
    assert (await opened.check(KEY)).remaining == 4
    assert not (await opened.check(KEY)).degraded
    await cache.aclose()


# -- never retried once it may have run --------------------------------------------------------


async def test_a_run_that_may_have_been_applied_is_not_retried() -> None:
    scripted = ScriptedCache(MemoryCache())
    stack = RetryLayer(CircuitBreakerLayer(scripted), attempts=3)
    limiter = RateLimiter(stack, limit=5, window=60)
    scripted.fail(ErrorCode.TIMEOUT, maybe_applied=True, operations={"run_script"})
    decision = await limiter.check(KEY)
    assert decision.degraded and decision.error is not None
    assert decision.error.maybe_applied and not decision.error.retryable
    assert scripted.attempts == ["run_script"]  # one attempt: a retry could count twice
    # a failure before anything was sent is safe to retry, and counts once
    scripted.fail(ErrorCode.CONNECTION, operations={"run_script"})
    decision = await limiter.check(KEY)
    assert scripted.attempts == ["run_script"] * 3
    assert scripted.calls == ["run_script"]
    assert (decision.allowed, decision.remaining, decision.degraded) == (True, 4, False)


@pytest.mark.slow
async def test_a_reply_lost_to_latency_is_not_retried_and_counted_once(
    redis_proxy: Proxy, redis_proxy_url: str, raw_redis: aioredis.Redis
) -> None:
    registry = CollectorRegistry()
    settings = CacheSettings(redis_url=redis_proxy_url, namespace="app")
    async with build_cache(settings, registry=registry) as cache:
        limiter = RateLimiter(cache, limit=5, window=60)
        assert (await limiter.check(KEY)).remaining == 4  # connected, and Redis knows the script
        with redis_proxy.latency(1000):  # the script runs; its reply comes too late
            started = time.monotonic()
            decision = await limiter.check(KEY)
            assert time.monotonic() - started < 0.6
        assert decision.error is not None, decision
        assert decision.error.code is ErrorCode.TIMEOUT
        assert decision.error.maybe_applied and not decision.error.retryable
        for _ in range(100):  # the one run reached Redis; a retry would have made it 3
            if await raw_redis.get(f"app:{KEY}") != b"1":
                break
            await asyncio.sleep(0.01)
        assert await raw_redis.get(f"app:{KEY}") == b"2"
        labels = {"cache": "default", "operation": "run_script", "error_type": "timeout"}
        assert registry.get_sample_value("resilient_cache_retries_total", labels) is None
        assert registry.get_sample_value("resilient_cache_errors_total", labels) == 1


# -- telemetry: a run is an operation like the others -------------------------------------------


async def test_runs_are_measured_traced_and_logged_as_run_script() -> None:
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scripted = ScriptedCache(MemoryCache())
    cache = MetricsLayer(
        TracingLayer(LoggingLayer(scripted), tracer_provider=provider), registry=registry
    )
    limiter = RateLimiter(cache, limit=5, window=60)
    await limiter.check(KEY)
    scripted.fail(ErrorCode.TIMEOUT, maybe_applied=True)
    with structlog.testing.capture_logs() as logs:
        await limiter.check(KEY)
    duration = "resilient_cache_operation_duration_seconds_count"
    for outcome in ("success", "fallback"):
        labels = {"cache": "default", "operation": "run_script", "outcome": outcome}
        assert registry.get_sample_value(duration, labels) == 1
    assert [span.name for span in exporter.get_finished_spans()] == ["EVALSHA", "EVALSHA"]
    [event] = logs
    assert event["event"] == "resilient_cache.call_failed"
    assert (event["operation"], event["maybe_applied"]) == ("run_script", True)
    assert "key" not in event


# -- five processes, one key --------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from prometheus_client import CollectorRegistry
    from resilient_cache import CacheSettings, build_cache
    from resilient_cache.patterns.ratelimit import RateLimiter

    async def main(url, sliding, limit, attempts):
        settings = CacheSettings(
            redis_url=url, namespace="procs", deadline=5.0, redis={"socket_timeout": 5.0}
        )
        async with build_cache(settings, registry=CollectorRegistry()) as cache:
            limiter = RateLimiter(cache, limit=limit, window=60, sliding=sliding, fail_open=False)
            print("ready", flush=True)
            sys.stdin.readline()  # all processes start together

            async def hammer(count):
                return [await limiter.check("rate_limit:shared") for _ in range(count)]

            batches = await asyncio.gather(*(hammer(attempts // 4) for _ in range(4)))
            decisions = [d for batch in batches for d in batch]
            print(sum(d.allowed for d in decisions), sum(d.degraded for d in decisions))

    asyncio.run(main(sys.argv[1], sys.argv[2] == "sliding", int(sys.argv[3]), int(sys.argv[4])))
    """
)


@pytest.mark.slow
@ALGORITHMS
def test_five_processes_never_get_more_than_the_limit_through(
    redis_server: RedisServer, sliding: bool
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    limit, attempts = 50, 40  # 5 x 40 = 200 attempts for 50 slots, all in one window
    argv = [sys.executable, "-c", WORKER, redis_server.url,
            "sliding" if sliding else "fixed", str(limit), str(attempts)]  # fmt: skip
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0] * 5
    counts = [[int(number) for number in out.split()] for out in outputs]  # allowed, degraded
    allowed, degraded = sum(c[0] for c in counts), sum(c[1] for c in counts)
    assert degraded == 0
    assert allowed == limit
    raw = redis.Redis.from_url(redis_server.url)
    key = "procs:rate_limit:shared"
    assert (raw.zcard(key) if sliding else int(raw.get(key) or 0)) == limit
    assert 0 < raw.pttl(key) <= 60_000
    raw.close()

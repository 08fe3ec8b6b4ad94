"""@cached over MemoryCache and ScriptedCache on a manual clock: keys, serializers, negative
caching, failures as misses, single-flight, early refresh and serve-stale, without sleeping.

The same promises against a real redis-server and a real Toxiproxy are in
test_cached_outages.py.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import importlib.util
import itertools
import math
import pkgutil
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

import resilient_cache
from resilient_cache import (
    CacheProtocol,
    ConfigurationError,
    ErrorCode,
    Limits,
    MemoryCache,
    MetricsLayer,
    RedisAdapter,
    Success,
    cache_key,
    patterns,
)
from resilient_cache.domain.validation import dump_json
from resilient_cache.patterns import (
    JSON,
    EarlyRefresh,
    ServeStale,
    cached,
)
from resilient_cache.testing import ManualClock, ScriptedCache
from tests.servers import RedisServer


async def stored(cache: MemoryCache, key: str) -> str:
    """The raw text stored under ``key`` (which must exist)."""
    text = (await cache.get(key)).unwrap()
    assert text is not None
    return text


@pytest.fixture
def memory(clock: ManualClock) -> MemoryCache:
    return MemoryCache(clock=clock)


@pytest.fixture
def scripted(memory: MemoryCache) -> ScriptedCache:
    return ScriptedCache(memory)


# -- key templates -------------------------------------------------------------------


def test_keys_are_filled_from_positional_keyword_and_default_arguments(memory: MemoryCache) -> None:
    @cached(memory, key="user:{user_id}:{lang}", ttl=60)
    async def get_user(user_id: int, lang: str = "en") -> str:
        return "ada"

    assert get_user.cache_key(42) == "user:42:en"
    assert get_user.cache_key(user_id=42) == "user:42:en"
    assert get_user.cache_key(42, "fr") == get_user.cache_key(42, lang="fr") == "user:42:fr"
    assert get_user.key_template == "user:{user_id}:{lang}"
    with pytest.raises(TypeError):
        get_user.cache_key(42, "fr", "extra")  # type: ignore[call-arg]


class Color(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


@dataclass
class User:
    id: int
    name: str


def test_values_cannot_change_the_key_structure_and_match_cache_key(memory: MemoryCache) -> None:
    @cached(memory, key="user:{user_id}:profile", ttl=60)
    async def profile(user_id: object) -> str:
        return "x"

    assert profile.cache_key("1:admin") == "user:1%3Aadmin:profile"
    assert profile.cache_key("50%") == cache_key("user", "50%", "profile")
    assert profile.cache_key(7) == cache_key("user", 7, "profile")
    assert profile.cache_key(Color.RED) == "user:red:profile"
    assert profile.cache_key(Size.BIG) == "user:3:profile"
    uid = uuid.UUID(int=1)
    assert profile.cache_key(uid) == f"user:{uid}:profile"


def test_attribute_placeholders(memory: MemoryCache) -> None:
    @cached(memory, key="user:{user.id}", ttl=60)
    async def greet(user: User) -> str:
        return f"hello {user.name}"

    assert greet.cache_key(User(3, "ada")) == "user:3"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1.5, TypeError),
        (None, TypeError),
        (True, TypeError),
        (object(), TypeError),
        ("", ValueError),
    ],
)
def test_values_that_cannot_be_key_parts_raise_naming_the_placeholder(
    memory: MemoryCache, value: object, error: type[Exception]
) -> None:
    @cached(memory, key="user:{user_id}", ttl=60)
    async def get_user(user_id: object) -> str:
        return "x"

    with pytest.raises(error, match=r"placeholder \{user_id\}"):
        get_user.cache_key(value)


@pytest.mark.parametrize(
    "template",
    [
        "user:{uid}",  # names no parameter
        "user:{}",
        "user:{0}",
        "user:{user_id!r}",
        "user:{user_id:>5}",
        "user:{user_id[0]}",
        "user:{user_id._secret}",
        "user:{rest}",  # *rest
        "user:{options}",  # **options
        "user:{",
        "",
    ],
)
def test_a_template_that_does_not_fit_the_signature_fails_at_decoration(
    memory: MemoryCache, template: str
) -> None:
    decorate = cached(memory, key=template, ttl=60)

    async def get_user(user_id: int, *rest: int, **options: int) -> str:
        return "x"

    with pytest.raises(ConfigurationError) as caught:
        decorate(get_user)
    assert caught.value.setting == "key"


def test_a_missing_placeholder_names_the_parameters(memory: MemoryCache) -> None:
    with pytest.raises(ConfigurationError, match=r"\{uid\} names no parameter.*user_id, lang"):

        @cached(memory, key="user:{uid}", ttl=60)
        async def get_user(user_id: int, lang: str = "en") -> str:
            return "x"


def test_only_async_functions_can_be_decorated(memory: MemoryCache) -> None:
    def plain(user_id: int) -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="not an async function"):
        cached(memory, key="user:{user_id}", ttl=60)(plain)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -1, 1.5, "60", None, True, 2**31])
def test_a_bad_ttl_fails_at_decoration(memory: MemoryCache, ttl: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        cached(memory, key="k", ttl=ttl)
    assert caught.value.setting == "ttl"
    with pytest.raises(ConfigurationError) as caught:
        cached(memory, key="k", ttl=60, negative_ttl=ttl if ttl is not None else 0)
    assert caught.value.setting == "negative_ttl"


def test_bad_options_fail_at_decoration(memory: MemoryCache) -> None:
    with pytest.raises(ConfigurationError, match="cache"):
        cached(object(), key="k", ttl=60)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="serializer"):
        cached(memory, key="k", ttl=60, serializer=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"early_refresh\.beta"):
        EarlyRefresh(beta=0)
    with pytest.raises(ConfigurationError, match=r"serve_stale\.max_staleness"):
        ServeStale(max_staleness=math.inf)
    with pytest.raises(ConfigurationError, match=r"serve_stale\.max_entries"):
        ServeStale(max_staleness=10, max_entries=0)
    with pytest.raises(ConfigurationError, match=r"serve_stale\.max_bytes"):
        ServeStale(max_staleness=10, max_bytes=0)
    with pytest.raises(ConfigurationError, match=r"serve_stale\.max_value_bytes"):
        ServeStale(max_staleness=10, max_value_bytes=True)
    with pytest.raises(ConfigurationError, match="serve_stale"):
        cached(memory, key="k", ttl=60, serve_stale=10)  # type: ignore[arg-type]


# -- reading, writing, serializers -----------------------------------------------------


async def test_a_miss_calls_the_function_and_a_hit_does_not(
    memory: MemoryCache, clock: ManualClock
) -> None:
    calls: list[int] = []

    @cached(memory, key="user:{user_id}", ttl=60, clock=clock)
    async def get_user(user_id: int) -> dict[str, Any]:
        calls.append(user_id)
        return {"id": user_id, "pair": (1, 2)}

    first = await get_user(1)
    assert first == {"id": 1, "pair": [1, 2]}  # a miss answers what a hit will: JSON's view
    assert await get_user(1) == first
    assert calls == [1]
    assert await stored(memory, "user:1") == 'cached:v1:1060.000:0.000000:v:{"id":1,"pair":[1,2]}'
    assert await memory.ttl("user:1") == Success(60)
    assert get_user.__name__ == "get_user"
    assert get_user.in_flight == 0


def test_the_json_serializer_follows_the_librarys_json_rules() -> None:
    assert JSON.dumps({"a": (1, 2)}) == '{"a":[1,2]}'
    refused = dump_json("cached", "", math.nan)
    assert not isinstance(refused, str)
    with pytest.raises(ValueError, match=refused.message):
        JSON.dumps(math.nan)
    with pytest.raises(ValueError, match="not valid JSON"):
        JSON.loads("NaN")


async def test_a_value_the_serializer_refuses_is_returned_uncached(memory: MemoryCache) -> None:
    calls = 0

    @cached(memory, key="ratio", ttl=60)
    async def ratio() -> float:
        nonlocal calls
        calls += 1
        return math.inf

    with capture_logs() as logs:
        assert await ratio() == math.inf
        assert await ratio() == math.inf
    assert calls == 2
    assert await memory.exists("ratio") == Success(False)
    assert logs[0]["event"] == "resilient_cache.value_not_serialized"
    assert logs[0]["error_type"] == "ValueError"


class UserSerializer:
    def dumps(self, value: User) -> str:
        return f"{value.id}|{value.name}"

    def loads(self, text: str) -> User:
        user_id, name = text.split("|")
        return User(int(user_id), name)


async def test_the_serializer_is_pluggable(memory: MemoryCache) -> None:
    calls = 0

    @cached(memory, key="user:{user_id}", ttl=60, serializer=UserSerializer())
    async def get_user(user_id: int) -> User:
        nonlocal calls
        calls += 1
        return User(user_id, "ada")

    assert await get_user(3) == User(3, "ada")
    assert await get_user(3) == User(3, "ada")
    assert calls == 1
    assert (await stored(memory, "user:3")).endswith(":v:3|ada")


@pytest.mark.parametrize(
    "text",
    [
        "hello",  # not written by @cached
        '{"id": 1}',
        "cached:v1:9999.000:0.000000:v:not json",
        "cached:v1:nan:0.000000:v:1",
        "cached:v1:9999.000:-1.000000:v:1",
        "cached:v1:9999.000:0.000000:n:1",
        "cached:v2:9999.000:0.000000:v:1",
    ],
)
async def test_stored_text_that_is_not_a_readable_entry_is_a_miss_and_is_overwritten(
    memory: MemoryCache, text: str
) -> None:
    await memory.set("user:1", text)

    @cached(memory, key="user:{user_id}", ttl=60)
    async def get_user(user_id: int) -> int:
        return user_id

    with capture_logs():
        assert await get_user(1) == 1
    assert (await stored(memory, "user:1")).endswith(":v:1")


# -- negative caching ------------------------------------------------------------------


async def test_none_is_cached_for_negative_ttl(memory: MemoryCache, clock: ManualClock) -> None:
    calls = 0

    @cached(memory, key="user:{user_id}", ttl=60, negative_ttl=5, clock=clock)
    async def find_user(user_id: int) -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert await find_user(1) is None
    assert await find_user(1) is None
    assert calls == 1
    assert await memory.get("user:1") == Success("cached:v1:1005.000:0.000000:n:")
    assert await memory.ttl("user:1") == Success(5)
    clock.advance(5)
    assert await find_user(1) is None
    assert calls == 2


async def test_without_negative_ttl_none_is_not_cached(memory: MemoryCache) -> None:
    calls = 0

    @cached(memory, key="user:{user_id}", ttl=60)
    async def find_user(user_id: int) -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert await find_user(1) is None
    assert await find_user(1) is None
    assert calls == 2
    assert await memory.exists("user:1") == Success(False)


class Verbatim:
    def dumps(self, value: str) -> str:
        return value

    def loads(self, text: str) -> str:
        return text


async def test_no_value_can_collide_with_the_not_found_marker(memory: MemoryCache) -> None:
    answers = {"empty": "", "marker": "cached:v1:1.000:0.000000:n:", "none": None}

    @cached(memory, key="k:{name}", ttl=60, negative_ttl=60, serializer=Verbatim())
    async def answer(name: str) -> str | None:
        return answers[name]

    for name, expected in answers.items():
        assert await answer(name) == expected  # the miss
        assert await answer(name) == expected  # the hit


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [ErrorCode.CONNECTION, ErrorCode.CIRCUIT_OPEN, ErrorCode.VALIDATION]
)
async def test_a_cache_failure_is_a_miss(scripted: ScriptedCache, code: ErrorCode) -> None:
    calls = 0

    @cached(scripted, key="user:{user_id}", ttl=60)
    async def get_user(user_id: int) -> int:
        nonlocal calls
        calls += 1
        return user_id

    scripted.fail_always(code)
    assert await get_user(1) == 1  # read and write both fail: no exception
    assert await get_user(1) == 1
    assert calls == 2
    assert scripted.attempts == ["get", "set", "get", "set"]


async def test_a_failed_write_is_ignored(scripted: ScriptedCache) -> None:
    calls = 0

    @cached(scripted, key="user:{user_id}", ttl=60)
    async def get_user(user_id: int) -> int:
        nonlocal calls
        calls += 1
        return user_id

    scripted.fail(ErrorCode.TIMEOUT, operations=["set"])
    assert await get_user(1) == 1
    assert await get_user(1) == 1  # the write had failed: a miss
    assert await get_user(1) == 1
    assert calls == 2


async def test_the_functions_exception_propagates_and_is_not_cached(memory: MemoryCache) -> None:
    calls = 0

    @cached(memory, key="user:{user_id}", ttl=60, negative_ttl=60)
    async def get_user(user_id: int) -> int:
        nonlocal calls
        calls += 1
        raise LookupError(user_id)

    for _ in range(2):
        with pytest.raises(LookupError):
            await get_user(1)
    assert calls == 2
    assert await memory.exists("user:1") == Success(False)
    assert get_user.in_flight == 0


async def test_invalidate_deletes_the_entry(memory: MemoryCache) -> None:
    calls = 0

    @cached(memory, key="user:{user_id}", ttl=60)
    async def get_user(user_id: int) -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await get_user(1) == 1
    assert await get_user.invalidate(1) == Success(True)
    assert await get_user.invalidate(user_id=1) == Success(False)
    assert await get_user(1) == 2


# -- single-flight ---------------------------------------------------------------------


class GatedLoader:
    """A loader that waits for ``gate``; counts its calls and how many ran to the end."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.calls = 0
        self.finished = 0

    async def __call__(self, user_id: int) -> dict[str, int]:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        self.finished += 1
        return {"id": user_id, "version": self.calls}


def gated(cache: Any, loader: GatedLoader, **options: Any) -> Any:
    @cached(cache, key="user:{user_id}", ttl=60, **options)
    async def get_user(user_id: int) -> dict[str, int]:
        return await loader(user_id)

    return get_user


async def test_concurrent_misses_call_the_function_once(memory: MemoryCache) -> None:
    loader = GatedLoader()
    get_user = gated(memory, loader)
    callers = [asyncio.create_task(get_user(1)) for _ in range(50)]
    await loader.started.wait()
    assert get_user.in_flight == 2  # one read, one computation
    loader.gate.set()
    assert await asyncio.gather(*callers) == [{"id": 1, "version": 1}] * 50
    assert loader.calls == 1
    assert get_user.in_flight == 0


async def test_concurrent_callers_share_the_functions_exception(memory: MemoryCache) -> None:
    calls = 0
    gate = asyncio.Event()

    @cached(memory, key="user:{user_id}", ttl=60)
    async def get_user(user_id: int) -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise LookupError(user_id)

    callers = [asyncio.create_task(get_user(1)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, LookupError) for outcome in outcomes)
    assert calls == 1
    assert get_user.in_flight == 0


async def test_concurrent_hits_share_one_read(memory: MemoryCache, scripted: ScriptedCache) -> None:
    get_user = gated(scripted, GatedLoader())
    await memory.set("user:1", 'cached:v1:9999.000:0.000000:v:{"id":1}')
    assert await asyncio.gather(*(get_user(1) for _ in range(20))) == [{"id": 1}] * 20
    assert scripted.calls == ["get"]


async def test_cancelling_a_waiter_does_not_cancel_the_others(memory: MemoryCache) -> None:
    loader = GatedLoader()
    get_user = gated(memory, loader)
    first, second, third = (asyncio.create_task(get_user(1)) for _ in range(3))
    await loader.started.wait()
    second.cancel()
    await asyncio.sleep(0)
    loader.gate.set()
    assert await first == await third == {"id": 1, "version": 1}
    with pytest.raises(asyncio.CancelledError):
        await second
    assert (loader.calls, loader.finished) == (1, 1)


async def test_when_every_waiter_is_cancelled_the_load_still_finishes_and_is_cached(
    memory: MemoryCache,
) -> None:
    loader = GatedLoader()
    get_user = gated(memory, loader)
    callers = [asyncio.create_task(get_user(1)) for _ in range(3)]
    await loader.started.wait()
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    loader.gate.set()
    await get_user.drain()
    assert get_user.in_flight == 0
    assert loader.finished == 1
    assert await get_user(1) == {"id": 1, "version": 1}  # a hit
    assert loader.calls == 1


async def test_a_cancelled_computation_leaks_nothing(memory: MemoryCache) -> None:
    @cached(memory, key="user:{user_id}", ttl=60)
    async def get_user(user_id: int) -> int:
        raise asyncio.CancelledError  # e.g. a call inside the function was cancelled

    for _ in range(2):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.gather(get_user(1), get_user(1))
    assert get_user.in_flight == 0


async def test_a_computation_running_when_invalidated_is_not_written_back(
    memory: MemoryCache,
) -> None:
    loader = GatedLoader()
    get_user = gated(memory, loader)
    caller = asyncio.create_task(get_user(1))
    await loader.started.wait()
    assert await get_user.invalidate(1) == Success(False)
    loader.gate.set()
    assert await caller == {"id": 1, "version": 1}  # its caller still gets it
    await get_user.drain()
    assert await memory.exists("user:1") == Success(False)
    assert await get_user(1) == {"id": 1, "version": 2}


def test_a_decorated_function_serves_several_event_loops() -> None:
    memory = MemoryCache()
    calls = 0

    @cached(memory, key="user:{user_id}", ttl=60)
    async def get_user(user_id: int) -> int:
        nonlocal calls
        calls += 1
        return user_id

    assert asyncio.run(get_user(1)) == 1
    assert asyncio.run(get_user(1)) == 1
    assert calls == 1


# -- early refresh (XFetch) -----------------------------------------------------------


def fixed(value: float) -> EarlyRefresh:
    """An early refresh whose random source always answers ``value``."""
    return EarlyRefresh(random=lambda: value)


async def test_early_refresh_recomputes_before_expiry_in_the_background(
    memory: MemoryCache, clock: ManualClock
) -> None:
    loader = GatedLoader()
    took = [10.0, 1.0]  # seconds each computation takes

    @cached(
        memory, key="user:{user_id}", ttl=60, clock=clock, early_refresh=fixed(1 - math.exp(-1))
    )
    async def get_user(user_id: int) -> dict[str, int]:
        clock.advance(took.pop(0))
        return await loader(user_id)

    loader.gate.set()
    assert await get_user(1) == {"id": 1, "version": 1}  # expires at 1070, delta 10
    loader.gate.clear()
    loader.started.clear()
    # log(rand) = -1: due once now + delta * beta >= expiry, i.e. from 1060 on
    clock.advance(49.9)
    assert await get_user(1) == {"id": 1, "version": 1}
    assert loader.calls == 1
    clock.advance(0.2)  # 1060.1: due
    assert await get_user(1) == {"id": 1, "version": 1}  # served at once, not waiting
    await loader.started.wait()
    assert (loader.calls, loader.finished) == (2, 1)
    assert await get_user(1) == {"id": 1, "version": 1}  # the refresh is single-flight
    loader.gate.set()
    await get_user.drain()
    assert loader.calls == 2
    assert await get_user(1) == {"id": 1, "version": 2}
    assert clock() < 1070  # refreshed before the old entry expired
    assert (await stored(memory, "user:1")).startswith("cached:v1:1121.100:1.000000:v:")


async def test_a_failed_early_refresh_keeps_the_cached_value(
    memory: MemoryCache, clock: ManualClock
) -> None:
    calls = 0

    @cached(memory, key="user:{user_id}", ttl=60, clock=clock, early_refresh=fixed(0.999))
    async def get_user(user_id: int) -> int:
        nonlocal calls
        calls += 1
        clock.advance(1)
        if calls > 1:
            raise LookupError(user_id)
        return calls

    assert await get_user(1) == 1  # expires at 1061, delta 1
    clock.advance(55)
    with capture_logs() as logs:
        assert await get_user(1) == 1  # log(0.001) = -6.9: 1056 + 6.9 >= 1061, due
        await get_user.drain()
    assert calls == 2
    assert [log["event"] for log in logs] == ["resilient_cache.refresh_failed"]
    assert await memory.exists("user:1") == Success(True)


async def test_an_early_refresh_that_finds_nothing_drops_the_old_entry(
    memory: MemoryCache, clock: ManualClock
) -> None:
    users = {1: "ada"}

    @cached(memory, key="user:{user_id}", ttl=60, clock=clock, early_refresh=fixed(0.999))
    async def find_user(user_id: int) -> str | None:
        clock.advance(1)
        return users.get(user_id)

    assert await find_user(1) == "ada"
    del users[1]
    clock.advance(55)
    assert await find_user(1) == "ada"  # due: refreshed in the background
    await find_user.drain()
    assert await memory.exists("user:1") == Success(False)  # None is not cached: no entry
    assert await find_user(1) is None


async def simulate(
    seconds: int,
    early_refresh: Sequence[EarlyRefresh | None],
    backend: CacheProtocol | None = None,
    clock: ManualClock | None = None,
) -> tuple[list[list[float]], float]:
    """Processes sharing one cache (one per ``early_refresh``), each reading once a second.

    Returns the computations' start times grouped in bursts (starts less than 10 s apart)
    and the number of misses. ``backend`` (default: a MemoryCache on the same clock) is
    the shared store; with a real Redis, entries expire by the envelope's expiry on the
    manual clock (Redis's own TTL, in real seconds, is far away).
    """
    clock = clock or ManualClock()
    registry = CollectorRegistry()
    shared = MetricsLayer(backend or MemoryCache(clock=clock), registry=registry)
    starts: list[float] = []

    def instance(refresh: EarlyRefresh | None) -> Any:
        @cached(shared, key="report", ttl=60, clock=clock, early_refresh=refresh)
        async def report() -> str:
            starts.append(clock())
            clock.advance(2)  # the computation takes 2 s
            return "report"

        return report

    reports = [instance(refresh) for refresh in early_refresh]
    for _ in range(seconds):
        await asyncio.gather(*(report() for report in reports))
        for report in reports:
            await report.drain()
        clock.advance(1)
    bursts: list[list[float]] = []
    for start in starts:
        if bursts and start - bursts[-1][-1] < 10:
            bursts[-1].append(start)
        else:
            bursts.append([start])
    misses = registry.get_sample_value("resilient_cache_gets_total", GETS | {"result": "miss"})
    assert misses is not None
    return bursts, misses


GETS = {"cache": "default"}


async def test_early_refresh_spreads_recomputations_ahead_of_expiry() -> None:
    # without it, every expiry is a miss in every process at once: a burst of 5
    plain, plain_misses = await simulate(400, [None] * 5)
    assert len(plain) >= 6
    assert all(len(burst) == 5 for burst in plain)
    assert plain_misses == 5 * len(plain)

    seeded = [EarlyRefresh(random=random.Random(seed).random) for seed in range(5)]
    early, early_misses = await simulate(400, seeded)
    assert early_misses == 5  # the cold start only: every later computation was early
    cold, *periods = early
    assert len(cold) == 5
    assert len(cold) == 5
    assert len(periods) >= len(plain) - 1
    assert all(len(burst) <= 2 for burst in periods)  # one, rarely two, per period
    assert all(b[0] - a[0] > 30 for a, b in itertools.pairwise(early))


async def test_early_refresh_spreads_recomputations_on_a_real_redis(
    redis_server: RedisServer,
) -> None:
    clock = ManualClock()
    seeded = [EarlyRefresh(random=random.Random(seed).random) for seed in range(5)]
    async with RedisAdapter.from_url(redis_server.url, namespace="xfetch") as redis:
        await redis.flush()
        early, early_misses = await simulate(300, seeded, backend=redis, clock=clock)
    cold, *periods = early
    assert early_misses == len(cold) <= 5  # misses in the cold start only, never at expiry
    assert len(periods) >= 3
    # at most a few early recomputations a period, never one per process (5) at expiry
    assert all(len(burst) <= 3 for burst in periods), periods


# -- serve-stale-on-error ----------------------------------------------------------------


def stale_user(
    scripted: ScriptedCache, clock: ManualClock, **options: Any
) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cached(scripted, key="user:{user_id}", ttl=60, clock=clock, **options)
    async def get_user(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id, "version": len(calls)}

    return get_user, calls


@pytest.mark.parametrize(
    "code", [ErrorCode.CIRCUIT_OPEN, ErrorCode.TIMEOUT, ErrorCode.CONNECTION, ErrorCode.BACKEND]
)
async def test_stale_values_are_served_while_the_cache_is_unavailable(
    scripted: ScriptedCache, clock: ManualClock, code: ErrorCode
) -> None:
    get_user, calls = stale_user(scripted, clock, serve_stale=ServeStale(max_staleness=30))
    v1 = await get_user(1)
    scripted.fail_always(code)
    clock.advance(30)
    assert await get_user(1) == v1  # 30 s old: still served, the function is not called
    assert calls == [1]
    clock.advance(0.5)
    v2 = await get_user(1)  # too old: computed, and returned though the cache is down
    assert v2 == {"id": 1, "version": 2}
    clock.advance(29)
    assert await get_user(1) == v2  # the computed value is the new last known one
    assert calls == [1, 1]


async def test_a_hit_renews_the_stale_copy(scripted: ScriptedCache, clock: ManualClock) -> None:
    get_user, calls = stale_user(scripted, clock, serve_stale=ServeStale(max_staleness=30))
    v1 = await get_user(1)
    clock.advance(50)
    assert await get_user(1) == v1  # a hit at 50 s: the value was valid then
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    clock.advance(30)
    assert await get_user(1) == v1
    assert calls == [1]


async def test_a_request_error_is_not_an_outage(
    scripted: ScriptedCache, clock: ManualClock
) -> None:
    get_user, calls = stale_user(scripted, clock, serve_stale=ServeStale(max_staleness=30))
    await get_user(1)
    scripted.fail(ErrorCode.VALIDATION, operations=["get"])
    assert await get_user(1) == {"id": 1, "version": 2}  # a caller error: computed
    assert calls == [1, 1]


async def test_without_serve_stale_an_outage_calls_the_function(
    scripted: ScriptedCache, clock: ManualClock
) -> None:
    get_user, calls = stale_user(scripted, clock)
    await get_user(1)
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    assert await get_user(1) == {"id": 1, "version": 2}
    assert calls == [1, 1]


async def test_the_stale_copy_is_bounded(scripted: ScriptedCache, clock: ManualClock) -> None:
    get_user, calls = stale_user(
        scripted, clock, serve_stale=ServeStale(max_staleness=30, max_entries=2)
    )
    for user_id in (1, 2, 3):
        await get_user(user_id)
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    assert await get_user(3) == {"id": 3, "version": 3}
    assert await get_user(2) == {"id": 2, "version": 2}
    assert await get_user(1) == {"id": 1, "version": 4}  # evicted: computed
    assert calls == [1, 2, 3, 1]


async def test_the_stale_copy_is_bounded_in_bytes(
    scripted: ScriptedCache, clock: ManualClock
) -> None:
    calls: list[int] = []

    @cached(scripted, key="doc:{doc_id}", ttl=60, clock=clock,
            serve_stale=ServeStale(max_staleness=30, max_bytes=10_000))  # fmt: skip
    async def get_doc(doc_id: int) -> str:
        calls.append(doc_id)
        return f"{doc_id}" * 1000  # about 1-2 KB in memory each

    for doc_id in range(1, 11):
        await get_doc(doc_id)
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    assert await get_doc(10) == "10" * 1000  # the most recent ones are kept...
    assert calls == list(range(1, 11))
    await get_doc(1)  # ...the oldest were dropped to stay under max_bytes
    assert calls == [*range(1, 11), 1]


async def test_a_value_over_max_value_bytes_is_not_remembered_nor_its_older_one(
    scripted: ScriptedCache, clock: ManualClock
) -> None:
    sizes = [10, 5000]
    calls: list[int] = []

    @cached(scripted, key="doc:{doc_id}", ttl=60, clock=clock,
            serve_stale=ServeStale(max_staleness=30, max_value_bytes=1000))  # fmt: skip
    async def get_doc(doc_id: int) -> str:
        calls.append(doc_id)
        return "x" * sizes[len(calls) - 1]

    assert len(await get_doc(1)) == 10  # small: remembered
    await get_doc.invalidate(1)
    assert len(await get_doc(1)) == 5000  # too large: not remembered, and the older...
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    sizes.append(1)
    assert await get_doc(1) == "x"  # ...is not served in its place: computed
    assert calls == [1, 1, 1]


async def test_a_value_the_cache_refuses_is_not_remembered(clock: ManualClock) -> None:
    scripted = ScriptedCache(MemoryCache(clock=clock, limits=Limits(max_value_bytes=100)))
    calls: list[int] = []

    @cached(scripted, key="doc:{doc_id}", ttl=60, clock=clock,
            serve_stale=ServeStale(max_staleness=30))  # fmt: skip
    async def get_doc(doc_id: int) -> str:
        calls.append(doc_id)
        return "x" * 500  # the cache refuses it: VALIDATION

    await get_doc(1)
    assert await scripted.exists("doc:1") == Success(False)
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    await get_doc(1)  # not served from the stale copy: a value the cache would not hold
    assert calls == [1, 1]


def test_every_public_submodule_is_reachable_under_its_own_name() -> None:
    for info in pkgutil.iter_modules(patterns.__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"resilient_cache.patterns.{info.name}")
            assert getattr(patterns, info.name) is module, info.name  # not shadowed
    assert importlib.util.find_spec("resilient_cache.patterns.cached") is None
    assert patterns.cached is cached  # the decorator keeps its public import paths
    assert resilient_cache.cached is cached


async def test_an_invalidated_value_is_never_served_stale(
    scripted: ScriptedCache, clock: ManualClock
) -> None:
    get_user, calls = stale_user(scripted, clock, serve_stale=ServeStale(max_staleness=30))
    await get_user(1)
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    assert not (await get_user.invalidate(1)).is_success()  # the delete fails too...
    assert await get_user(1) == {"id": 1, "version": 2}  # ...yet the old value is gone
    assert calls == [1, 1]


async def test_a_cached_not_found_is_served_stale(
    scripted: ScriptedCache, clock: ManualClock
) -> None:
    calls = 0

    @cached(
        scripted, key="user:{user_id}", ttl=60, negative_ttl=10, clock=clock,
        serve_stale=ServeStale(max_staleness=30),
    )  # fmt: skip
    async def find_user(user_id: int) -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert await find_user(1) is None
    scripted.fail_always(ErrorCode.CIRCUIT_OPEN)
    assert await find_user(1) is None
    assert calls == 1

"""CompressionLayer: large values stored compressed, over MemoryCache and real Redis."""

from __future__ import annotations

import base64
import json
import os
import sys
import zlib
from typing import Any

import pytest
import zstandard

from resilient_cache import (
    CacheError,
    CacheProtocol,
    ConfigurationError,
    EncryptionLayer,
    ErrorCode,
    Failure,
    Limits,
    MemoryCache,
    Result,
    Success,
    get_or_set,
)
from resilient_cache.layers.compression import Algorithm, CompressionLayer
from tests.conftest import CacheFactory
from tests.fresh_python import python_output

ALGORITHMS: list[Algorithm] = ["zstd", "zlib"]
THRESHOLD = 64


def compressed(
    inner: CacheProtocol, algorithm: Algorithm = "zstd", **options: Any
) -> CompressionLayer:
    threshold = options.pop("threshold", THRESHOLD)
    return CompressionLayer(inner, threshold=threshold, algorithm=algorithm, **options)


def payload(size: int) -> str:
    """Typical JSON text of exactly ``size`` UTF-8 bytes: it compresses well."""
    rows = [{"id": i, "name": f"user-{i}", "active": i % 3 == 0, "tags": ["a", "b"]} for i in
            range(size // 40 + 1)]  # fmt: skip
    return json.dumps(rows)[:size]


def noise(size: int) -> str:
    """Text of exactly ``size`` bytes that does not compress below its base64 form."""
    return base64.b64encode(os.urandom(size))[:size].decode()


def serialization(result: Result[Any, CacheError], reason: str) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    error = result.error
    assert error.code is ErrorCode.SERIALIZATION, error
    assert error.details["reason"] == reason, error
    assert not error.retryable
    return error


async def stored(inner: CacheProtocol, key: str) -> str:
    value = (await inner.get(key)).unwrap()
    assert value is not None
    return value


# -- round trips, over every backend ---------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_round_trips_at_the_threshold_boundary(
    make_cache: CacheFactory, algorithm: Algorithm
) -> None:
    inner = await make_cache()
    cache = compressed(inner, algorithm)
    for size in (THRESHOLD - 1, THRESHOLD):
        value = "a" * size
        assert await cache.set(f"k{size}", value) == Success(None)
        assert await stored(inner, f"k{size}") == value  # not above the threshold: plain
        assert await cache.get(f"k{size}") == Success(value)
    value = "a" * (THRESHOLD + 1)
    assert await cache.set("over", value) == Success(None)
    assert (await stored(inner, "over")).startswith(f"z1:{algorithm}:")
    assert await cache.get("over") == Success(value)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, 65, 1000, 10_000, 100_000, 1024 * 1024])
async def test_round_trips_across_sizes(
    make_cache: CacheFactory, algorithm: Algorithm, size: int
) -> None:
    cache = compressed(await make_cache(), algorithm)
    unicode = ("é☃" * size).encode()[:size].decode(errors="ignore")  # at most size bytes
    for value in (payload(size), noise(size), unicode):
        assert await cache.set("k", value, ttl=60) == Success(None)
        assert await cache.get("k") == Success(value)
    assert await cache.ttl("k") == Success(60)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_json_and_batches_round_trip(make_cache: CacheFactory, algorithm: Algorithm) -> None:
    inner = await make_cache()
    cache = compressed(inner, algorithm)
    document = json.loads(payload(5000).rsplit("}", 1)[0] + "}]")
    assert await cache.set_json("doc", document) == Success(None)
    assert (await stored(inner, "doc")).startswith(f"z1:{algorithm}:")
    assert await cache.get_json("doc") == Success(document)
    values = {"big": payload(3000), "small": "s", "marked": "z1:zstd:x", "empty": ""}
    assert await cache.set_many(values) == Success(None)
    assert (await stored(inner, "big")).startswith(f"z1:{algorithm}:")
    assert await cache.get_many([*values, "missing"]) == Success({**values, "missing": None})


# -- old data, other writers ------------------------------------------------------------


async def test_values_written_before_compression_was_enabled_stay_readable(
    make_cache: CacheFactory,
) -> None:
    inner = await make_cache()
    old = {"big": payload(10_000), "small": "v", "json": '{"a": [1, 2]}', "n": "41"}
    assert await inner.set_many(old) == Success(None)
    cache = compressed(inner)
    for key, value in old.items():
        assert await cache.get(key) == Success(value)
    assert await cache.get_json("json") == Success({"a": [1, 2]})
    assert await cache.get_many(list(old)) == Success(old)
    assert await cache.increment("n") == Success(42)  # counters pass through, stay plain


async def test_each_algorithm_reads_the_other() -> None:
    inner = MemoryCache()
    value = payload(5000)
    await compressed(inner, "zstd").set("z", value)
    await compressed(inner, "zlib").set("l", value)
    for reader in ALGORITHMS:
        cache = compressed(inner, reader)
        assert await cache.get_many(["z", "l"]) == Success({"z": value, "l": value})


async def test_disabling_compression_leaves_envelopes_a_plain_reader_cannot_use() -> None:
    # documented: turn compression off only after the longest TTL, or keep the layer
    inner = MemoryCache()
    await compressed(inner).set("k", payload(5000))
    assert (await stored(inner, "k")).startswith("z1:zstd:")


# -- the escape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["z1:", "z1:zstd:KLUv/Q==", "z1:raw:", "z1:raw:z1:raw:x", "z1:lzma:abc"]
)
async def test_plain_values_that_look_like_envelopes_are_escaped(
    make_cache: CacheFactory, value: str
) -> None:
    inner = await make_cache()
    cache = compressed(inner)
    assert await cache.set("k", value) == Success(None)
    assert await stored(inner, "k") == "z1:raw:" + value
    assert await cache.get("k") == Success(value)


async def test_a_large_marked_value_is_escaped_or_compressed_and_reads_back() -> None:
    inner = MemoryCache()
    cache = compressed(inner)
    random_tail = "z1:zlib:" + noise(500)
    await cache.set("r", random_tail)
    assert await stored(inner, "r") == "z1:raw:" + random_tail
    repetitive = "z1:zlib:" + "x" * 500
    await cache.set("c", repetitive)
    assert (await stored(inner, "c")).startswith("z1:zstd:")
    assert await cache.get_many(["r", "c"]) == Success({"r": random_tail, "c": repetitive})


async def test_values_not_starting_with_the_marker_are_never_escaped() -> None:
    inner = MemoryCache()
    cache = compressed(inner)
    for value in ("Z1:x", " z1:x", "z1", "z2:zstd:x", "x z1:zstd:y"):
        await cache.set("k", value)
        assert await stored(inner, "k") == value


# -- stored sizes ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_compressible_values_are_stored_much_smaller(algorithm: Algorithm) -> None:
    inner = MemoryCache()
    value = payload(10_000)
    await compressed(inner, algorithm).set("k", value)
    assert len(await stored(inner, "k")) < len(value) / 3


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [65, 1000, 100_000])
async def test_incompressible_values_are_stored_plain_never_larger(
    algorithm: Algorithm, size: int
) -> None:
    inner = MemoryCache()
    value = noise(size)
    await compressed(inner, algorithm).set("k", value)
    assert await stored(inner, "k") == value
    escaped = "z1:" + noise(size)
    await compressed(inner, algorithm).set("k", escaped)
    assert len((await stored(inner, "k")).encode()) == len(escaped.encode()) + len("z1:raw:")


async def test_size_limits_apply_to_the_stored_form() -> None:
    inner = MemoryCache(limits=Limits(max_value_bytes=2000))
    cache = compressed(inner)
    assert await cache.set("fits", payload(20_000)) == Success(None)  # compressed: < 2000
    assert await cache.get("fits") == Success(payload(20_000))
    refused = await cache.set_json("too-big", noise(3000))
    assert isinstance(refused, Failure)
    assert refused.error.code is ErrorCode.VALIDATION
    assert refused.error.operation == "set_json"
    assert "max_value_bytes=2000" in refused.error.message


async def test_values_above_max_value_bytes_are_refused_before_compression() -> None:
    cache = compressed(MemoryCache(), max_value_bytes=10_000)
    result = await cache.set("k", "a" * 10_001)  # would compress to a few bytes
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.VALIDATION
    assert result.error.details == {"size": 10_001, "limit": 10_000}
    batch = await cache.set_many({"a": "1", "b": "a" * 10_001})
    assert isinstance(batch, Failure)
    assert (batch.error.code, batch.error.operation, batch.error.key) == (
        ErrorCode.VALIDATION,
        "set_many",
        "b",
    )
    assert await cache.exists("a") == Success(False)
    assert await cache.set("k", "a" * 10_000) == Success(None)


# -- corrupt values: SERIALIZATION, never garbage ----------------------------------------


def zstd_frame(raw: bytes, **options: Any) -> str:
    return base64.b64encode(zstandard.ZstdCompressor(**options).compress(raw)).decode()


GOOD_ZSTD = zstd_frame(b"hello " * 50, write_checksum=True)
GOOD_ZLIB = base64.b64encode(zlib.compress(b"hello " * 50)).decode()


def flip(body: str, at: int) -> str:
    raw = bytearray(base64.b64decode(body))
    raw[at] ^= 0x40
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("stored_form", "reason"),
    [
        ("z1:zstd", "malformed"),
        ("z1:lzma:" + GOOD_ZLIB, "malformed"),
        ("z1:zstd:" + GOOD_ZSTD + "!", "base64"),
        ("z1:zlib:" + GOOD_ZLIB[:-2], "base64"),
        ("z1:zstd:" + base64.b64encode(base64.b64decode(GOOD_ZSTD)[:-6]).decode(), "corrupt"),
        ("z1:zstd:" + flip(GOOD_ZSTD, -6), "corrupt"),  # the frame checksum catches it
        ("z1:zstd:" + base64.b64encode(b"not a frame").decode(), "corrupt"),
        ("z1:zlib:" + base64.b64encode(base64.b64decode(GOOD_ZLIB)[:-3]).decode(), "corrupt"),
        ("z1:zlib:" + flip(GOOD_ZLIB, 8), "corrupt"),
        ("z1:zlib:" + base64.b64encode(zlib.compress(b"x") + b"extra").decode(), "corrupt"),
        ("z1:zlib:" + base64.b64encode(zlib.compress(b"\xff\xfe")).decode(), "utf8"),
        ("z1:zstd:" + zstd_frame(b"\xc3("), "utf8"),
        ("z1:zstd:" + zstd_frame(b"x" * 100, write_content_size=False), "corrupt"),
    ],
    ids=lambda v: v if len(v) < 20 else v[:20],
)
async def test_a_corrupt_envelope_is_a_serialization_failure(
    make_cache: CacheFactory, stored_form: str, reason: str
) -> None:
    inner = await make_cache()
    assert await inner.set_many({"bad": stored_form, "good": "v"}) == Success(None)
    cache = compressed(inner)
    error = serialization(await cache.get("bad"), reason)
    assert (error.operation, error.key) == ("get", "bad")
    assert serialization(await cache.get_json("bad"), reason).operation == "get_json"
    batch = serialization(await cache.get_many(["good", "bad"]), reason)
    assert (batch.key, batch.details["rejected"], batch.details["keys"]) == ("bad", 1, 2)
    assert await stored(inner, "bad") == stored_form  # left intact


async def test_a_corrupt_value_is_a_miss_for_cache_aside() -> None:
    inner = MemoryCache()
    await inner.set("k", "z1:zstd:AAAA")
    cache = compressed(inner)

    async def load() -> str:
        return "fresh"

    assert await get_or_set(cache, "k", load) == "fresh"
    assert await cache.get("k") == Success("fresh")


# -- the decompression-bomb guard ------------------------------------------------------

BOMB = b"\0" * (8 * 1024 * 1024)


@pytest.mark.parametrize(
    "body",
    [
        "z1:zlib:" + base64.b64encode(zlib.compress(BOMB, 9)).decode(),
        "z1:zstd:" + zstd_frame(BOMB),  # its header says 8 MiB: refused before decompressing
    ],
    ids=["zlib", "zstd"],
)
async def test_a_decompression_bomb_is_refused(body: str) -> None:
    inner = MemoryCache()
    await inner.set("bomb", body)
    assert len(body) < 12_000  # 8 MiB in under 12 KB
    error = serialization(await compressed(inner).get("bomb"), "too_large")
    assert "max_value_bytes=1048576" in error.message
    roomy = compressed(inner, max_value_bytes=len(BOMB))
    assert await roomy.get("bomb") == Success(BOMB.decode())


# -- with encryption -------------------------------------------------------------------


async def test_compression_outside_encryption_compresses_then_encrypts() -> None:
    inner = MemoryCache()
    encrypted = EncryptionLayer(inner, {"k1": bytes(32)}, current="k1")
    cache = compressed(encrypted)
    value = payload(10_000)
    assert await cache.set("k", value) == Success(None)
    sealed = await stored(inner, "k")
    assert sealed.startswith("enc:v1:k1:")
    assert len(sealed) < len(value) / 2  # the ciphertext is of the compressed form
    assert (await encrypted.get("k")).unwrap().startswith("z1:zstd:")  # type: ignore[union-attr]
    assert await cache.get("k") == Success(value)
    assert cache.layers == ("compression", "encryption", "MemoryCache")


# -- configuration ---------------------------------------------------------------------


def test_auto_picks_zstd_when_installed_and_defaults_are_documented() -> None:
    cache = CompressionLayer(MemoryCache())
    assert (cache.algorithm, cache.threshold) == ("zstd", 1024)
    assert "level=3" in repr(cache)
    assert "level=6" in repr(CompressionLayer(MemoryCache(), algorithm="zlib"))


async def test_without_zstandard_auto_is_zlib_and_zstd_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inner = MemoryCache()
    await compressed(inner, "zstd").set("z", payload(5000))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # any import of it now fails
    with pytest.raises(ConfigurationError) as caught:
        CompressionLayer(inner, algorithm="zstd")
    assert caught.value.setting == "compression.algorithm"
    assert "pip install 'resilient-cache[compression]'" in str(caught.value)
    cache = compressed(inner, "auto")
    assert cache.algorithm == "zlib"
    await cache.set("l", payload(5000))
    assert await cache.get("l") == Success(payload(5000))
    error = serialization(await cache.get("z"), "unavailable")
    assert "resilient-cache[compression]" in error.message


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"algorithm": "lz4"}, "compression.algorithm"),
        ({"algorithm": "zlib", "level": 0}, "compression.level"),
        ({"algorithm": "zlib", "level": 10}, "compression.level"),
        ({"algorithm": "zstd", "level": 23}, "compression.level"),
        ({"level": True}, "compression.level"),
        ({"threshold": -1}, "compression.threshold"),
        ({"threshold": 1.5}, "compression.threshold"),
        ({"max_value_bytes": 0}, "compression.max_value_bytes"),
    ],
)
def test_bad_settings_are_configuration_errors(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        CompressionLayer(MemoryCache(), **options)
    assert caught.value.setting == setting


async def test_other_operations_pass_through() -> None:
    inner = MemoryCache()
    cache = compressed(inner)
    await cache.set("k", payload(1000), ttl=30)
    assert await cache.exists("k") == Success(True)
    assert await cache.ttl("k") == Success(30)
    assert await cache.expire("k", 60) == Success(True)
    assert await cache.delete_pattern("k*") == Success(1)
    assert await cache.increment("n", 5) == Success(5)
    assert await cache.decrement("n") == Success(4)
    assert await cache.ping() == Success(True)
    assert await cache.delete("n") == Success(True)
    assert await cache.flush() == Success(None)


def test_the_library_imports_and_compresses_without_zstandard() -> None:
    script = (
        "import sys\n"
        "sys.modules['zstandard'] = None\n"  # any import of it now fails
        "from resilient_cache.layers.compression import CompressionLayer\n"
        "from resilient_cache import MemoryCache\n"
        "print(CompressionLayer(MemoryCache()).algorithm)\n"
    )
    assert python_output(script) == "zlib"


async def test_the_batch_limits_are_the_inner_caches_not_the_layers() -> None:
    """The limit applies to what is sent: the layer itself refuses no batch size."""
    from resilient_cache import Limits  # noqa: PLC0415

    inner = MemoryCache(limits=Limits(max_batch_keys=20_000, max_batch_bytes=64 * 1024 * 1024))
    layer = CompressionLayer(inner, threshold=0, algorithm="zlib")
    mapping = {f"k{i}": "x" * 2000 for i in range(12_000)}  # 24 MB of plain text
    assert await layer.set_many(mapping) == Success(None)
    assert (await layer.get_many(list(mapping))).is_success()

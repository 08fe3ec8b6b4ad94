"""EncryptionLayer: AES-256-GCM values bound to their key, over MemoryCache and real Redis."""

from __future__ import annotations

import base64
import math
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilient_cache import (
    CacheError,
    CacheProtocol,
    ConfigurationError,
    EncryptionLayer,
    ErrorCode,
    Failure,
    Layer,
    Limits,
    MemoryCache,
    RedisAdapter,
    Result,
    Success,
    generate_encryption_key,
    get_or_set,
)
from resilient_cache.layers._envelope import NONCE_BYTES, TAG_BYTES
from resilient_cache.testing import ManualClock, ScriptedCache
from tests.conftest import CacheFactory
from tests.fresh_python import python_output
from tests.servers import RedisServer

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
KEY_2_TEXT = base64.urlsafe_b64encode(KEY_2).decode()
SECRET = "the secret value ☃"


def encrypted(
    inner: CacheProtocol,
    keys: dict[str, bytes | str] | None = None,
    current: str = "k1",
    **options: Any,
) -> EncryptionLayer:
    return EncryptionLayer(inner, keys or {"k1": KEY_1}, current=current, **options)


def error_of(result: Result[Any, CacheError], code: ErrorCode) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    assert result.error.code is code, result.error
    return result.error


def rejected(result: Result[Any, CacheError], reason: str | set[str]) -> CacheError:
    """A SERIALIZATION failure for ``reason``, whose message leaks no value and no key."""
    error = error_of(result, ErrorCode.SERIALIZATION)
    assert error.details["reason"] in ({reason} if isinstance(reason, str) else reason), error
    for secret in ("secret", KEY_1.hex(), repr(KEY_1), KEY_2_TEXT):
        assert secret not in str(error)
        assert secret not in repr(error.details)
    assert not error.retryable
    return error


async def raw(inner: CacheProtocol, key: str) -> str:
    stored = (await inner.get(key)).unwrap()
    assert stored is not None
    return stored


# -- round trips, over every backend -----------------------------------------------


async def test_values_round_trip_and_are_stored_encrypted(make_cache: CacheFactory) -> None:
    inner = await make_cache(namespace="tenant")
    cache = encrypted(inner, namespace="tenant")
    assert await cache.set("s", SECRET, ttl=60) == Success(None)
    assert await cache.get("s") == Success(SECRET)
    assert await cache.set("empty", "") == Success(None)
    assert await cache.get("empty") == Success("")
    document = {"card": "4111 1111", "n": [1, 2.5, None, True]}
    assert await cache.set_json("j", document) == Success(None)
    assert await cache.get_json("j") == Success(document)
    assert await cache.set_many({"a": SECRET, "b": "bee"}, ttl=60) == Success(None)
    assert await cache.get_many(["a", "missing", "b"]) == Success(
        {"a": SECRET, "missing": None, "b": "bee"}
    )
    for key in ("s", "empty", "j", "a", "b"):
        stored = await raw(inner, key)
        assert stored.startswith("enc:v1:k1:"), stored
        assert "secret" not in stored
        assert "card" not in stored
    await cache.set("s2", SECRET)
    assert await raw(inner, "s") != await raw(inner, "s2")  # a fresh nonce per value
    assert await cache.ttl("s") in (Success(60), Success(59))  # passed through


async def test_a_missing_key_is_success_none(make_cache: CacheFactory) -> None:
    cache = encrypted(await make_cache())
    assert await cache.get("nope") == Success(None)
    assert await cache.get_json("nope") == Success(None)
    assert await cache.get_many(["nope"]) == Success({"nope": None})


async def test_redis_holds_only_the_envelope(
    redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    adapter = RedisAdapter.from_url(redis_server.url, namespace="app")
    cache = encrypted(adapter, namespace="app")
    try:
        await cache.set("user:1", SECRET)
        stored: Any = await raw_redis.get("app:user:1")  # bytes: no decode_responses
        assert isinstance(stored, bytes)
        assert stored.startswith(b"enc:v1:k1:")
        assert SECRET.encode() not in stored
        # copied by another client to another key: it does not open there
        await raw_redis.set("app:user:2", stored)
        rejected(await cache.get("user:2"), "authentication")
        assert await cache.get("user:1") == Success(SECRET)
    finally:
        await adapter.aclose()


# -- ciphertexts are bound to their key --------------------------------------------


async def test_a_value_copied_to_another_key_does_not_open(make_cache: CacheFactory) -> None:
    inner = await make_cache()
    cache = encrypted(inner)
    await cache.set("a", SECRET)
    await cache.set_json("ja", {"secret": 1})
    await inner.set("b", await raw(inner, "a"))
    await inner.set("jb", await raw(inner, "ja"))
    error = rejected(await cache.get("b"), "authentication")
    assert error.key == "b"
    assert error.operation == "get"
    rejected(await cache.get_json("jb"), "authentication")
    assert await cache.get("a") == Success(SECRET)


async def test_a_value_copied_to_another_namespace_does_not_open(
    make_cache: CacheFactory,
) -> None:
    inner_a = await make_cache(namespace="tenant-a")
    inner_b = await make_cache(namespace="tenant-b")
    tenant_a = encrypted(inner_a, namespace="tenant-a")
    tenant_b = encrypted(inner_b, namespace="tenant-b")  # the same keys: only the AAD differs
    await tenant_a.set("k", SECRET)
    await inner_b.set("k", await raw(inner_a, "k"))
    rejected(await tenant_b.get("k"), "authentication")
    assert await tenant_a.get("k") == Success(SECRET)


def _flip(text: str, index: int) -> str:
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]


def _tamper(envelope: str, how: str) -> str:
    header, body = envelope[: len("enc:v1:k1:")], envelope[len("enc:v1:k1:") :]
    last = len(body.rstrip("=")) - 1
    return {
        "flip-first": header + _flip(body, 0),
        "flip-middle": header + _flip(body, len(body) // 2),
        "flip-last": header + _flip(body, last),
        "truncate-4": envelope[:-4],
        "truncate-to-short": header + base64.urlsafe_b64encode(b"x" * 20).decode(),
        "header-only": header,
        "bad-base64": header + "!" + body[1:],
        "standard-base64": header + "+" + body[1:],
        "version": envelope.replace("enc:v1:", "enc:v2:"),
        "unknown-key-id": envelope.replace(":k1:", ":k9:"),
        "bad-key-id": envelope.replace(":k1:", ":k 1:"),
        "missing-part": "enc:v1:k1",
    }[how]


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("flip-first", "authentication"),
        ("flip-middle", "authentication"),
        ("flip-last", {"authentication", "base64"}),  # a non-canonical last char: base64
        ("truncate-4", {"authentication", "base64"}),
        ("truncate-to-short", "truncated"),
        ("header-only", "truncated"),
        ("bad-base64", "base64"),
        ("standard-base64", "base64"),
        ("version", "version"),
        ("unknown-key-id", "unknown_key_id"),
        ("bad-key-id", "malformed"),
        ("missing-part", "malformed"),
    ],
)
async def test_a_tampered_value_is_rejected(how: str, reason: str | set[str]) -> None:
    inner = MemoryCache()
    cache = encrypted(inner, accept_plaintext=True)  # "enc:" values must open even so
    await cache.set("k", SECRET)
    await inner.set("k", _tamper(await raw(inner, "k"), how))
    rejected(await cache.get("k"), reason)
    rejected(await cache.get_json("k"), reason)
    rejected(await cache.get_many(["k"]), reason)


async def test_cache_aside_treats_a_rejected_value_as_a_miss() -> None:
    inner = MemoryCache()
    cache = encrypted(inner)
    await inner.set("k", "planted plaintext")
    loads: list[str] = []

    async def load() -> str:
        loads.append("k")
        return SECRET

    assert await get_or_set(cache, "k", load, ttl=60) == SECRET
    assert loads == ["k"]
    assert (await raw(inner, "k")).startswith("enc:v1:k1:")  # rewritten, encrypted
    assert await get_or_set(cache, "k", load, ttl=60) == SECRET
    assert loads == ["k"]


# -- plaintext migration -----------------------------------------------------------


async def test_plaintext_is_rejected_unless_accept_plaintext() -> None:
    inner = MemoryCache()
    await inner.set("legacy", "old plaintext")
    await inner.set("legacy-json", '{"a": 1}')
    strict = encrypted(inner)
    error = rejected(await strict.get("legacy"), "plaintext")
    assert "accept_plaintext" in error.message
    rejected(await strict.get_json("legacy-json"), "plaintext")
    migrating = encrypted(inner, accept_plaintext=True)
    assert await migrating.get("legacy") == Success("old plaintext")
    assert await migrating.get_json("legacy-json") == Success({"a": 1})
    assert await migrating.get_many(["legacy"]) == Success({"legacy": "old plaintext"})
    await migrating.set("legacy", "new")  # writes are always encrypted
    assert await strict.get("legacy") == Success("new")


async def test_get_many_with_one_bad_value_fails_the_whole_batch() -> None:
    inner = MemoryCache()
    cache = encrypted(inner)
    await cache.set_many({"a": "1", "c": "3"})
    await inner.set("b", "plaintext")
    error = rejected(await cache.get_many(["a", "b", "c", "missing"]), "plaintext")
    assert error.operation == "get_many"
    assert error.key == "b"
    assert error.details["rejected"] == 1
    assert error.details["keys"] == 4
    assert error.message.startswith("1 of 4 stored values did not open")
    assert await cache.get_many(["a", "c"]) == Success({"a": "1", "c": "3"})


# -- counters --------------------------------------------------------------------


async def test_counters_are_refused_by_default() -> None:
    inner = MemoryCache()
    cache = encrypted(inner)
    for result in (await cache.increment("n"), await cache.decrement("n", 2)):
        error = error_of(result, ErrorCode.VALIDATION)
        assert "allow_plaintext_counters" in error.message
        assert error.key == "n"
        assert not error.maybe_applied
    assert await inner.exists("n") == Success(False)


async def test_counters_pass_through_in_plaintext_when_allowed() -> None:
    inner = MemoryCache()
    cache = encrypted(inner, allow_plaintext_counters=True)
    assert await cache.increment("n", 5) == Success(5)
    assert await cache.decrement("n") == Success(4)
    assert await inner.get("n") == Success("4")  # plaintext, as documented
    assert await cache.increment("n", 0) == Success(4)  # how to read a counter
    rejected(await cache.get("n"), "plaintext")
    await cache.set("v", "1")
    error_of(await cache.increment("v"), ErrorCode.WRONG_TYPE)  # an envelope is no integer


# -- rotation --------------------------------------------------------------------


async def test_rotation_old_keys_decrypt_and_the_current_key_encrypts(
    make_cache: CacheFactory,
) -> None:
    inner = await make_cache()
    before = encrypted(inner, {"k1": KEY_1}, current="k1")
    await before.set("old", SECRET)
    after = encrypted(inner, {"k1": KEY_1, "k2": KEY_2_TEXT}, current="k2")
    assert await after.get("old") == Success(SECRET)
    await after.set("new", "fresh")
    assert (await raw(inner, "new")).startswith("enc:v1:k2:")
    assert await before.get("new") == Failure(
        CacheError.of(
            ErrorCode.SERIALIZATION,
            "stored value is encrypted with key id 'k2', which is not configured",
            operation="get",
            key="new",
            details={"reason": "unknown_key_id", "key_id": "k2"},
        )
    )
    only_new = encrypted(inner, {"k2": KEY_2}, current="k2")
    rejected(await only_new.get("old"), "unknown_key_id")


async def test_reencrypt_rewrites_old_values_and_keeps_their_ttl(
    make_cache: CacheFactory,
) -> None:
    inner = await make_cache()
    old = encrypted(inner, {"k1": KEY_1}, current="k1")
    await old.set("a", "A", ttl=100)
    await old.set_json("b", {"b": 1})  # no TTL
    rotated = encrypted(inner, {"k1": KEY_1, "k2": KEY_2}, current="k2")
    await rotated.set("c", "C", ttl=50)
    before_c = await raw(inner, "c")
    assert await rotated.reencrypt(["a", "b", "c", "missing"]) == Success(2)
    for key in ("a", "b", "c"):
        assert (await raw(inner, key)).startswith("enc:v1:k2:")
    assert await raw(inner, "c") == before_c  # already current: untouched
    assert await rotated.get("a") == Success("A")
    assert await rotated.get_json("b") == Success({"b": 1})
    assert await inner.ttl("a") in (Success(100), Success(99))
    assert await inner.ttl("b") == Success(None)
    assert await rotated.reencrypt(["a", "b", "c"]) == Success(0)
    # the old key can go now
    assert await encrypted(inner, {"k2": KEY_2}, current="k2").get("a") == Success("A")


async def test_reencrypt_preserves_the_remaining_ttl(clock: ManualClock) -> None:
    inner = MemoryCache(clock=clock)
    await encrypted(inner).set("a", "A", ttl=100)
    clock.advance(30)
    rotated = encrypted(inner, {"k1": KEY_1, "k2": KEY_2}, current="k2")
    assert await rotated.reencrypt(["a"]) == Success(1)
    assert await inner.ttl("a") == Success(70)


async def test_reencrypt_leaves_plaintext_alone_unless_asked() -> None:
    inner = MemoryCache()
    await inner.set("legacy", "old", ttl=100)
    cache = encrypted(inner)
    assert await cache.reencrypt(["legacy"]) == Success(0)
    assert await inner.get("legacy") == Success("old")
    assert await cache.reencrypt(["legacy"], include_plaintext=True) == Success(1)
    assert await cache.get("legacy") == Success("old")
    assert await inner.ttl("legacy") in (Success(100), Success(99))


async def test_reencrypt_stops_at_a_value_that_does_not_open() -> None:
    inner = MemoryCache()
    await encrypted(inner).set_many({"a": "A", "c": "C"})
    await inner.set("b", "enc:v1:k1:garbage")
    rotated = encrypted(inner, {"k1": KEY_1, "k2": KEY_2}, current="k2")
    error = rejected(await rotated.reencrypt(["a", "b", "c"]), "base64")
    assert error.operation == "reencrypt"
    assert error.key == "b"
    assert error.details["rewritten"] == 1
    assert error.maybe_applied
    assert (await raw(inner, "c")).startswith("enc:v1:k1:")


class _WriteDuringTtl(Layer):
    """Writes a newer value while ``reencrypt`` reads the TTL: a concurrent writer."""

    def __init__(self, inner: CacheProtocol, writer: EncryptionLayer) -> None:
        super().__init__(inner)
        self.writer = writer

    async def _around(self, operation: str, key: str | None, call: Any) -> Any:
        if operation == "ttl" and key is not None:
            await self.writer.set(key, "newer")
        return await call()


async def test_reencrypt_skips_a_value_rewritten_meanwhile() -> None:
    memory = MemoryCache()
    await encrypted(memory).set("a", "older")
    writer = encrypted(memory, {"k1": KEY_1, "k2": KEY_2}, current="k2")
    rotated = encrypted(_WriteDuringTtl(memory, writer), {"k1": KEY_1, "k2": KEY_2}, current="k2")
    assert await rotated.reencrypt(["a"]) == Success(0)
    assert await writer.get("a") == Success("newer")


# -- limits, validation, errors ------------------------------------------------------


async def test_the_size_limit_applies_to_the_encrypted_value(make_cache: CacheFactory) -> None:
    inner = await make_cache(limits=Limits(max_value_bytes=64))
    value = "x" * 40
    assert await inner.set("plain", value) == Success(None)  # fits in plaintext
    cache = encrypted(inner)
    error = error_of(await cache.set("k", value), ErrorCode.VALIDATION)
    assert "max_value_bytes=64" in error.message
    assert error.operation == "set"
    assert error.details["size"] == 102  # 40 bytes sealed: 10 + 4 * ceil(68 / 3)
    assert "xxx" not in error.message
    error = error_of(await cache.set_json("k", value), ErrorCode.VALIDATION)
    assert error.operation == "set_json"
    error_of(await cache.set_many({"k": value}), ErrorCode.VALIDATION)
    assert await cache.exists("k") == Success(False)
    assert await cache.set("small", "x") == Success(None)  # 1 byte sealed: 50 bytes


async def test_bad_arguments_are_validation_failures_without_encrypting() -> None:
    cache = encrypted(MemoryCache())
    bad: Any = 42
    for result in (
        await cache.set("k", bad),
        await cache.set(bad, "v"),
        await cache.get(bad),
        await cache.get_many(bad),
        await cache.set_many(bad),
        await cache.set_many({"k": bad}),
        await cache.increment(bad),
        await cache.reencrypt([bad]),
    ):
        error_of(result, ErrorCode.VALIDATION)
    not_json: Any = {1, 2}
    error_of(await cache.set_json("k", not_json), ErrorCode.SERIALIZATION)


async def test_inner_failures_keep_the_operation_the_caller_called() -> None:
    scripted = ScriptedCache()
    cache = encrypted(scripted)
    scripted.fail(ErrorCode.CONNECTION, times=2)
    error = error_of(await cache.get_json("k"), ErrorCode.CONNECTION)
    assert error.operation == "get_json"
    assert error.retryable
    error = error_of(await cache.set_json("k", 1), ErrorCode.CONNECTION)
    assert error.operation == "set_json"


async def test_pass_through_operations_and_layers() -> None:
    inner = MemoryCache()
    cache = encrypted(inner)
    await cache.set_many({"user:1": "a", "user:2": "b"})
    assert await cache.exists("user:1") == Success(True)
    assert await cache.expire("user:1", 10) == Success(True)
    assert await cache.ttl("user:1") == Success(10)
    assert await cache.delete("user:1") == Success(True)
    assert await cache.delete_pattern("user:*") == Success(1)
    assert await cache.ping() == Success(True)
    assert await cache.flush() == Success(None)
    assert cache.layers == ("encryption", "MemoryCache")
    assert cache.find(EncryptionLayer) is cache


# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "current", "namespace", "setting"),
    [
        ({}, "k1", None, "encryption.keys"),
        ([("k1", KEY_1)], "k1", None, "encryption.keys"),
        ({"k:1": KEY_1}, "k:1", None, "encryption.keys"),
        ({"k 1": KEY_1}, "k 1", None, "encryption.keys"),
        ({"ké": KEY_1}, "ké", None, "encryption.keys"),
        ({"k" * 33: KEY_1}, "k" * 33, None, "encryption.keys"),
        ({"": KEY_1}, "", None, "encryption.keys"),
        ({KEY_2_TEXT: "k1"}, "k1", None, "encryption.keys"),  # swapped: never echoed
        ({"k1": KEY_1[:16]}, "k1", None, "encryption.keys['k1']"),
        ({"k1": KEY_1 + b"!"}, "k1", None, "encryption.keys['k1']"),
        ({"k1": KEY_2_TEXT[:-4]}, "k1", None, "encryption.keys['k1']"),
        ({"k1": KEY_2_TEXT + "A"}, "k1", None, "encryption.keys['k1']"),
        ({"k1": KEY_1.hex()}, "k1", None, "encryption.keys['k1']"),
        ({"k1": 12345}, "k1", None, "encryption.keys['k1']"),
        ({"k1": KEY_1}, "k2", None, "encryption.current"),
        ({"k1": KEY_1}, "k1", "", "encryption.namespace"),
    ],
)
def test_bad_configuration_names_the_setting(
    keys: Any, current: str, namespace: Any, setting: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        EncryptionLayer(MemoryCache(), keys, current=current, namespace=namespace)
    assert caught.value.setting == setting
    for secret in (KEY_1.hex(), repr(KEY_1), repr(KEY_1[:16]), KEY_2_TEXT, KEY_2_TEXT[:-4]):
        assert secret not in str(caught.value)


def test_repr_never_shows_key_material() -> None:
    cache = encrypted(MemoryCache(), {"k1": KEY_1, "k2": KEY_2_TEXT}, "k2", namespace="app")
    shown = repr(cache) + str(cache)
    assert "key_ids=['k1', 'k2']" in shown
    assert "current='k2'" in shown
    for secret in (KEY_1.hex(), repr(KEY_1), repr(KEY_2), KEY_2_TEXT, KEY_2.hex()):
        assert secret not in shown
    assert cache.current_key_id == "k2"
    assert cache.key_ids == ("k1", "k2")


async def test_generated_keys_are_accepted() -> None:
    key = generate_encryption_key()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert key != generate_encryption_key()
    cache = EncryptionLayer(MemoryCache(), {"main": key}, current="main")
    await cache.set("k", SECRET)
    assert await cache.get("k") == Success(SECRET)


def test_without_cryptography_the_layer_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigurationError) as caught:
        encrypted(MemoryCache())
    assert caught.value.setting == "encryption"
    assert "pip install 'resilient-cache[encryption]'" in str(caught.value)


def test_the_library_imports_without_cryptography() -> None:
    script = (
        "import sys\n"
        "sys.modules['cryptography'] = None\n"  # any import of it now fails
        "import resilient_cache\n"
        "from resilient_cache import EncryptionLayer, MemoryCache, ConfigurationError\n"
        "try:\n"
        "    EncryptionLayer(MemoryCache(), {'k': bytes(32)}, current='k')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc.setting)\n"
    )
    assert python_output(script) == "encryption"


@pytest.mark.parametrize(
    "text", [KEY_2_TEXT, KEY_2_TEXT.rstrip("="), base64.b64encode(KEY_2).decode() + "\n"]
)
async def test_key_text_may_be_urlsafe_or_standard_base64(text: str) -> None:
    inner = MemoryCache()
    await encrypted(inner, {"k2": KEY_2}, current="k2").set("k", SECRET)
    assert await encrypted(inner, {"k2": text}, current="k2").get("k") == Success(SECRET)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 100, 1000])
async def test_the_envelope_size_is_as_documented(size: int) -> None:
    inner = MemoryCache()
    await encrypted(inner).set("k", "x" * size)
    # "enc:v1:<id>:" + base64 of nonce || ciphertext (as long as the value) || tag
    expected = len("enc:v1:k1:") + 4 * math.ceil((NONCE_BYTES + size + TAG_BYTES) / 3)
    assert len(await raw(inner, "k")) == expected

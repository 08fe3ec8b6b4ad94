"""KeyHasher, hash_identifier and cache_key: keyed hashes in place of personal identifiers."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

import pytest

from resilient_cache import ConfigurationError, KeyHasher, cache_key, hash_identifier

SECRET = b"k" * 16 + b"0123456789abcdef"  # 32 bytes
EMAIL = "ada@example.com"


def reference(identifier: str, secret: bytes, length: int = 32) -> str:
    """Computed independently with the standard library, as a known answer."""
    return hmac.new(secret, identifier.encode("utf-8"), hashlib.sha256).hexdigest()[:length]


@pytest.mark.parametrize(
    "identifier", [EMAIL, "+44 20 7946 0958", "Zoë Ångström", "x", "a:b:c", " padded "]
)
def test_known_answer_against_hmac_sha256(identifier: str) -> None:
    assert KeyHasher(SECRET)(identifier) == reference(identifier, SECRET)


def test_a_fixed_vector() -> None:
    # pinned: a change of algorithm or encoding would silently orphan every cached entry
    hasher = KeyHasher(b"0123456789abcdef0123456789abcdef")
    assert hasher(EMAIL) == "e3e30b4d50224a4ba14084607085d072"


def test_a_str_secret_counts_as_its_utf8_bytes() -> None:
    text = "s3cr3t-ünïcode-key-material"
    assert KeyHasher(text)(EMAIL) == reference(EMAIL, text.encode("utf-8"))


def test_the_output_is_lower_case_hex_of_the_chosen_length() -> None:
    for length in range(16, 65, 2):
        digest = KeyHasher(SECRET, length=length)(EMAIL)
        assert len(digest) == length
        assert digest == reference(EMAIL, SECRET, length)
        assert set(digest) <= set("0123456789abcdef")
    assert KeyHasher(SECRET).length == 32


def test_it_is_keyed_not_a_plain_hash() -> None:
    digest = KeyHasher(SECRET, length=64)(EMAIL)
    plain = hashlib.sha256(EMAIL.encode()).hexdigest()
    assert digest != plain
    assert plain[:32] != KeyHasher(SECRET)(EMAIL)
    assert hashlib.sha256(SECRET + EMAIL.encode()).hexdigest() != digest  # nor a naive prefix


def test_different_secrets_give_different_keys() -> None:
    other = b"another secret of 32 bytes......"
    assert KeyHasher(SECRET)(EMAIL) != KeyHasher(other)(EMAIL)


def test_same_secret_same_identifier_same_key_different_identifier_different_key() -> None:
    hasher = KeyHasher(SECRET)
    assert hasher(EMAIL) == KeyHasher(SECRET)(EMAIL)
    assert hasher(EMAIL) != hasher("bob@example.com")


def test_the_identifier_is_hashed_exactly_as_given() -> None:
    hasher = KeyHasher(SECRET)
    assert hasher("Ada@Example.com") != hasher(EMAIL)  # nothing lower-cased behind your back
    assert hasher(" ada@example.com") != hasher(EMAIL)


def test_normalize_is_applied_before_hashing() -> None:
    hasher = KeyHasher(SECRET, normalize=lambda s: s.strip().casefold())
    assert hasher("  Ada@Example.COM ") == hasher(EMAIL) == reference(EMAIL, SECRET)


@pytest.mark.parametrize(
    "secret",
    [b"", "", b"x" * 15, "short", "ü" * 7],  # "ü" * 7: 14 UTF-8 bytes
    ids=["empty-bytes", "empty-str", "15-bytes", "short-str", "14-utf8-bytes"],
)
def test_a_short_secret_is_refused_naming_the_setting(secret: bytes | str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyHasher(secret)
    assert info.value.setting == "secret"
    if secret:
        assert str(secret) not in str(info.value)


def test_sixteen_bytes_are_enough() -> None:
    assert len(KeyHasher(b"x" * 16)(EMAIL)) == 32
    assert len(KeyHasher("ü" * 8)(EMAIL)) == 32  # 16 UTF-8 bytes


@pytest.mark.parametrize("secret", [None, 1234567890123456789, ["x" * 32], memoryview(SECRET)])
def test_a_secret_of_another_type_is_refused(secret: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyHasher(secret)
    assert info.value.setting == "secret"


@pytest.mark.parametrize("length", [0, 14, 15, 17, 33, 66, 128, -32, True, 32.0, "32"])
def test_a_bad_length_is_refused(length: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyHasher(SECRET, length=length)
    assert info.value.setting == "length"


def test_repr_hides_the_secret() -> None:
    secret = "a-very-recognisable-secret-value"
    hasher = KeyHasher(secret, length=40, normalize=str.casefold)
    shown = repr(hasher)
    assert secret not in shown and secret.encode().hex() not in shown
    assert shown == "KeyHasher(secret=***, length=40, normalize=str.casefold)"
    assert secret not in str(hasher)


def test_empty_and_non_str_identifiers_are_programmer_errors() -> None:
    hasher = KeyHasher(SECRET)
    with pytest.raises(ValueError, match="empty"):
        hasher("")
    with pytest.raises(ValueError, match="empty"):
        KeyHasher(SECRET, normalize=str.strip)("   ")
    with pytest.raises(TypeError):
        hasher(b"ada@example.com")  # type: ignore[arg-type]


def test_hash_identifier_is_a_one_off_hasher() -> None:
    assert hash_identifier(EMAIL, SECRET) == reference(EMAIL, SECRET)
    assert hash_identifier(EMAIL, SECRET, length=16) == reference(EMAIL, SECRET, 16)
    with pytest.raises(ConfigurationError):
        hash_identifier(EMAIL, b"short")


def test_the_hasher_can_be_pickled_for_worker_processes() -> None:
    hasher = KeyHasher(SECRET, length=20)
    assert pickle.loads(pickle.dumps(hasher))(EMAIL) == hasher(EMAIL)


# -- cache_key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("user", 123, "profile"), "user:123:profile"),
        (("session", "abc"), "session:abc"),
        (("ratelimit", "user", 123), "ratelimit:user:123"),
        (("user", "email", "e3e30b4d"), "user:email:e3e30b4d"),
        (("single",), "single"),
        (("user", "1:admin"), "user:1%3Aadmin"),  # no forged structure
        (("user", "100%"), "user:100%25"),
        (("user", "1%3Aadmin"), "user:1%253Aadmin"),  # so the encoding stays unambiguous
        (("user", -1), "user:-1"),
    ],
)
def test_cache_key_joins_parts_with_colons(parts: tuple[str | int, ...], expected: str) -> None:
    assert cache_key(*parts) == expected


def test_cache_key_never_gives_two_part_lists_the_same_key() -> None:
    candidates = [
        ("user", "1:admin"),
        ("user", "1", "admin"),
        ("user", "1%3Aadmin"),
        ("user:1", "admin"),
    ]
    assert len({cache_key(*parts) for parts in candidates}) == len(candidates)


def test_cache_key_refuses_empty_parts_and_other_types() -> None:
    with pytest.raises(ValueError, match="at least one"):
        cache_key()
    with pytest.raises(ValueError, match="empty"):
        cache_key("user", "", "profile")
    for bad in (True, 1.5, None, b"x"):
        with pytest.raises(TypeError):
            cache_key("user", bad)  # type: ignore[arg-type]


def test_a_pii_key_end_to_end() -> None:
    hasher = KeyHasher(SECRET)
    key = cache_key("user", "email", hasher(EMAIL))
    assert key == f"user:email:{reference(EMAIL, SECRET)}"
    assert EMAIL not in key and "ada" not in key


def test_cache_key_and_key_templates_share_one_rule() -> None:
    """cache_key writes each part as @cached's key templates write a value (key_part)."""
    import enum  # noqa: PLC0415
    import inspect  # noqa: PLC0415
    import uuid  # noqa: PLC0415

    from resilient_cache.patterns._keys import KeyTemplate  # noqa: PLC0415

    class Colour(str, enum.Enum):  # a str mixin: str() would say "Colour.RED"  # noqa: UP042
        RED = "red"

    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert cache_key("c", Colour.RED) == "c:red"
    assert cache_key("u", ident) == f"u:{ident}"

    def load(colour: object, ident: object) -> None: ...

    template = KeyTemplate("c:{colour}:u:{ident}", inspect.signature(load), "load")
    rendered = template.render({"colour": Colour.RED, "ident": ident})
    assert rendered == cache_key("c", Colour.RED, "u", ident)

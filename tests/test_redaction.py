"""SecretScrubber / scrub_secrets: the rules of redaction.py, one table per rule."""

from __future__ import annotations

import copy
import json
import sys
from collections import namedtuple
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import pytest
import structlog
from structlog.testing import capture_logs

from resilient_cache import ConfigurationError, SecretScrubber, scrub_secrets
from resilient_cache.redaction import REDACTED, SECRET_KEY_NAMES

SECRET = "Sekr1t-Canary-42"


def scrub(event: dict[str, Any], scrubber: Any = scrub_secrets) -> dict[str, Any]:
    return dict(scrubber(None, "info", event))


# -- rule 1: secret key names ----------------------------------------------------------------

SECRET_KEYS = [
    "password",
    "PASSWORD",
    "passwd",
    "pwd",
    "passphrase",
    "db_password",
    "redisPassword",
    "CACHE_REDIS__PASSWORD",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refreshToken",
    "X-Auth-Token",
    "api_key",
    "apikey",
    "apiKey",
    "APIKey",
    "X-Api-Key",
    "auth",
    "basic_auth",
    "Authorization",
    "Proxy-Authorization",
    "credential",
    "credentials",
    "private_key",
    "privateKey",
    "aws_secret_access_key",
    "secret_key",
    "signing_key",
    "cookie",
    "Set-Cookie",
    "cookies",
    "session_id",
    "sessionId",
    "requirepass",
    "masterauth",
    "_password",
]

HARMLESS_KEYS = [
    "key",
    "cache_key",
    "keys",
    "token_count",
    "max_tokens",
    "tokens",
    "password_policy",
    "password_hash",
    "secretary",
    "secrets_loaded",
    "author",
    "oauth",
    "session",
    "pass",
    "first_pass",
    "keyspace",
    "event",
    "error_type",
    "exc_info",
]


@pytest.mark.parametrize("name", SECRET_KEYS)
def test_secret_key_names_are_recognised(name: str) -> None:
    assert SecretScrubber().is_secret_key(name)
    assert scrub({"event": "e", name: "value"})[name] == REDACTED


@pytest.mark.parametrize("name", HARMLESS_KEYS)
def test_harmless_key_names_are_not(name: str) -> None:
    assert not SecretScrubber().is_secret_key(name)
    assert scrub({"event": "e", name: "value"})[name] == "value"


def test_the_documented_list_is_normalised() -> None:
    scrubber = SecretScrubber()
    assert all(scrubber.is_secret_key(name) for name in SECRET_KEY_NAMES)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pw", REDACTED),
        (b"pw", REDACTED),
        (1234, REDACTED),
        (True, REDACTED),
        ({"nested": "x"}, REDACTED),
        (["a", "b"], REDACTED),
        ("", REDACTED),
        (None, None),  # "no password configured" stays visible
    ],
)
def test_a_secret_key_hides_any_value_but_none(value: object, expected: object) -> None:
    assert scrub({"event": "e", "password": value})["password"] == expected


def test_non_string_keys_are_never_secret_names() -> None:
    event = {"event": "e", "data": {1: "one", ("password",): "tuple key", None: "x"}}
    assert scrub(event) == event


def test_extra_keys_are_matched_like_the_built_in_names() -> None:
    scrubber = SecretScrubber(extra_keys=["tenant-pin", "pass"])
    event = {"event": "e", "tenantPin": "1", "x_tenant_pin": "2", "pass": "3", "pin": "4"}
    assert scrub(event, scrubber) == {
        "event": "e",
        "tenantPin": REDACTED,
        "x_tenant_pin": REDACTED,
        "pass": REDACTED,
        "pin": "4",
    }
    assert scrub({"event": "e", "tenant_pin": "1"}) == {"event": "e", "tenant_pin": "1"}


@pytest.mark.parametrize("bad", ["", "--", " "])
def test_an_empty_extra_key_is_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SecretScrubber(extra_keys=[bad])
    assert info.value.setting == "extra_keys"


# -- rule 2: text ----------------------------------------------------------------------------

TEXT_CASES = [
    # URL user info, any scheme
    ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
    ("rediss://:pw@cache.internal:6380/1", "rediss://:***@cache.internal:6380/1"),
    ("connecting to redis://default:pw@h/0 failed", "connecting to redis://default:***@h/0 failed"),
    ("https://u:pw@example.com/x?a=1", "https://u:***@example.com/x?a=1"),
    ("amqp://guest:pw@mq:5672//", "amqp://guest:***@mq:5672//"),
    ("postgresql+asyncpg://app:pw@db/app", "postgresql+asyncpg://app:***@db/app"),
    ("redis://u:p@ss#/w@host/0", "redis://u:***@host/0"),  # unencoded @ / # in the password
    ("url='redis://:pw@h:1/0'", "url='redis://:***@h:1/0'"),
    ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),  # no user info
    ("redis://user@host/0", "redis://user@host/0"),  # a user, no password
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    # assignments of secret-named keys
    ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
    ("GET /x?access_token=pw", "GET /x?access_token=***"),
    ("CACHE_REDIS__PASSWORD=pw", "CACHE_REDIS__PASSWORD=***"),
    ("Options(db=0, password='pw', ssl=True)", "Options(db=0, password='***', ssl=True)"),
    ('{"api_key": "pw", "key": "user:1"}', '{"api_key": "***", "key": "user:1"}'),
    ("{'token': 'pw', 'token_count': 3}", "{'token': '***', 'token_count': 3}"),
    ("secret = pw; next", "secret = ***; next"),
    ("token_count=3 key=user:1", "token_count=3 key=user:1"),
    ("password: must be at least 8 characters", "password: must be at least 8 characters"),
    # Authorization headers
    ("Authorization: Bearer eyJhbGci.x.y", "Authorization: Bearer ***"),
    ("proxy-authorization: Basic dXNlcjpwdw==", "proxy-authorization: Basic ***"),
    ("Authorization: pw", "Authorization: ***"),
    # Redis commands
    ("AUTH pw", "AUTH ***"),
    ("AUTH default pw", "AUTH *** ***"),
    ("sent AUTH default pw then PING", "sent AUTH *** *** then PING"),
    ("HELLO 3 AUTH default pw SETNAME app", "HELLO 3 AUTH *** *** SETNAME app"),
    ("MIGRATE h 1 k 0 5000 AUTH2 u pw", "MIGRATE h 1 k 0 5000 AUTH2 *** ***"),
    ("['AUTH', 'default', 'pw']", "['AUTH', '***', '***']"),
    ("(b'AUTH', b'pw')", "(b'AUTH', b'***')"),
    ('"auth" "pw"', '"auth" "***"'),
    ("redis-server --requirepass pw --save ''", "redis-server --requirepass *** --save ''"),
    ("CONFIG SET requirepass pw", "CONFIG SET requirepass ***"),
    ("CONFIG SET MASTERAUTH pw", "CONFIG SET MASTERAUTH ***"),
    # not commands
    ("auth failed for bob", "auth failed for bob"),
    ("Authentication required.", "Authentication required."),
    ("<ErrorCode.AUTH: 'auth'>", "<ErrorCode.AUTH: 'auth'>"),
    ("OAUTH x y", "OAUTH x y"),
    ("no secret here", "no secret here"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_text_rules(text: str, expected: str) -> None:
    assert SecretScrubber().scrub_text(text) == expected
    assert scrub({"event": text})["event"] == expected


def test_text_without_secrets_is_the_same_object() -> None:
    text = "a plain sentence, key=user:1"
    assert SecretScrubber().scrub_text(text) is text


def test_bytes_values_are_scrubbed_as_bytes() -> None:
    event = {"event": "e", "raw": b"redis://:pw@h/0", "plain": b"\xff\x00ok"}
    assert scrub(event) == {"event": "e", "raw": b"redis://:***@h/0", "plain": b"\xff\x00ok"}


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["AUTH", "pw"], ["AUTH", REDACTED]),
        (["AUTH", "default", "pw"], ["AUTH", "default", REDACTED]),
        (("auth", "pw"), ("auth", REDACTED)),
        ([b"AUTH", b"default", b"pw"], [b"AUTH", b"default", REDACTED]),
        (
            ["HELLO", 3, "AUTH", "default", "pw", "SETNAME", "app"],
            ["HELLO", 3, "AUTH", "default", REDACTED, "SETNAME", "app"],
        ),
        (
            ["MIGRATE", "h", 1, "", 0, 5000, "AUTH", "pw", "KEYS", "a"],
            ["MIGRATE", "h", 1, "", 0, 5000, "AUTH", REDACTED, "KEYS", "a"],
        ),
        (["MIGRATE", "h", "AUTH2", "u", "pw"], ["MIGRATE", "h", "AUTH2", "u", REDACTED]),
        (
            ["redis-server", "--requirepass", "pw", "--port", "1"],
            ["redis-server", "--requirepass", REDACTED, "--port", "1"],
        ),
        (["CONFIG", "SET", "masterauth", "pw"], ["CONFIG", "SET", "masterauth", REDACTED]),
        (["GET", "auth"], ["GET", "auth"]),  # nothing follows: nothing to hide
        (["SET", "k", "v"], ["SET", "k", "v"]),
    ],
)
def test_command_argument_lists_hide_only_the_password(command: Any, expected: Any) -> None:
    assert scrub({"event": "e", "command": command})["command"] == expected


# -- rule 3: registered secrets --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"the password is {SECRET}.", "the password is ***."),
        (f"{SECRET}{SECRET}", "******"),
        (f"prefix-{SECRET}-suffix", "prefix-***-suffix"),
        (repr(SECRET), "'***'"),
        ("nothing", "nothing"),
    ],
)
def test_registered_secrets_are_hidden_anywhere(text: str, expected: str) -> None:
    assert SecretScrubber([SECRET]).scrub_text(text) == expected


@pytest.mark.parametrize("secret", ["p@ss w/rd", 'it\'s "quoted"', "back\\slash", "ünïcode-pw"])
def test_escaped_forms_of_a_registered_secret_are_hidden(secret: str) -> None:
    scrubber = SecretScrubber([secret])
    for shown in (secret, repr(secret), json.dumps(secret), quote(secret, safe=""), [secret]):
        text = shown if isinstance(shown, str) else repr(shown)
        assert secret not in scrubber.scrub_text(text)
        assert REDACTED in scrubber.scrub_text(text)
    raw = scrub({"event": "e", "raw": f"x{secret}y".encode()}, scrubber)["raw"]
    assert raw == b"x***y"


def test_none_and_empty_secrets_are_skipped() -> None:
    scrubber = SecretScrubber([None, "", SECRET])
    assert scrubber.scrub_text(f"a {SECRET} b") == "a *** b"
    assert SecretScrubber([None, ""]).scrub_text("a b") == "a b"


@pytest.mark.parametrize("short", ["a", "ab", "abc"])
def test_a_secret_too_short_to_hide_is_refused_without_showing_it(short: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SecretScrubber([short])
    assert info.value.setting == "secrets"
    assert repr(short) not in str(info.value)


def test_the_scrubber_repr_hides_its_secrets() -> None:
    scrubber = SecretScrubber([SECRET, "another-secret"], extra_keys=["pin"])
    assert SECRET not in repr(scrubber)
    assert repr(scrubber) == "SecretScrubber(<2 secrets>, extra_keys=['pin'])"


# -- structure: nesting, types, no mutation --------------------------------------------------

Point = namedtuple("Point", ["url", "n"])


def test_nested_structures_are_scrubbed_at_every_depth() -> None:
    event = {
        "event": f"connecting with {SECRET}",
        "config": {
            "redis": {"url": "redis://:pw@h/0", "password": "pw", "db": 0},
            "hosts": ["redis://u:pw@a/0", ("b", "redis://u:pw@b/0")],
        },
        "headers": MappingProxyType({"X-Api-Key": "k", "Accept": "json"}),
        "point": Point("redis://:pw@p/0", 1),
    }
    assert scrub(event, SecretScrubber([SECRET])) == {
        "event": "connecting with ***",
        "config": {
            "redis": {"url": "redis://:***@h/0", "password": REDACTED, "db": 0},
            "hosts": ["redis://u:***@a/0", ("b", "redis://u:***@b/0")],
        },
        "headers": {"X-Api-Key": REDACTED, "Accept": "json"},
        "point": Point("redis://:***@p/0", 1),
    }
    assert type(scrub(event)["point"]) is Point


def test_string_dict_keys_are_scrubbed_too() -> None:
    event = {"event": "e", "status": {"redis://:pw@h/0": "down"}}
    assert scrub(event) == {"event": "e", "status": {"redis://:***@h/0": "down"}}


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


@pytest.mark.parametrize(
    "value",
    [0, -1.5, float("inf"), True, None, Opaque(), 10**30, {1, 2}, frozenset({"a"}), range(3)],
    ids=repr,
)
def test_non_string_values_are_untouched(value: object) -> None:
    assert scrub({"event": "e", "value": value})["value"] is value


def test_the_original_event_and_its_values_are_not_mutated() -> None:
    inner = {"url": "redis://:pw@h/0", "password": "pw", "ok": [1, 2]}
    hosts = ["redis://u:pw@a/0", "plain"]
    event = {"event": "e", "inner": inner, "hosts": hosts, "password": "pw"}
    before = copy.deepcopy(event)
    result = scrub_secrets(None, "info", event)
    assert event == before
    assert result is not event
    assert result["inner"] is not inner and result["hosts"] is not hosts
    assert result["inner"]["ok"] is inner["ok"]  # nothing to hide: passed on as it is


def test_an_event_with_nothing_to_hide_is_still_a_new_dict() -> None:
    event = {"event": "e", "n": 1}
    result = scrub_secrets(None, "info", event)
    assert result == event and result is not event


def test_cycles_do_not_recurse_forever() -> None:
    loop: list[Any] = ["redis://:pw@h/0"]
    loop.append(loop)
    result = scrub({"event": "e", "loop": loop})["loop"]
    assert result[0] == "redis://:***@h/0" and result[1] == "<cycle>"


# -- rule 4: exceptions ----------------------------------------------------------------------


def test_an_exception_value_that_shows_a_secret_becomes_scrubbed_text() -> None:
    leaky = ConnectionError("cannot reach redis://app:pw@h:6379/0")
    clean = ValueError("no secret")
    result = scrub({"event": "e", "error": leaky, "other": clean, "list": [leaky]})
    assert result["error"] == "ConnectionError: cannot reach redis://app:***@h:6379/0"
    assert result["list"] == ["ConnectionError: cannot reach redis://app:***@h:6379/0"]
    assert result["other"] is clean


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_an_exception_whose_str_raises_does_not_break_logging() -> None:
    error = Unprintable()
    assert scrub({"event": "e", "error": error})["error"] is error


def _raise(message: str) -> None:
    raise ConnectionError(message)


def _exc_info(message: str) -> BaseException:
    try:
        try:
            _raise("inner: redis://:pw@inner/0")
        except ConnectionError as inner:
            raise RuntimeError(message) from inner
    except RuntimeError as error:
        return error
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "processors",
    [
        [structlog.processors.format_exc_info],
        [structlog.processors.dict_tracebacks],
    ],
    ids=["format_exc_info", "dict_tracebacks"],
)
def test_after_the_traceback_processors_the_traceback_text_is_scrubbed(
    processors: list[Any],
) -> None:
    error = _exc_info(f"outer {SECRET}")
    event: Any = {"event": "failed", "exc_info": error}
    for processor in processors:
        event = processor(None, "error", event)
    result = scrub(event, SecretScrubber([SECRET]))
    rendered = json.dumps(result, default=str)
    assert SECRET not in rendered and "redis://:pw@" not in rendered
    assert "redis://:***@inner/0" in rendered and "outer ***" in rendered


def test_before_format_exc_info_a_leaky_traceback_is_formatted_and_scrubbed() -> None:
    error = _exc_info("outer")
    result = scrub({"event": "failed", "exc_info": error})
    assert "exc_info" not in result
    assert "redis://:***@inner/0" in result["exception"]
    assert "Traceback (most recent call last)" in result["exception"]


def test_before_format_exc_info_a_clean_traceback_is_left_for_it() -> None:
    try:
        _raise("nothing secret")
    except ConnectionError:
        result = scrub({"event": "failed", "exc_info": True})
        assert result["exc_info"] is True
        clean = scrub({"event": "failed", "exc_info": sys.exc_info()})
        assert "exception" not in clean
    error = _exc_info("outer")
    assert scrub({"event": "e", "exc_info": False}) == {"event": "e", "exc_info": False}
    assert "exception" in scrub({"event": "e", "exc_info": (type(error), error, None)})


def test_exc_info_true_uses_the_exception_being_handled() -> None:
    try:
        _raise("redis://:pw@h/0")
    except ConnectionError:
        result = scrub({"event": "failed", "exc_info": True})
    assert "exc_info" not in result and "redis://:***@h/0" in result["exception"]
    assert scrub({"event": "e", "exc_info": True}) == {"event": "e", "exc_info": True}


# -- in a structlog chain --------------------------------------------------------------------


def test_in_a_structlog_chain_nothing_reaches_the_renderer() -> None:
    scrubber = SecretScrubber([SECRET])
    output: list[str] = []

    def collect(logger: Any, method_name: str, event_dict: Any) -> str:
        output.append(str(structlog.processors.JSONRenderer()(logger, method_name, event_dict)))
        raise structlog.DropEvent

    logger = structlog.wrap_logger(
        None,
        processors=[structlog.processors.format_exc_info, scrubber, collect],
    )
    try:
        _raise(f"redis://:{SECRET}@h/0")
    except ConnectionError:
        logger.exception("cache down", url=f"redis://app:{SECRET}@h/0", password=SECRET)
    assert len(output) == 1
    assert SECRET not in output[0]
    assert json.loads(output[0])["password"] == REDACTED


def test_capture_logs_sees_the_scrubbed_event() -> None:
    with capture_logs(processors=[scrub_secrets]) as events:
        structlog.get_logger().info("login", token="t0k3n", user="ada")
    assert events == [{"event": "login", "token": REDACTED, "user": "ada", "log_level": "info"}]

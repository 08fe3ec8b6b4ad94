"""TLS against a real redis-server: certificates made with openssl at test time, never kept.

Verification is on by default; each way a handshake can fail is a ``TLS`` failure within the
deadline, never a generic connection error; switching verification off takes an explicit
``allow_insecure_tls=True`` and is logged.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resilient_cache import (
    CacheError,
    ConfigurationError,
    ErrorCode,
    Failure,
    RedisAdapter,
    Result,
    Success,
)
from resilient_cache.adapters import redis_options
from resilient_cache.adapters._tls import TlsProbe
from resilient_cache.testing.toxiproxy import Toxiproxy
from tests.servers import LOOPBACK, RedisServer, free_port, require_binary

DEADLINE = 0.5
SLACK = 0.25


def error_of(result: Result[Any, CacheError]) -> CacheError:
    assert isinstance(result, Failure), f"expected a Failure, got {result!r}"
    return result.error


@dataclass(frozen=True)
class Certificates:
    directory: Path

    def __getitem__(self, name: str) -> str:
        return str(self.directory / name)


def make_certificates(directory: Path, openssl: str) -> Certificates:
    """Two CAs; from the first, a server certificate for 127.0.0.1, one for another host
    name only, and a client certificate."""

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.crt")  # fmt: skip
    for name, san in (
        ("server", "IP:127.0.0.1"),
        ("elsewhere", "DNS:cache.example"),
        ("client", None),
    ):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        extra: list[str] = []
        if san is not None:
            (directory / f"{name}.cnf").write_text(f"subjectAltName={san}\n")
            extra = ["-extfile", f"{name}.cnf"]
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", *extra, "-out", f"{name}.crt")  # fmt: skip
    return Certificates(directory)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    return make_certificates(directory, require_binary("openssl", "RESILIENT_CACHE_OPENSSL"))


class TlsServer:
    """A redis-server with a plaintext port and a TLS port (both on loopback)."""

    def __init__(self, binary: str, certs: Certificates, cert: str, clients: str) -> None:
        self.tls_port = free_port()
        self.server = RedisServer(
            binary,
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", certs[f"{cert}.crt"],
            "--tls-key-file", certs[f"{cert}.key"],
            "--tls-ca-cert-file", certs["ca.crt"],
            "--tls-auth-clients", clients,
        )  # fmt: skip

    @property
    def tls_url(self) -> str:
        return f"rediss://{LOOPBACK}:{self.tls_port}/0"


@pytest.fixture(scope="module")
def tls_server(redis_binary: str, certificates: Certificates) -> Iterator[TlsServer]:
    server = TlsServer(redis_binary, certificates, "server", clients="optional")
    server.server.start()
    yield server
    server.server.cleanup()


async def failure_within_deadline(cache: RedisAdapter) -> CacheError:
    started = time.monotonic()
    error = error_of(await cache.get("k"))
    assert time.monotonic() - started < DEADLINE + SLACK
    await cache.aclose()
    return error


async def test_the_right_ca_verifies_the_server(
    tls_server: TlsServer, certificates: Certificates
) -> None:
    cache = RedisAdapter.from_url(tls_server.tls_url, ssl_ca_certs=certificates["ca.crt"])
    assert await cache.set("k", "over tls") == Success(None)
    assert await cache.get("k") == Success("over tls")
    await cache.aclose()


def read_ca(certificates: Certificates) -> str:
    return Path(certificates["ca.crt"]).read_text()


async def test_ca_data_instead_of_a_file(tls_server: TlsServer, certificates: Certificates) -> None:
    pem = read_ca(certificates)
    cache = RedisAdapter.from_url(tls_server.tls_url, ssl_ca_data=pem, ssl_min_version="TLSv1.3")
    assert await cache.ping() == Success(True)
    await cache.aclose()


@pytest.mark.parametrize("ca", ["other-ca.crt", None], ids=["another CA", "the system's CAs"])
async def test_an_untrusted_certificate_is_a_tls_failure(
    tls_server: TlsServer, certificates: Certificates, ca: str | None
) -> None:
    options: dict[str, Any] = {"ssl_ca_certs": certificates[ca]} if ca else {}
    error = await failure_within_deadline(RedisAdapter.from_url(tls_server.tls_url, **options))
    assert error.code is ErrorCode.TLS
    assert "certificate did not verify" in error.message
    assert error.trips_breaker and not error.retryable


async def test_a_host_name_mismatch_is_a_tls_failure(
    redis_binary: str, certificates: Certificates
) -> None:
    server = TlsServer(redis_binary, certificates, "elsewhere", clients="optional")
    server.server.start()
    try:
        cache = RedisAdapter.from_url(server.tls_url, ssl_ca_certs=certificates["ca.crt"])
        error = await failure_within_deadline(cache)
        assert error.code is ErrorCode.TLS
        assert "mismatch" in error.message.lower()
    finally:
        server.server.cleanup()


async def test_plaintext_to_the_tls_port_is_a_tls_failure(tls_server: TlsServer) -> None:
    url = f"redis://{LOOPBACK}:{tls_server.tls_port}/0"
    error = await failure_within_deadline(RedisAdapter.from_url(url))
    assert error.code is ErrorCode.TLS, error
    assert "rediss://" in error.message


async def test_a_tls_verdict_is_remembered_for_the_calls_after_it(tls_server: TlsServer) -> None:
    """A call with no time left to wait or to probe still gets the verdict an earlier probe
    of the same port found (a verdict that arrives late serves the next calls)."""
    probe = TlsProbe(LOOPBACK, tls_server.tls_port, tls=False, client_certificate=False)
    verdict = "TLS: the server speaks TLS on this port (use rediss://)"
    assert await probe.explain(0.5) == verdict  # probed within the call's wait
    assert await probe.explain(0.0) == verdict  # no time at all: the remembered verdict
    plain = TlsProbe(LOOPBACK, tls_server.server.port, tls=False, client_certificate=False)
    assert await plain.explain(0.5) is None  # a plaintext port: nothing to say
    assert await plain.explain(0.0) is None


@pytest.mark.slow
async def test_a_tls_verdict_is_dropped_once_the_port_speaks_redis(
    tls_server: TlsServer, toxiproxy: Toxiproxy
) -> None:
    """The TLS probe's verdict must not outlive the mistake: once the same address answers
    as Redis, a later reset of a new connection is a CONNECTION failure, not TLS."""
    name = "tls-verdict"
    proxy = toxiproxy.create_proxy(name, f"{LOOPBACK}:0", f"{LOOPBACK}:{tls_server.tls_port}")
    listen = proxy.listen
    cache = RedisAdapter.from_url(f"redis://{listen}/0")
    try:
        assert (await failure_within_deadline(cache)).code is ErrorCode.TLS
        proxy.delete()  # the operator fixes it: the same address now reaches plaintext Redis
        proxy = toxiproxy.create_proxy(name, listen, f"{LOOPBACK}:{tls_server.server.port}")
        assert await cache.set("k", "v") == Success(None)
        await cache.aclose()  # the next call opens a new connection
        with proxy.reset_peer():
            error = await failure_within_deadline(cache)
        assert error.code is ErrorCode.CONNECTION, error
    finally:
        proxy.delete()
        await cache.aclose()


async def test_tls_to_the_plaintext_port_times_out_with_a_hint(
    tls_server: TlsServer, certificates: Certificates
) -> None:
    url = f"rediss://{LOOPBACK}:{tls_server.server.port}/0"
    cache = RedisAdapter.from_url(url, ssl_ca_certs=certificates["ca.crt"])
    error = await failure_within_deadline(cache)
    # the plaintext server waits for the end of a command that never comes: only the
    # deadline ends the handshake, and it cannot be told from a slow one; the message says it
    assert error.code is ErrorCode.TIMEOUT, error
    assert "TLS handshake" in error.message and "redis://" in error.message


async def test_mutual_tls(redis_binary: str, certificates: Certificates) -> None:
    server = TlsServer(redis_binary, certificates, "server", clients="yes")
    server.server.start()
    try:
        with_cert = RedisAdapter.from_url(
            server.tls_url,
            ssl_ca_certs=certificates["ca.crt"],
            ssl_certfile=certificates["client.crt"],
            ssl_keyfile=certificates["client.key"],
        )
        assert await with_cert.set("k", "mutual") == Success(None)
        assert await with_cert.get("k") == Success("mutual")
        await with_cert.aclose()

        without = RedisAdapter.from_url(server.tls_url, ssl_ca_certs=certificates["ca.crt"])
        error = await failure_within_deadline(without)
        assert error.code is ErrorCode.TLS, error
    finally:
        server.server.cleanup()


# -- switching verification off -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url_query", "options", "setting"),
    [
        ("", {"ssl_cert_reqs": "none"}, "ssl_cert_reqs"),
        ("", {"ssl_check_hostname": False}, "ssl_check_hostname"),
        ("?ssl_cert_reqs=none", {}, "url"),
        ("?ssl_check_hostname=false", {}, "url"),
    ],
)
def test_switching_verification_off_is_refused_by_default(
    url_query: str, options: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_tls") as info:
        RedisAdapter.from_url(f"rediss://{LOOPBACK}:1/0{url_query}", **options)
    assert info.value.setting == setting


@pytest.mark.parametrize(
    ("setting", "value"), [("ssl_cert_reqs", "optional"), ("ssl_min_version", "TLSv1.1")]
)
def test_bad_tls_settings_are_named(setting: str, value: str) -> None:
    options: dict[str, Any] = {setting: value}
    with pytest.raises(ConfigurationError) as info:
        RedisAdapter.from_url(f"rediss://{LOOPBACK}:1/0", **options)
    assert info.value.setting == setting


async def test_insecure_tls_when_allowed_works_and_is_logged_once(
    tls_server: TlsServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_options, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="resilient_cache"):
        for _ in range(2):
            cache = RedisAdapter.from_url(
                f"{tls_server.tls_url}?ssl_cert_reqs=none",
                allow_insecure_tls=True,
                ssl_check_hostname=False,
            )
            assert await cache.ping() == Success(True)  # our CA is unknown: unverified
            await cache.aclose()
    warnings = [r for r in caplog.records if "verification is switched off" in r.getMessage()]
    assert len(warnings) == 1


def test_plaintext_to_another_host_is_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_options, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="resilient_cache"):
        for _ in range(2):  # nothing connects: building the adapter is enough
            RedisAdapter.from_url("redis://:secret@cache.internal:6379/0")
        RedisAdapter.from_url(f"redis://{LOOPBACK}:6379/0")
        RedisAdapter.from_url("redis://localhost:6379/0")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "plaintext" in messages[0] and "cache.internal" in messages[0]
    assert "secret" not in messages[0]

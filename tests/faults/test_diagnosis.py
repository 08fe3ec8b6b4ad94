"""The TLS diagnosis after a dropped connection only ever adds words to a failure (P9).

A new connection that the server drops before any reply may be a TLS/plaintext mismatch, so
the adapter asks the port which protocol it speaks. That probe must never raise, never
block the event loop, never turn a ``CONNECTION`` failure into a ``TIMEOUT``, never keep the
call past its deadline, and run once, not once per reset, during a storm of resets.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from resilient_cache import CacheSettings, ErrorCode, Failure, RedisAdapter, Success, build_cache
from resilient_cache.adapters._tls import PROBE_MARGIN, WAIT_SHARE, TlsProbe
from resilient_cache.testing import LOOPBACK
from resilient_cache.testing.toxiproxy import Proxy
from tests.toxiproxy_fixtures import proxy_url

pytestmark = pytest.mark.slow


class SilentPort:
    """A loopback port that holds TLS clients without a word (a hung TLS peer) and resets
    plaintext ones (a Redis client is cut off before any reply).

    Counts the TLS connections it held: each one is a probe.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(1)
        except OSError:
            return
        if first == b"\x16":  # a TLS ClientHello: hold it
            self.accepted += 1
            self._held.append(conn)
        else:  # reset: SO_LINGER 0 makes close() send RST
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_port() -> Iterator[SilentPort]:
    port = SilentPort()
    yield port
    port.close()


async def test_a_call_waits_for_a_hung_probe_only_a_share_of_its_time(
    silent_port: SilentPort,
) -> None:
    probe = TlsProbe(LOOPBACK, silent_port.port, tls=False, client_certificate=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await probe.explain(0.4) is None
    waited = loop.time() - started
    assert waited < (0.4 - PROBE_MARGIN) * WAIT_SHARE + 0.05
    assert waited >= (0.4 - PROBE_MARGIN) * WAIT_SHARE * 0.9  # it did wait for the probe
    probe.cancel()


async def test_one_probe_however_many_resets(silent_port: SilentPort) -> None:
    probe = TlsProbe(LOOPBACK, silent_port.port, tls=False, client_certificate=False)
    await asyncio.gather(*(probe.explain(0.2) for _ in range(50)))
    for _ in range(20):
        await probe.explain(0.2)  # the first probe has ended by now: too soon for another
    await asyncio.sleep(0.01)  # let the listener thread count what arrived
    assert silent_port.accepted == 1
    probe.cancel()


async def test_a_probe_never_outlives_the_call_that_started_it(silent_port: SilentPort) -> None:
    probe = TlsProbe(LOOPBACK, silent_port.port, tls=False, client_certificate=False)
    await probe.explain(0.1)
    task = probe._task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), timeout=0.1 + 0.05)  # bounded by the call's
    assert task.result() is None


async def test_a_probe_does_not_block_the_event_loop(silent_port: SilentPort) -> None:
    """No certificate store is loaded on the loop (85-100 ms per load on some machines)."""
    probe = TlsProbe(LOOPBACK, silent_port.port, tls=True, client_certificate=False)
    started = time.perf_counter()
    probe_task = asyncio.ensure_future(probe.explain(0.3))
    await asyncio.sleep(0)  # the probe starts: SSL context and connect, then it waits
    assert time.perf_counter() - started < 0.05
    await probe_task
    probe.cancel()


@pytest.mark.parametrize("latency_ms", [0, 200])
async def test_a_reset_late_in_a_call_is_a_failure_not_a_cancellation(
    redis_proxy: Proxy, latency_ms: int
) -> None:
    """The bare adapter (the README's quick start): resets on new connections, with and
    without latency, never raise; the call ends by its deadline with CONNECTION or TIMEOUT.
    """
    cache = RedisAdapter.from_url(proxy_url(redis_proxy), operation_timeout=0.5)
    loop = asyncio.get_running_loop()
    try:
        with redis_proxy.latency(latency_ms), redis_proxy.reset_peer(350, stream="upstream"):
            for _ in range(5):
                started = loop.time()
                result = await cache.get("k")
                assert isinstance(result, Failure), result
                assert result.error.code in {ErrorCode.CONNECTION, ErrorCode.TIMEOUT}
                assert loop.time() - started < 0.5 + 0.1
    finally:
        await cache.aclose()


async def test_a_diagnosis_never_turns_a_reset_into_a_timeout(redis_proxy: Proxy) -> None:
    """Through the default stack, a reset connection is a CONNECTION failure after the retry:
    the probe does not eat the time the retry needs."""
    settings = CacheSettings(redis_url=proxy_url(redis_proxy))
    async with build_cache(settings, registry=CollectorRegistry()) as cache:
        assert await cache.set("k", "v") == Success(None)
        with redis_proxy.reset_peer():
            for _ in range(2):  # 4 failed attempts: the breaker (5) stays closed
                result = await cache.get("k")
                assert isinstance(result, Failure), result
                assert result.error.code is ErrorCode.CONNECTION, result.error


def test_an_adapter_moved_to_another_event_loop_probes_again(silent_port: SilentPort) -> None:
    """A probe left pending on a closed loop (a synchronous wrapper's run_until_complete,
    then close) is not waited for on the next loop, and closing the adapter there works."""
    cache = RedisAdapter.from_url(f"redis://{LOOPBACK}:{silent_port.port}/0")
    first = asyncio.new_event_loop()
    result = first.run_until_complete(cache.get("k"))
    assert isinstance(result, Failure) and result.error.code is ErrorCode.CONNECTION
    first.close()  # the probe's task never finishes now

    async def on_a_new_loop() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await cache.get("k")
        assert isinstance(result, Failure) and result.error.code is ErrorCode.CONNECTION
        await cache.aclose()  # must not touch the closed loop
        return loop.time() - started

    asyncio.run(on_a_new_loop())
    time.sleep(0.05)  # let the listener thread count what arrived
    assert silent_port.accepted == 2  # a probe on each loop, though within PROBE_EVERY

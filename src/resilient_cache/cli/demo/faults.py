"""The demo's Redis and the faults it injects into it.

With ``toxiproxy-server`` installed, a Toxiproxy sits between the cache and the private
redis-server and the faults are network faults (latency, blackhole). Without it, the faults
are real all the same: the redis-server process is paused with SIGSTOP (it answers nothing,
like a blackholed or hopelessly slow server) and resumed with SIGCONT. Either way "Redis
killed" is a SIGKILL of the server, and "Redis back" a restart on the same port.
"""

from __future__ import annotations

import contextlib
import os
import signal
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Final

from resilient_cache.testing import LOOPBACK, RedisServer, find_server
from resilient_cache.testing.toxiproxy import Proxy, ToxiproxyServer

LATENCY_MS: Final = 1_000
"""The "slow Redis" phase: every reply this late, twice the default deadline."""


class Faults(ABC):
    """A private Redis the demo can slow down, blackhole, kill and restore."""

    kind: str = "faults"

    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the cache connects."""

    @abstractmethod
    def slow(self) -> None:
        """Make replies arrive later than the deadline."""

    @abstractmethod
    def blackhole(self) -> None:
        """Accept connections but answer nothing."""

    @abstractmethod
    def clear(self) -> None:
        """Undo :meth:`slow` / :meth:`blackhole`."""

    def kill(self) -> None:
        """SIGKILL the redis-server: connections reset, new ones refused."""
        self.clear()
        self.redis.stop(kill=True)

    def restore(self) -> None:
        """Start the redis-server again, on the same port (empty: no persistence)."""
        self.redis.start()

    def close(self) -> None:
        """Stop everything this object started."""
        with contextlib.suppress(Exception):
            self.clear()
        self.redis.cleanup()


class ToxiproxyFaults(Faults):
    """Network faults through a private Toxiproxy in front of the redis-server."""

    kind = "toxiproxy (network faults)"

    def __init__(self, redis: RedisServer, binary: str) -> None:
        super().__init__(redis)
        self._server = ToxiproxyServer(binary)
        try:
            self._server.start()
            self._proxy: Proxy = self._server.client.create_proxy(
                "redis", f"{LOOPBACK}:0", f"{LOOPBACK}:{redis.port}"
            )
        except BaseException:
            self._server.cleanup()
            raise
        self._toxics = ExitStack()

    @property
    def url(self) -> str:
        return f"redis://{self._proxy.listen_host}:{self._proxy.listen_port}/0"

    def _add(self, toxic: AbstractContextManager[object]) -> None:
        self.clear()
        self._toxics.enter_context(toxic)

    def slow(self) -> None:
        self._add(self._proxy.latency(LATENCY_MS))

    def blackhole(self) -> None:
        self._add(self._proxy.timeout(0))

    def clear(self) -> None:
        self._toxics.close()

    def close(self) -> None:
        super().close()
        self._server.cleanup()


class SignalFaults(Faults):
    """Process faults on the redis-server itself: SIGSTOP, SIGCONT, SIGKILL."""

    kind = "signals (SIGSTOP/SIGCONT/SIGKILL on redis-server)"

    def __init__(self, redis: RedisServer) -> None:
        super().__init__(redis)
        self._paused = False

    @property
    def url(self) -> str:
        return self.redis.url

    def _pause(self) -> None:
        if self.redis.proc is not None and not self._paused:
            os.kill(self.redis.proc.pid, signal.SIGSTOP)
            self._paused = True

    def slow(self) -> None:
        # a paused server answers after the pause ends: later than any deadline
        self._pause()

    def blackhole(self) -> None:
        self._pause()

    def clear(self) -> None:
        if self.redis.proc is not None and self._paused:
            os.kill(self.redis.proc.pid, signal.SIGCONT)
        self._paused = False


def start_faults() -> Faults:
    """A private redis-server, with Toxiproxy in front of it when it is installed."""
    binary = find_server("redis-server", "RESILIENT_CACHE_REDIS_SERVER", tools_from=Path.cwd())
    if binary is None:
        raise RuntimeError("redis-server not found: run `make demo`, or pass --redis-url")
    redis = RedisServer(binary)
    redis.start()
    toxiproxy = find_server(
        "toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER", tools_from=Path.cwd()
    )
    if toxiproxy is None:
        return SignalFaults(redis)
    try:
        return ToxiproxyFaults(redis, toxiproxy)
    except BaseException:
        redis.cleanup()
        raise

"""Helpers for testing code that uses resilient-cache, without sleeping or mocking.

* :class:`ManualClock`: a monotonic clock you move by hand; pass it as
  ``MemoryCache(clock=...)`` to test expiry in microseconds.
* :class:`~resilient_cache.MemoryCache`: a real in-process cache with Redis semantics,
  the fake to use in unit tests of code that takes a ``CacheProtocol``.
* :class:`RedisServer`: a private, throw-away ``redis-server`` process on a free loopback
  port, for tests that want the real thing (a real server is cheap; never mock the network).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from resilient_cache.adapters.memory import MemoryCache

__all__ = ["LOOPBACK", "ManualClock", "MemoryCache", "RedisServer", "free_port"]

LOOPBACK: Final = "127.0.0.1"
_REDIS_DEFAULT_PORT: Final = 6379


class ManualClock:
    """A monotonic clock that only moves when told to.

    >>> clock = ManualClock()
    >>> clock.advance(1.5)
    >>> clock()
    1001.5
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (a monotonic clock never goes back)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += seconds


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port != _REDIS_DEFAULT_PORT:
            return port


def stop_process(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """Stop a process by its PID: SIGTERM (or SIGKILL), then wait; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class RedisServer:
    """A private ``redis-server``: free loopback port, own temp directory, no persistence.

    ``restart()`` brings it back on the same port (empty); ``stop(kill=True)`` is a crash.
    Use it as a context manager, or call :meth:`cleanup` to stop it and remove its files::

        with RedisServer() as server:
            cache = RedisAdapter.from_url(server.url)

    Args:
        binary: the ``redis-server`` executable.
        extra_args: more ``--option value`` arguments (e.g. ``"--requirepass", "pw"``).
    """

    def __init__(self, binary: str = "redis-server", *extra_args: str) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="resilient-cache-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        """The server's unix socket (``unix://`` URLs)."""
        return self.dir / "redis.sock"

    def start(self, ready_timeout: float = 10.0) -> None:
        """Start the server and wait until it answers."""
        with (self.dir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", LOOPBACK,
                    "--dir", str(self.dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--unixsocket", str(self.socket_path),
                    "--enable-debug-command", "local",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop(kill=True)
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited:\n{log}")
            if self.command("PING") in ("+PONG", "-NOAUTH Authentication required."):
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def command(self, *args: str) -> str | None:
        """Send one command over a raw socket; return the first reply line, or ``None``."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                sock.sendall(payload.encode())
                data = b""
                while not data.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data.decode(errors="replace").split("\r\n", 1)[0]
        except OSError:
            return None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server by its PID (``kill=True``: SIGKILL, like a crash)."""
        if self.proc is not None:
            stop_process(self.proc, kill=kill)

    def restart(self) -> None:
        """Stop and start again on the same port; the data is gone."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

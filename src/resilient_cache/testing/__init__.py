"""Helpers for testing code that uses resilient-cache, without sleeping or mocking.

* :class:`ManualClock`: a monotonic clock you move by hand; pass it as
  ``MemoryCache(clock=...)`` to test expiry in microseconds.
* :class:`~resilient_cache.MemoryCache`: a real in-process cache with Redis semantics,
  the fake to use in unit tests of code that takes a ``CacheProtocol``.
* :class:`ScriptedCache`: wraps any cache and fails (or hangs) the calls you script, to
  test how code, or a resilience layer, reacts to CONNECTION, TIMEOUT, READONLY...
* :class:`RedisServer`: a private, throw-away ``redis-server`` process on a free loopback
  port, for tests that want the real thing (a real server is cheap; never mock the network).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from resilient_cache.adapters.memory import MemoryCache
from resilient_cache.domain.errors import CacheError, ErrorCode
from resilient_cache.domain.near_cache import ManualInvalidations
from resilient_cache.domain.protocol import CacheProtocol
from resilient_cache.domain.result import Failure, Result
from resilient_cache.layers.base import Call, Layer

__all__ = [
    "LOOPBACK",
    "ManualClock",
    "ManualInvalidations",
    "MemoryCache",
    "RedisServer",
    "ScriptedCache",
    "ServerProcess",
    "ServerStartError",
    "Started",
    "find_server",
    "free_port",
    "server_version",
]

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True)
class _Fault:
    code: ErrorCode | None  # None: hang until cancelled
    operations: frozenset[str] | None
    maybe_applied: bool


class ScriptedCache(Layer):
    """A cache that fails the calls you script, in front of a real one (MemoryCache).

    >>> cache = ScriptedCache()
    >>> cache.fail(ErrorCode.CONNECTION, times=2)
    >>> # the next two calls return Failure(CONNECTION); the third reaches the MemoryCache

    ``calls`` lists the operations that reached the inner cache; ``attempts`` lists every
    operation asked of this one, failed or not.
    """

    name = "scripted"

    def __init__(self, inner: CacheProtocol | None = None) -> None:
        super().__init__(inner if inner is not None else MemoryCache())
        self._script: deque[_Fault] = deque()
        self._always: _Fault | None = None
        self.calls: list[str] = []
        self.attempts: list[str] = []

    def fail(
        self,
        code: ErrorCode,
        *,
        times: int = 1,
        operations: Iterable[str] | None = None,
        maybe_applied: bool = False,
    ) -> None:
        """Fail the next ``times`` calls (of ``operations`` only, if given) with ``code``."""
        fault = _Fault(code, frozenset(operations) if operations else None, maybe_applied)
        self._script.extend([fault] * times)

    def fail_always(self, code: ErrorCode, *, maybe_applied: bool = False) -> None:
        """Fail every call with ``code`` until :meth:`heal`."""
        self._always = _Fault(code, None, maybe_applied)

    def hang(self, *, times: int = 1) -> None:
        """Make the next ``times`` calls wait until they are cancelled (a blackholed Redis)."""
        self._script.extend([_Fault(None, None, False)] * times)

    def hang_always(self) -> None:
        """Make every call wait until cancelled, until :meth:`heal`."""
        self._always = _Fault(None, None, False)

    def heal(self) -> None:
        """Forget the script: every call reaches the inner cache again."""
        self._script.clear()
        self._always = None

    def _next_fault(self, operation: str) -> _Fault | None:
        if self._always is not None:
            return self._always
        for fault in self._script:
            if fault.operations is None or operation in fault.operations:
                self._script.remove(fault)
                return fault
        return None

    async def _around(
        self, operation: str, key: str | None, call: Call[T]
    ) -> Result[T, CacheError]:
        self.attempts.append(operation)
        fault = self._next_fault(operation)
        if fault is None:
            self.calls.append(operation)
            return await call()
        if fault.code is None:
            await asyncio.Event().wait()  # until cancelled
        assert fault.code is not None
        return Failure(
            CacheError.of(
                fault.code,
                "scripted fault",
                operation=operation,
                key=key,
                maybe_applied=fault.maybe_applied,
            )
        )


def find_server(name: str, env_var: str, *, tools_from: Path | None = None) -> str | None:
    """A server executable: the one ``env_var`` names (used as it is: a wrong one fails at
    start-up, saying so), else ``name`` on ``PATH``, else, with ``tools_from``, in the
    ``.tools/bin`` of that directory or of one of its parents (a checkout's, where ``make``
    installs Toxiproxy)."""
    named = os.environ.get(env_var)
    if named:
        return named
    found = shutil.which(name)
    if found is not None or tools_from is None:
        return found
    for parent in (tools_from, *tools_from.parents):
        candidate = parent / ".tools" / "bin" / name
        if candidate.exists():
            return str(candidate)
    return None


@functools.cache
def server_version(binary: str) -> tuple[int, ...]:
    """The version of a ``redis-server`` (or ``valkey-server``) binary, from ``--version``:
    ``(7, 0, 15)``; Valkey's own number (``(8, 0, 1)``). ``()`` when it does not say."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"\bv=(\d+(?:\.\d+)*)", out)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


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


class Started(ABC):
    """Something a test starts and must clean up: a context manager over :meth:`start` and
    :meth:`cleanup` (a server, a whole deployment of them)."""

    @abstractmethod
    def start(self) -> None:
        """Start it and wait until it is ready."""

    @abstractmethod
    def cleanup(self) -> None:
        """Stop everything it started, by PID, and remove its files."""

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


class ServerStartError(RuntimeError):
    """A server process could not start: its binary cannot run, it exited, or it never
    answered. ``str()`` carries its whole log; :meth:`summary` is one line."""

    def __init__(self, binary: str, reason: str, log: str) -> None:
        super().__init__(f"{binary} {reason}:\n{log}" if log else f"{binary} {reason}")
        self.binary = binary
        self.reason = reason
        self.log = log

    def __reduce__(self) -> tuple[type[ServerStartError], tuple[str, str, str]]:
        return (type(self), (self.binary, self.reason, self.log))  # picklable

    def summary(self) -> str:
        """``<binary> <reason>``, and the log's last line if it has one."""
        last = next((line for line in reversed(self.log.splitlines()) if line.strip()), "")
        return f"{self.binary} {self.reason}" + (f" ({last.strip()[:200]})" if last else "")


class ServerProcess(Started):
    """A server of the tests' own: free loopback port, private directory, stopped by PID.

    Subclasses give the command line and how to tell that the server answers. Use one as a
    context manager, or :meth:`start` then :meth:`cleanup`.

    Args:
        binary: the server's executable.
        extra_args: more command-line arguments.
    """

    name: str = "server"
    """Names the temporary directory and the log file."""

    def __init__(self, binary: str, *extra_args: str) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"resilient-cache-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.dir / f"{self.name}.log"

    @abstractmethod
    def _argv(self) -> list[str]:
        """The command line that starts the server in the foreground."""

    @abstractmethod
    def _answers(self) -> bool:
        """Whether the server answers requests yet."""

    def start(self, ready_timeout: float = 10.0) -> None:
        """Start the server and wait until it answers.

        Raises:
            ServerStartError: the binary cannot run, exited, or never answered.
        """
        with self.log_path.open("ab") as log:
            try:
                self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT)
            except OSError as exc:  # not there, not executable, not a program
                raise ServerStartError(self.binary, f"cannot run ({exc.strerror})", "") from None
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop(kill=True)
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ServerStartError(self.binary, f"exited with code {code}", self._log())
            if self._answers():
                return
            time.sleep(0.02)
        raise ServerStartError(
            self.binary, f"did not answer on port {self.port} in {timeout}s", self._log()
        )

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server by its PID (``kill=True``: SIGKILL, like a crash)."""
        if self.proc is not None:
            stop_process(self.proc, kill=kill)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(ServerProcess):
    """A private ``redis-server``: free loopback port, own temp directory, no persistence.

    ``restart()`` brings it back on the same port (empty); ``stop(kill=True)`` is a crash.
    Use it as a context manager, or call :meth:`cleanup` to stop it and remove its files::

        with RedisServer() as server:
            cache = RedisAdapter.from_url(server.url)

    Args:
        binary: the ``redis-server`` executable.
        extra_args: more ``--option value`` arguments (e.g. ``"--requirepass", "pw"``).
    """

    name = "redis"

    def __init__(self, binary: str = "redis-server", *extra_args: str) -> None:
        super().__init__(binary, *extra_args)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        """The server's unix socket (``unix://`` URLs)."""
        return self.dir / "redis.sock"

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--unixsocket", str(self.socket_path),
            # DEBUG (SLEEP, for the fault tests) is off by default since Redis 7.0, and 6.2
            # refuses the option that turns it on
            *(("--enable-debug-command", "local") if server_version(self.binary) >= (7,) else ()),
            *self.extra_args,
        ]  # fmt: skip

    def _answers(self) -> bool:
        return self.command("PING") in ("+PONG", "-NOAUTH Authentication required.")

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

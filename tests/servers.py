"""Real servers for the tests: each on a free loopback port, in a private directory.

Never a fixed or default port, never a non-loopback address; stopped by PID afterwards.
With ``CI=true`` a missing server binary fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


def require_binary(name: str, env_var: str) -> str:
    """Return the path of a server binary, or skip (fail under ``CI=true``) without it."""
    path = os.environ.get(env_var) or shutil.which(name)
    if path is None:
        tools = Path(__file__).resolve().parent.parent / ".tools" / "bin" / name
        path = str(tools) if tools.exists() else None
    if path is None:
        message = f"{name} not found (set {env_var} or run `make test` to install it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """Stop a server by its PID: SIGTERM (or SIGKILL), then wait; SIGKILL if it lingers."""
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
    """A private redis-server process; ``restart()`` brings it back on the same port."""

    def __init__(self, binary: str, *extra_args: str) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="resilient-cache-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.dir / "redis.sock"

    def start(self) -> None:
        log = (self.dir / "redis.log").open("ab")
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
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop(kill=True)
            raise

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")
            if self.command("PING") in ("+PONG", "-NOAUTH Authentication required."):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not become ready")

    def command(self, *args: str) -> str | None:
        """Send one command over a raw socket; return the first reply line, or None."""
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
        if self.proc is not None:
            stop_process(self.proc, kill=kill)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

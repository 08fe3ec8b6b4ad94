"""Run examples/quickstart.py against a private, throw-away redis-server.

The server listens on a free loopback port (never 6379), keeps no data on disk, lives in a
temporary directory and is always stopped by its PID afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 5.0


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (never Redis' default 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port != 6379:
            return port


def pong(port: int) -> bool:
    """True if a server on ``port`` answers an inline ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start redis-server in the foreground, logging to ``workdir``; wait until it answers."""
    with (workdir / "redis.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", LOOPBACK,
                "--dir", str(workdir),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None or pong(port):
            break
        time.sleep(0.05)
    if proc.poll() is not None or not pong(port):
        stop(proc)
        log_text = (workdir / "redis.log").read_text(errors="replace")
        raise RuntimeError(f"redis-server did not become ready on port {port}:\n{log_text}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process by its PID: SIGTERM, wait, SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: run scripts/install-deps.sh", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="resilient-cache-demo-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        proc = start_redis(binary, port, workdir)
        env = {**os.environ, "REDIS_URL": f"redis://{LOOPBACK}:{port}/0"}
        result = subprocess.run(
            [sys.executable, str(QUICKSTART)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
        return result.returncode
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""The resilient-cache command: a short demo run end to end, ping and info."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from resilient_cache import ErrorCode, Failure, RedisAdapter, Success
from resilient_cache.cli.demo.faults import SignalFaults
from resilient_cache.testing import LOOPBACK, free_port
from tests.servers import RedisServer
from tests.topology import RedisClusterProcesses, private_cluster, redis_cli_binary

# the fixtures of tests/topology.py, imported rather than a pytest_plugins entry
__all__ = ["private_cluster", "redis_cli_binary"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_cache", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.slow
def test_a_short_demo_keeps_the_promise_and_writes_its_report(
    tmp_path: Path, redis_binary: str, toxiproxy_binary: str
) -> None:
    port = free_port()
    report = tmp_path / "report.html"
    scrapes: list[bytes] = []
    done = threading.Event()

    def scrape() -> None:  # Prometheus' part: read /metrics while the demo runs
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=1) as r:
                    scrapes.append(r.read())
            except OSError:
                pass
            time.sleep(0.5)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        result = run_cli(
            "demo", "--duration", "15", "--metrics-port", str(port), "--report", str(report),
            env={"PATH": f"{Path(redis_binary).parent}:{Path(toxiproxy_binary).parent}:"
                         f"{os.environ['PATH']}"},
        )  # fmt: skip
    finally:
        done.set()
        scraper.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the fail-open promise held in every phase" in result.stdout
    assert "requests failed: 0" in result.stdout
    text = report.read_text()
    for phase in ("healthy", "latency above the deadline", "blackhole", "Redis killed",
                  "Redis back", "healthy again"):  # fmt: skip
        assert phase in text
    assert "<svg" in text
    assert any(b'resilient_cache_gets_total{cache="demo",result="hit"}' in s for s in scrapes)
    events = [json.loads(line) for line in report.with_suffix(".log").read_text().splitlines()]
    assert "resilient_cache.circuit_opened" in {e["event"] for e in events}


async def test_signal_faults_pause_kill_and_restore_a_real_server(redis_binary: str) -> None:
    server = RedisServer(redis_binary)
    server.start()
    faults = SignalFaults(server)
    cache = RedisAdapter.from_url(faults.url, operation_timeout=0.2)
    try:
        assert await cache.ping() == Success(True)
        faults.blackhole()
        result = await cache.ping()
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.TIMEOUT
        faults.clear()
        assert await cache.ping() == Success(True)
        faults.kill()
        result = await cache.ping()
        assert isinstance(result, Failure)
        assert result.error.code is ErrorCode.CONNECTION
        faults.restore()
        for _ in range(3):  # the pooled connection died with the server
            if await cache.ping() == Success(True):
                break
            await asyncio.sleep(0.05)
        assert await cache.ping() == Success(True)
    finally:
        await cache.aclose()
        faults.close()


def test_ping_is_a_container_probe(redis_server: RedisServer) -> None:
    ok = run_cli("ping", "--redis-url", redis_server.url)
    assert ok.returncode == 0
    assert ok.stdout.startswith("OK redis://127.0.0.1:")
    started = time.monotonic()
    down = run_cli("ping", "--redis-url", f"redis://:pw@{LOOPBACK}:{free_port()}/0")
    assert time.monotonic() - started < 10  # interpreter start included
    assert down.returncode == 1
    assert down.stdout.startswith("FAIL redis://:***@127.0.0.1:")
    assert "connection" in down.stdout
    assert "pw@" not in down.stdout


@pytest.mark.slow
def test_ping_asks_the_configured_topology(private_cluster: RedisClusterProcesses) -> None:
    """With CACHE_TOPOLOGY=cluster, ping and info ask the cluster's nodes (not
    CACHE_REDIS_URL)."""
    redis_cluster = private_cluster
    nodes = ",".join(f"{host}:{port}" for host, port in redis_cluster.startup_nodes)
    env = {"CACHE_TOPOLOGY": "cluster", "CACHE_CLUSTER__NODES": nodes}
    result = run_cli("ping", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK RedisClusterAdapter("), result.stdout
    info = run_cli("info", env=env)  # the server as a node of the cluster answers
    assert info.returncode == 0, info.stdout + info.stderr
    server = json.loads(info.stdout)["server"]
    assert server["topology"] == "cluster" and server["mode"] == "cluster", server
    assert server["reachable"] is True and server["version"] and server["role"] == "master"
    redis_cluster.kill(redis_cluster.primaries()[0])  # one primary gone: ping says so
    down = run_cli("ping", env=env)
    assert down.returncode == 1, down.stdout
    assert down.stdout.startswith("FAIL RedisClusterAdapter("), down.stdout


def test_info_shows_settings_without_secrets_and_the_stack() -> None:
    result = run_cli(
        "info", "--redis-url", f"redis://:hunter2@{LOOPBACK}:{free_port()}/1",
        env={"CACHE_REDIS__PASSWORD": "s3cret", "CACHE_NAMESPACE": "shop"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # nothing listens there
    shown = json.loads(result.stdout)
    assert shown["layers"] == [
        "metrics", "tracing", "logging", "retry", "circuit_breaker", "RedisAdapter"
    ]  # fmt: skip
    assert shown["settings"]["namespace"] == "shop"
    assert shown["settings"]["redis_url"].startswith("redis://:***@127.0.0.1:")
    assert shown["server"]["reachable"] is False
    assert shown["server"]["error"].startswith("connection: ")
    assert "hunter2" not in result.stdout + result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_info_shows_the_server_it_reached(redis_server: RedisServer) -> None:
    """Before: the output was the same for a live Redis and a port where nothing listens."""
    result = run_cli("info", "--redis-url", redis_server.url)
    assert result.returncode == 0, result.stderr
    server = json.loads(result.stdout)["server"]
    version = subprocess.run([redis_server.binary, "--version"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert server["reachable"] is True
    assert f"v={server['version']} " in version
    assert server["role"] == "master" and server["mode"] == "standalone"
    assert int(server["connected_clients"]) >= 1
    assert server["topology"] == "standalone" and server["used_memory"]


def test_version() -> None:
    from resilient_cache import __version__  # noqa: PLC0415

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"resilient-cache {__version__}\n"


def test_an_error_names_the_option_the_user_typed() -> None:
    """Before: ``ping --redis-url http://x`` blamed CACHE_REDIS_URL, which was not set."""
    result = run_cli("ping", "--redis-url", "http://x")
    assert result.returncode == 2
    assert result.stderr.startswith("resilient-cache: configuration error: --redis-url: ")
    assert "CACHE_REDIS_URL" not in result.stderr
    from_env = run_cli("ping", env={"CACHE_REDIS_URL": "http://x"})
    assert "CACHE_REDIS_URL: " in from_env.stderr


def test_results_on_stdout_library_events_on_stderr(tmp_path: Path) -> None:
    """Before: structlog printed the library's events on stdout, among the results."""
    source = _jsonl(tmp_path / "items.jsonl",
                    [json.dumps({"key": f"k{i}", "value": "v"}) for i in range(30)])  # fmt: skip
    result = run_cli("warm", "--from", str(source), "--batch-size", "10",
                     "--redis-url", f"redis://{LOOPBACK}:{free_port()}/0")  # fmt: skip
    assert result.returncode == 1
    assert "resilient_cache." not in result.stdout
    assert "resilient_cache.call_failed" in result.stderr
    assert all(line.startswith("resilient-cache: ") for line in result.stderr.splitlines())


def test_a_configuration_error_exits_2_naming_the_variable() -> None:
    result = run_cli("info", env={"CACHE_DEADLINE": "-1"})
    assert result.returncode == 2
    assert "CACHE_DEADLINE" in result.stderr


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "term"]
)
def test_a_stopped_demo_leaves_no_process_behind(
    tmp_path: Path, redis_binary: str, toxiproxy_binary: str, signum: int, exit_code: int
) -> None:
    def children(pid: int) -> dict[int, str]:
        """The processes ``pid`` started, by PID (not the machine's: other suites run too)."""
        found = subprocess.run(
            ["pgrep", "-l", "-P", str(pid)], capture_output=True, text=True, check=False
        )
        return {int(line.split()[0]): line.split()[1] for line in found.stdout.splitlines()}

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "resilient_cache", "demo", "--duration", "60",
         "--metrics-port", str(port), "--report", str(tmp_path / "r.html")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PATH": f"{Path(redis_binary).parent}:"
             f"{Path(toxiproxy_binary).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:  # running: its metrics answer
        try:
            urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the demo never served /metrics"
            time.sleep(0.2)
    started = children(demo.pid)
    assert sorted(started.values()) == ["redis-server", "toxiproxy-serve"], started
    demo.send_signal(signum)
    assert demo.wait(timeout=30) == exit_code
    assert [pid for pid in started if alive(pid)] == []  # stopped, not orphaned


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_warm_writes_good_lines_and_reports_bad_ones_by_number(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    source = _jsonl(tmp_path / "items.jsonl", [
        json.dumps({"key": "user:1", "value": "Ada"}),
        json.dumps({"key": "user:2", "value": {"name": "Grace", "id": 2}, "ttl": 60}),
        "not json, secret-pii-1",
        "",
        json.dumps({"key": "user:3"}),
        json.dumps(["key", "secret-pii-2"]),
        json.dumps({"key": "user:4", "value": "x", "ttl": -1}),
        json.dumps({"key": "user:5", "value": 5}),
    ])  # fmt: skip
    result = run_cli("warm", "--from", str(source), "--ttl", "300", "--batch-size", "2",
                     env={"CACHE_REDIS_URL": redis_server.url})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = "warm done: 3 written, 0 failed (in 0 batches), 0 skipped, 4 invalid lines"
    assert summary in result.stdout
    for number in (3, 5, 6, 7):
        assert f"line {number}: " in result.stderr
    assert "secret-pii" not in result.stdout + result.stderr

    async def stored() -> tuple[object, ...]:
        async with RedisAdapter.from_url(redis_server.url) as cache:
            return (await cache.get_many(["user:1", "user:2", "user:4", "user:5"]),
                    await cache.ttl("user:1"), await cache.ttl("user:2"))  # fmt: skip

    values, ttl_default, ttl_own = asyncio.run(stored())
    assert values == Success(
        {"user:1": "Ada", "user:2": '{"name":"Grace","id":2}', "user:4": None, "user:5": "5"}
    )
    assert ttl_default == Success(300)
    assert ttl_own == Success(60)


def test_warm_stops_early_with_exit_1_when_redis_is_down(tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "items.jsonl",
                    [json.dumps({"key": f"k{i}", "value": "v"}) for i in range(100)])  # fmt: skip
    result = run_cli("warm", "--from", str(source), "--batch-size", "10",
                     "--redis-url", f"redis://{LOOPBACK}:{free_port()}/0")  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "warm unavailable: 0 written" in result.stdout
    assert "last error: set_many: " in result.stdout
    # before: nothing said that most of the file was never read
    stopped = next(line for line in result.stdout.splitlines() if line.startswith("stopped"))
    read, unread = (
        int(n.replace(",", "")) for n in re.findall(r"[\d,]+(?= lines? not|\b of)", stopped)
    )
    assert read + unread == 100 and unread > 0, stopped


def test_warm_from_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    result = run_cli("warm", "--from", str(missing))
    assert result.returncode == 2
    assert f"cannot read {missing}: No such file or directory" in result.stderr


def test_warm_refuses_a_bad_option_with_exit_2(tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "items.jsonl", [])
    result = run_cli("warm", "--from", str(source), "--batch-size", "0")
    assert result.returncode == 2
    assert "--batch-size: must be >= 1" in result.stderr


@pytest.mark.parametrize("command", [["demo", "--duration", "2"], ["bench", "--quick"]])
def test_a_broken_redis_server_binary_is_a_one_line_error(
    tmp_path: Path, command: list[str]
) -> None:
    """Before: a RuntimeError traceback with the server's whole log."""
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR' >&2\nexit 3\n")
    broken.chmod(0o755)
    result = run_cli(*command, env={"RESILIENT_CACHE_REDIS_SERVER": str(broken)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith(f"{broken} exited with code 3 (FATAL CONFIG FILE ERROR)"), result.stderr


def test_the_bench_help_says_how_long_and_keeps_maintainer_options_out() -> None:
    result = run_cli("bench", "--help")
    assert "--docs" not in result.stdout
    assert "20-40 s" in result.stdout


def test_a_demo_on_your_redis_keeps_to_its_namespace_and_cleans_up(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Before: it wrote 48 keys like ``user:2`` into the user's Redis, left them, and
    served the user's own ``user:N`` keys as hits."""
    import redis as redis_py  # noqa: PLC0415

    client = redis_py.Redis.from_url(redis_server.url)
    client.flushdb()  # the session's server: other tests' keys
    client.set("user:2", "the user's own")
    try:
        result = run_cli("demo", "--redis-url", redis_server.url, "--duration", "3",
                         "--metrics-port", "0", "--report", str(tmp_path / "r.html"))  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(client.keys("*")) == [b"user:2"]  # ours removed, theirs untouched
        assert client.get("user:2") == b"the user's own"
        assert "your Redis" in result.stdout
    finally:
        client.close()


def test_a_demo_on_a_dead_redis_says_so(tmp_path: Path) -> None:
    """Before: it called the one phase "healthy" and the promise "held in every phase"."""
    result = run_cli("demo", "--redis-url", f"redis://{LOOPBACK}:{free_port()}/0",
                     "--duration", "3", "--metrics-port", "0",
                     "--report", str(tmp_path / "r.html"))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr  # every request answered
    assert "verdict: the fail-open promise held, but your Redis never answered" in result.stdout
    assert "healthy" not in result.stdout


def test_the_demo_names_a_bad_redis_url_as_typed(tmp_path: Path) -> None:
    """Before: a pydantic ValidationError traceback."""
    result = run_cli("demo", "--redis-url", "http://x", "--report", str(tmp_path / "r.html"))
    assert result.returncode == 2
    assert result.stderr.startswith("resilient-cache: configuration error: --redis-url: ")
    assert "Traceback" not in result.stderr


def test_warm_from_a_pipe_says_what_it_can_of_what_it_did_not_read(tmp_path: Path) -> None:
    from resilient_cache.cli import _JsonLines  # noqa: PLC0415

    fifo = tmp_path / "items.fifo"
    os.mkfifo(fifo)
    assert _JsonLines(fifo).not_read() == "the rest not read"  # no seek on a pipe


def test_a_server_start_error_survives_pickling() -> None:
    import pickle  # noqa: PLC0415

    from resilient_cache.testing import ServerStartError  # noqa: PLC0415

    error = pickle.loads(pickle.dumps(ServerStartError("redis-server", "exited with code 1", "x")))
    assert error.summary() == "redis-server exited with code 1 (x)"

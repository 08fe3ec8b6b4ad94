"""``resilient-cache bench`` stays runnable: a --quick smoke run (no timing is asserted).

The benchmarks live in the package (resilient_cache.cli.bench), so the smoke run starts from an
empty directory: nothing of a source checkout is needed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_cache.cli import main as cli_main
from resilient_cache.cli.bench.__main__ import main as bench_main
from tests.fresh_python import python_output


def run_bench(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_cache", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_the_quick_benchmark_runs_and_writes_its_results(tmp_path: Path, redis_binary: str) -> None:
    results = tmp_path / "out" / "results.json"
    run = run_bench(
        "--quick", "--json", str(results),
        cwd=tmp_path,
        env={"PATH": f"{Path(redis_binary).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(results.read_text())
    assert data["mode"] == "quick"
    assert data["command"] == f"resilient-cache bench --quick --json {results}"
    for client in ("redis-py", "adapter", "stack", "stack+coalesce"):
        assert data["clients"][client]["status"] == "ok", data["clients"][client]
    columns = {"get", "set", "get_x1", "get_x10", "get_x50", "get_x200", "get_many", "set_many",
               "get_many_big", "set_many_big"}  # fmt: skip
    assert data["event_loops"] == ["asyncio", "uvloop"]
    assert set(data["results"]) == columns | {f"{column}@uvloop" for column in columns}
    for case in data["results"].values():
        stack = case["clients"]["stack"]
        assert stack["median"] > 0
        assert stack["ratio"] > 0
    for big in ("get_many_big", "set_many_big", "set_many_big@uvloop"):
        assert data["results"][big]["clients"]["stack"]["stall_us"] > 0  # the loop was watched
    assert data["clients"]["redis-benchmark"]["status"] == "ok", data["clients"]
    assert data["results"]["get_x50"]["clients"]["redis-benchmark"]["median"] > 0
    assert data["breaker_open_us"]
    assert data["memory"]
    goals = {target["goal"]: target for target in data["targets"]}
    breaker = goals["a call while the breaker is open <= 0.1x a raw sequential GET"]
    assert breaker["status"] in ("met", "missed") and "x (" in breaker["detail"]  # a ratio
    imported = goals["import resilient_cache <= 1.5x import redis.asyncio"]
    assert imported["status"] in ("met", "missed") and " ms against " in imported["detail"]
    for loop in ("", " [uvloop]"):  # every target judged on both event loops
        for goal in (
            "stack at 50 coroutines >= 1.6x redis-py throughput",
            "stack+coalesce at 50 coroutines >= 5x redis-py",
            "stack+coalesce at 50 coroutines >= 1.0x redis-benchmark -c 50",
            "stack's longest loop stall in a big batch <= 50 ms",
        ):
            assert goals[goal + loop]["status"] in ("met", "missed"), goals[goal + loop]
    assert (results.parent / "events.log").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .bench/, no docs


@pytest.mark.parametrize("configured", [True, False], ids=["variable", "path"])
def test_without_redis_server_bench_says_so_and_exits_1(tmp_path: Path, configured: bool) -> None:
    no_redis = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "redis-server").exists()
    )
    missing = str(tmp_path / "no-such-redis-server")
    env = {"PATH": no_redis, "RESILIENT_CACHE_REDIS_SERVER": missing if configured else ""}
    run = run_bench("--quick", "--json", str(tmp_path / "results.json"), cwd=tmp_path, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("resilient-cache bench: ")
    reason = (
        f"RESILIENT_CACHE_REDIS_SERVER={missing}: " if configured else "no redis-server on PATH"
    )
    assert reason in run.stderr
    assert "install" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_docs_needs_a_directory_with_the_figures_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["bench", "--docs", str(tmp_path)])
    assert exited.value.code == 2
    assert f"--docs {tmp_path}: no performance.md" in capsys.readouterr().err
    (tmp_path / "performance.md").write_text("# Performance\n")
    with pytest.raises(SystemExit) as exited:
        cli_main(["bench", "--docs", str(tmp_path)])
    assert exited.value.code == 2
    assert "has no <!-- bench:start -->" in capsys.readouterr().err


def test_the_command_takes_the_options_of_the_module_and_says_what_it_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "{demo,ping,info,bench,warm}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["bench", "--help"])
    command = capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_main(["--help"])
    module = capsys.readouterr().out
    assert command.startswith("usage: resilient-cache bench [-h] [--quick] [--rounds N]")
    # the same options, but --docs: the maintainers' is kept out of the user's help
    assert set(re.findall(r"--[a-z]+", command)) == set(re.findall(r"--[a-z]+", module)) - {
        "--docs"
    }
    for needed in ("redis-server", "RESILIENT_CACHE_REDIS_SERVER", "'resilient-cache[bench]'"):
        assert needed in command
        assert needed in module


def test_other_commands_do_not_import_the_benchmarks() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from resilient_cache.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['info', '--redis-url', 'redis://127.0.0.1:1/0']) == 1\n"
        "print(sorted(m for m in sys.modules if m.startswith('resilient_cache.cli.bench')))\n"
    )
    assert python_output(code) == "[]"

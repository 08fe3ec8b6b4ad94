"""The benchmark harness stays runnable: a --quick smoke run (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_quick_benchmark_runs_and_writes_its_results(tmp_path: Path, redis_binary: str) -> None:
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "PATH": f"{Path(redis_binary).parent}:{os.environ['PATH']}"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(results.read_text())
    assert data["mode"] == "quick"
    for client in ("redis-py", "adapter", "stack", "stack+coalesce"):
        assert data["clients"][client]["status"] == "ok", data["clients"][client]
    assert set(data["results"]) >= {"get", "set", "get_x50", "get_x200", "get_many", "set_many"}
    for case in data["results"].values():
        stack = case["clients"]["stack"]
        assert stack["median"] > 0
        assert stack["ratio"] > 0
    assert data["breaker_open_us"]
    assert data["memory"]

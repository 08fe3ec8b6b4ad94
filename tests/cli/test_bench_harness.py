"""The benchmark's own instruments, on fakes: the loop watch, the loop columns, the targets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from resilient_cache.cli.bench import harness, report
from resilient_cache.cli.bench.harness import LoopWatch, Outcome, Sample


async def test_the_loop_watch_sees_how_long_the_loop_was_held() -> None:
    async with LoopWatch() as watch:
        await asyncio.sleep(0.01)
        time.sleep(0.06)  # noqa: ASYNC251 - a batch that never gives the loop a turn
        await asyncio.sleep(0.01)
    assert watch.longest >= 0.05


async def test_the_loop_watch_sees_a_stall_that_ends_the_block() -> None:
    async with LoopWatch() as watch:
        await asyncio.sleep(0.01)
        time.sleep(0.06)  # noqa: ASYNC251 - the last call's decoding, say
    assert watch.longest >= 0.05


def outcome_with(values: dict[str, dict[str, float]], *, stall_us: float = 1000.0) -> Outcome:
    """An outcome whose every round of each listed column and client gave ``value``."""
    outcome = Outcome(harness.QUICK)
    for measure_id, clients in values.items():
        outcome.samples[measure_id] = {
            name: [Sample(value, 10, 0, stall_us=stall_us if "big" in measure_id else None)]
            for name, value in clients.items()
        }
    return outcome


def goals(outcome: Outcome) -> dict[str, report.Target]:
    return {t.goal: t for t in report.targets(outcome, report.columns(outcome))}


def test_the_c_client_and_the_ratios_are_judged_in_the_same_run() -> None:
    clients = {"redis-py": 10_000, "stack": 17_000, "stack+coalesce": 52_000}
    outcome = outcome_with({"get_x50": {**clients, "redis-benchmark": 50_000}})
    found = goals(outcome)
    assert found["stack at 50 coroutines >= 1.6x redis-py throughput"].status == "met"
    assert found["stack+coalesce at 50 coroutines >= 5x redis-py"].status == "met"
    c_client = found["stack+coalesce at 50 coroutines >= 1.0x redis-benchmark -c 50"]
    assert (c_client.status, c_client.detail.split()[0]) == ("met", "1.04x")
    outcome.samples["get_x50"]["redis-benchmark"] = [Sample(60_000, 10, 0)]
    c_client = goals(outcome)["stack+coalesce at 50 coroutines >= 1.0x redis-benchmark -c 50"]
    assert (c_client.status, c_client.detail.split()[0]) == ("missed", "0.87x")


def test_a_long_stall_in_a_big_batch_misses_its_target() -> None:
    columns = {"get_many_big": {"redis-py": 100.0, "stack": 100.0}}
    stall = "stack's longest loop stall in a big batch <= 50 ms"
    assert goals(outcome_with(columns, stall_us=20_000))[stall].status == "met"
    assert goals(outcome_with(columns, stall_us=80_000))[stall].status == "missed"


def test_another_event_loop_gets_its_own_columns_and_targets() -> None:
    outcome = outcome_with({"get_x50": {"redis-py": 10_000, "stack": 12_000}})
    other = outcome_with({"get_x50": {"redis-py": 10_000, "stack": 17_000}})
    other.breaker_open_us["stack"] = [5.0]
    harness.merge(outcome, other, "uvloop")
    assert outcome.loops == ["asyncio", "uvloop"]
    table = report.columns(outcome)
    titles = [column.measure.title for column in table]
    assert "get, 50 coroutines" in titles and "get, 50 coroutines [uvloop]" in titles
    found = goals(outcome)
    assert found["stack at 50 coroutines >= 1.6x redis-py throughput"].status == "missed"
    assert found["stack at 50 coroutines >= 1.6x redis-py throughput [uvloop]"].status == "met"
    assert outcome.breaker_open_us == {"stack@uvloop": [5.0]}


def fake_tool(tmp_path: Path, script: str) -> str:
    path = tmp_path / "redis-benchmark"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


async def test_the_c_client_figure_is_read_from_its_csv(tmp_path: Path) -> None:
    tool = fake_tool(
        tmp_path, 'echo \'"test","rps","avg_latency_ms"\'; echo \'"GET","26178.01","1.0"\''
    )
    sample = await harness.c_benchmark(tool, "redis://127.0.0.1:1/0", harness.QUICK, 50)
    assert sample.value == 26178.01


async def test_a_failing_c_client_is_a_clear_error(tmp_path: Path) -> None:
    tool = fake_tool(tmp_path, "echo 'Could not connect' >&2; exit 1")
    with pytest.raises(RuntimeError, match="exited with 1: Could not connect"):
        await harness.c_benchmark(tool, "redis://127.0.0.1:1/0", harness.QUICK, 50)
    silent = fake_tool(tmp_path, "echo nothing useful")
    with pytest.raises(RuntimeError, match="gave no GET figure"):
        await harness.c_benchmark(silent, "redis://127.0.0.1:1/0", harness.QUICK, 50)

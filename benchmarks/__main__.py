"""``python -m benchmarks``: run the benchmarks, print the table, write the results.

A full run (``make bench``) writes ``.bench/results.json``, ``docs/performance-throughput.svg``
and the figures section of ``docs/performance.md``. ``--quick`` is a smoke run of a few
seconds that writes ``.bench/results-quick.json`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import structlog

from benchmarks import harness, report, system
from benchmarks.svg import throughput_chart
from resilient_cache.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "performance-throughput.svg"
OUT = ROOT / ".bench"


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="resilient-cache against raw redis-py, cashews and aiocache.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of a few seconds; touches no docs"
    )
    parser.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds (default 5)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="where to write the results")
    parser.add_argument(
        "--no-docs", action="store_true", help="do not rewrite docs/performance.md and the SVG"
    )
    arguments = parser.parse_args(argv)
    if arguments.rounds is not None and arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    return arguments


def _configure_logging(events: TextIO) -> None:
    """What an application does: INFO and above, here to a file, loggers cached."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=events),
        cache_logger_on_first_use=True,
    )


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    plan = harness.QUICK if arguments.quick else harness.FULL
    if arguments.rounds is not None:
        plan = replace(plan, rounds=arguments.rounds)
    binary = os.environ.get("RESILIENT_CACHE_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: run scripts/install-deps.sh", file=sys.stderr)
        return 1
    OUT.mkdir(exist_ok=True)
    json_path = arguments.json or OUT / (
        "results-quick.json" if arguments.quick else "results.json"
    )
    command = (
        "make bench"
        if argv is None and len(sys.argv) == 1
        else " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    )

    load_start = system.load_average()
    print(
        f"benchmarks: {plan.rounds} round(s){' (quick)' if arguments.quick else ''}",
        file=sys.stderr,
    )
    with (OUT / "events.log").open("w", encoding="utf-8") as events, RedisServer(binary) as server:
        _configure_logging(events)
        outcome = asyncio.run(harness.run(server.url, plan))
    info: dict[str, Any] = {
        "date": system.now(),
        "command": command,
        "mode": "quick" if arguments.quick else "full",
        "machine": system.machine(),
        "versions": system.versions(binary),
        "load_average": {"start": load_start, "end": system.load_average()},
    }

    table = report.columns(outcome)
    found = report.targets(outcome, table)
    print()
    print(report.text_table(outcome, table))
    print()
    for line in report.extras(outcome, table):
        print(line)
    for name, client in outcome.clients.items():
        if client["status"] != "ok":
            print(f"{name}: n/a ({client['reason']})")
    print()
    for target in found:
        print(f"[{target.status:^6}] {target.goal}: {target.detail}")
    for note in report.grouped_notes(outcome.notes):
        print(f"note: {note}")
    machine = info["machine"]
    print(
        f"\n{machine['nproc']} CPUs ({machine['cpu_model']}), load average {load_start} -> "
        f"{info['load_average']['end']}; {outcome.seconds:.0f} s"
    )

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(report.as_json(outcome, table, found, info), encoding="utf-8")
    print(f"results: {json_path}")
    if not arguments.quick and not arguments.no_docs:
        versions = info["versions"]
        subtitle = (
            f"median of {plan.rounds} rounds; {machine['nproc']} CPUs, Python "
            f"{versions['python']}, redis-py {versions['redis']}; {info['date'][:10]}"
        )
        CHART.write_text(throughput_chart(table, list(outcome.clients), subtitle), "utf-8")
        print(f"chart:   {CHART.relative_to(ROOT)}")
        if report.update_doc(DOC, report.markdown(outcome, table, found, info)):
            print(f"doc:     {DOC.relative_to(ROOT)}")
        else:
            print(f"doc:     {DOC.relative_to(ROOT)} has no {report.DOC_START} marker: not updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m resilient_cache.cli.bench`` (also ``resilient-cache bench``): run the benchmarks.

It prints the table and writes the results as JSON: to ``--json PATH``, by default to
``.bench/results.json`` (``.bench/results-quick.json`` with ``--quick``) under the current
directory, the run's structlog events to ``events.log`` beside them. ``--docs DIR`` also
redraws ``DIR/performance-throughput.svg`` and rewrites the figures section of
``DIR/performance.md``; ``make bench`` passes ``--docs docs``. ``--quick`` is a smoke run of a
few seconds whose figures mean nothing, so it touches no docs, even with ``--docs``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import structlog

from resilient_cache.cli.bench import harness, report, system
from resilient_cache.cli.bench.svg import throughput_chart
from resilient_cache.testing import RedisServer, ServerStartError, find_server

PROG = "python -m resilient_cache.cli.bench"
REDIS_SERVER_VARIABLE = "RESILIENT_CACHE_REDIS_SERVER"
OUT = Path(".bench")
"""The default directory of the results, relative to the current directory."""
DOC_NAME = "performance.md"
CHART_NAME = "performance-throughput.svg"
EXIT_NO_REDIS = 1

DESCRIPTION = """\
Benchmarks: the adapter, the whole stack and the stack with read coalescing
against raw redis-py, cashews and aiocache, as ratios to raw redis-py in the same
run. A full run takes about 3 minutes; run it on a quiet machine.

Needs a redis-server binary, found on PATH or named by RESILIENT_CACHE_REDIS_SERVER.
The cashews and aiocache columns need the bench extra, without which they read n/a:
    pip install 'resilient-cache[bench]'
"""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line; ``resilient-cache bench`` (in resilient_cache.cli) has the same options."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of a few seconds; touches no docs"
    )
    parser.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds (default 5)")
    parser.add_argument(
        "--json", type=Path, metavar="PATH",
        help="where to write the results (default: .bench/results.json, or results-quick.json "
        "with --quick, under the current directory)",
    )  # fmt: skip
    parser.add_argument(
        "--docs", type=Path, metavar="DIR",
        help=f"also rewrite the figures section of DIR/{DOC_NAME} and DIR/{CHART_NAME} "
        "(a checkout's docs directory); ignored with --quick",
    )  # fmt: skip
    return parser


def _arguments(argv: Sequence[str], prog: str) -> argparse.Namespace:
    parser = build_parser(prog)
    arguments = parser.parse_args(argv)
    if arguments.rounds is not None and arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    if arguments.docs is not None and arguments.quick:  # e.g. make bench BENCH_ARGS=--quick
        print(f"{prog}: --quick touches no docs: --docs {arguments.docs} ignored", file=sys.stderr)
        arguments.docs = None
    if arguments.docs is not None:
        doc: Path = arguments.docs / DOC_NAME
        if not doc.is_file():
            parser.error(f"--docs {arguments.docs}: no {DOC_NAME} in that directory")
        text = doc.read_text(encoding="utf-8")
        start, end = text.find(report.DOC_START), text.find(report.DOC_END)
        if start < 0 or end < start:
            parser.error(f"{doc} has no {report.DOC_START} ... {report.DOC_END} section")
    return arguments


def redis_server_binary() -> str | None:
    """The redis-server to run: ``RESILIENT_CACHE_REDIS_SERVER`` if set, else the one on PATH;
    ``None`` if that is not an executable."""
    found = find_server("redis-server", REDIS_SERVER_VARIABLE)
    return shutil.which(found) if found is not None else None


def _run_on_each_loop(url: str, plan: harness.Plan) -> harness.Outcome:
    """The rounds on asyncio's event loop, then again on uvloop (common under uvicorn) as
    the ``[uvloop]`` columns, when it is installed."""
    outcome = asyncio.run(harness.run(url, plan))
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        outcome.notes.append("uvloop is not installed: no [uvloop] columns")
        return outcome
    print("benchmarks: the same rounds on uvloop", file=sys.stderr)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            other = runner.run(harness.run(url, plan, memory=False))
    except Exception as exc:  # keep what asyncio's loop measured
        outcome.notes.append(f"uvloop: the rounds failed ({type(exc).__name__}: {exc})")
        return outcome
    harness.merge(outcome, other, "uvloop")
    return outcome


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


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run the benchmarks with the command line ``argv``; return the exit code.

    ``prog`` names the command in the help and in the results' ``command``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    arguments = _arguments(args, prog)
    plan = harness.QUICK if arguments.quick else harness.FULL
    if arguments.rounds is not None:
        plan = replace(plan, rounds=arguments.rounds)
    binary = redis_server_binary()
    if binary is None:
        configured = os.environ.get(REDIS_SERVER_VARIABLE)
        where = (
            f"{REDIS_SERVER_VARIABLE}={configured}: no such executable"
            if configured
            else "no redis-server on PATH"
        )
        print(
            f"{prog}: {where}. The benchmarks start a private redis-server: install one "
            f"(Debian/Ubuntu: apt-get install redis-server; in a checkout: make deps), or set "
            f"{REDIS_SERVER_VARIABLE} to its path.",
            file=sys.stderr,
        )
        return EXIT_NO_REDIS
    json_path: Path = arguments.json or OUT / (
        "results-quick.json" if arguments.quick else "results.json"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join([*shlex.split(prog), *args])

    load_start = system.load_average()
    print(
        f"benchmarks: {plan.rounds} round(s){' (quick)' if arguments.quick else ''}",
        file=sys.stderr,
    )
    events_path = json_path.parent / "events.log"
    try:
        with events_path.open("w", encoding="utf-8") as events, RedisServer(binary) as server:
            _configure_logging(events)
            outcome = _run_on_each_loop(server.url, plan)
    except ServerStartError as exc:  # a binary that does not run as a redis-server
        print(f"{prog}: {exc.summary()}", file=sys.stderr)
        return EXIT_NO_REDIS
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

    json_path.write_text(report.as_json(outcome, table, found, info), encoding="utf-8")
    print(f"results: {json_path}")
    if arguments.docs is not None:
        versions = info["versions"]
        subtitle = (
            f"median of {plan.rounds} rounds; {machine['nproc']} CPUs, Python "
            f"{versions['python']}, redis-py {versions['redis']}; {info['date'][:10]}"
        )
        chart = arguments.docs / CHART_NAME
        chart.write_text(throughput_chart(table, list(outcome.clients), subtitle), "utf-8")
        print(f"chart:   {chart}")
        doc = arguments.docs / DOC_NAME
        if report.update_doc(doc, report.markdown(outcome, table, found, info)):
            print(f"doc:     {doc}")
        else:
            print(f"doc:     {doc} has no {report.DOC_START} marker: not updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``resilient-cache`` command (also ``python -m resilient_cache``).

* ``resilient-cache demo``: fail-open under real faults, live, with a report at the end.
* ``resilient-cache ping``: a health check for container probes (exit code, one line).
* ``resilient-cache info``: the effective settings (secrets redacted) and the layer stack.
* ``resilient-cache bench``: the benchmarks, against raw redis-py and its peers
  (resilient_cache.bench; needs a ``redis-server`` binary).

Settings come from the ``CACHE_*`` environment variables; ``--redis-url`` overrides
``CACHE_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resilient_cache.adapters.redis_options import redact_url
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.result import Failure

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

BENCH_DESCRIPTION = """\
The adapter, the whole stack and the stack with read coalescing against raw
redis-py, cashews and aiocache, as ratios to raw redis-py in the same run. A full
run takes about 3 minutes; run it on a quiet machine.

Needs a redis-server binary, found on PATH or named by RESILIENT_CACHE_REDIS_SERVER.
The cashews and aiocache columns need the bench extra, without which they read n/a:
    pip install 'resilient-cache[bench]'
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-cache", description="An async Redis cache that fails open."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fail-open under real faults, live")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    demo.add_argument(
        "--redis-url", help="use this Redis (no faults injected); default: a private one"
    )
    demo.add_argument(
        "--metrics-port", type=int, default=9464, help="serve /metrics here (0: any free port)"
    )
    demo.add_argument(
        "--report", type=Path, default=Path("resilient-cache-report.html"),
        help="the HTML report to write (default resilient-cache-report.html)",
    )  # fmt: skip
    demo.add_argument("--rate", type=int, default=400, help="requests per second (default 400)")

    ping = commands.add_parser("ping", help="health check: exit 0 when Redis answers")
    ping.add_argument("--redis-url", help="default: CACHE_REDIS_URL")

    info = commands.add_parser("info", help="the effective settings and the layer stack")
    info.add_argument("--redis-url", help="default: CACHE_REDIS_URL")

    bench = commands.add_parser(
        "bench",
        help="benchmarks against raw redis-py and its peers (needs redis-server)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=BENCH_DESCRIPTION,
    )  # the same options as `python -m resilient_cache.bench`, which parses them again
    bench.add_argument(
        "--quick", action="store_true", help="a smoke run of a few seconds; touches no docs"
    )
    bench.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds (default 5)")
    bench.add_argument(
        "--json", metavar="PATH",
        help="where to write the results (default: .bench/results.json, or results-quick.json "
        "with --quick, under the current directory)",
    )  # fmt: skip
    bench.add_argument(
        "--docs", metavar="DIR",
        help="also rewrite the figures section of DIR/performance.md and "
        "DIR/performance-throughput.svg (a checkout's docs directory); ignored with --quick",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "ping":
            return asyncio.run(_ping(args.redis_url))
        if args.command == "bench":
            return _bench(args)
        return _info(args.redis_url)
    except ConfigurationError as exc:
        print(f"resilient-cache: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM / SIGHUP during the demo, cleaned up
        return 143


def _settings(redis_url: str | None) -> Any:
    from resilient_cache.settings import CacheSettings  # noqa: PLC0415 - keep startup light

    return CacheSettings.from_env(**({"redis_url": redis_url} if redis_url else {}))


async def _ping(redis_url: str | None) -> int:
    from resilient_cache.adapters.redis_adapter import RedisAdapter  # noqa: PLC0415

    settings = _settings(redis_url)
    adapter = RedisAdapter.from_url(
        settings.redis_url, **settings.redis.options(deadline=settings.deadline)
    )
    started = time.monotonic()
    result = await adapter.ping()
    elapsed = (time.monotonic() - started) * 1000
    await adapter.aclose()
    where = redact_url(settings.redis_url)
    if isinstance(result, Failure):
        print(f"FAIL {where} {result.error.code.value}: {result.error.message} ({elapsed:.0f} ms)")
        return EXIT_FAILED
    print(f"OK {where} PONG in {elapsed:.1f} ms")
    return EXIT_OK


def _info(redis_url: str | None) -> int:
    from resilient_cache.bootstrap import build_cache  # noqa: PLC0415

    settings = _settings(redis_url)
    shown = settings.model_dump(mode="json")
    shown["redis_url"] = redact_url(settings.redis_url)
    if settings.redis.password is not None:
        shown["redis"]["password"] = "***"
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    stack = build_cache(settings, registry=CollectorRegistry())
    print(json.dumps({"settings": shown, "layers": list(stack.layers)}, indent=2))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from resilient_cache.demo.run import DemoOptions, run_demo  # noqa: PLC0415

    options = DemoOptions(
        duration=args.duration,
        redis_url=args.redis_url,
        metrics_port=args.metrics_port,
        report=args.report,
        rate=args.rate,
    )
    return asyncio.run(run_demo(options))


def _bench(args: argparse.Namespace) -> int:
    # the benchmarks import every client under test: only for this command
    from resilient_cache.bench.__main__ import main as run_bench  # noqa: PLC0415

    argv = ["--quick"] if args.quick else []
    for option in ("rounds", "json", "docs"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option}", str(value)]
    return run_bench(argv, prog="resilient-cache bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

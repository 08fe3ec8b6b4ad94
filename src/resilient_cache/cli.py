"""The ``resilient-cache`` command (also ``python -m resilient_cache``).

* ``resilient-cache demo``: fail-open under real faults, live, with a report at the end.
* ``resilient-cache ping``: a health check for container probes (exit code, one line).
* ``resilient-cache info``: the effective settings (secrets redacted) and the layer stack.

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "ping":
            return asyncio.run(_ping(args.redis_url))
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

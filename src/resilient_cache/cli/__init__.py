"""The ``resilient-cache`` command (also ``python -m resilient_cache``).

* ``resilient-cache demo``: fail-open under real faults, live, with a report at the end.
* ``resilient-cache ping``: a health check for container probes (exit code, one line).
* ``resilient-cache info``: the effective settings (secrets redacted) and the layer stack.
* ``resilient-cache bench``: the benchmarks, against raw redis-py and its peers
  (resilient_cache.cli.bench; needs a ``redis-server`` binary).
* ``resilient-cache warm --from FILE.jsonl``: pre-populate the cache from a JSON Lines
  file (resilient_cache.patterns.warming), streamed, with a progress line on a terminal.

Settings come from the ``CACHE_*`` environment variables; ``--redis-url`` overrides
``CACHE_REDIS_URL``. Results go to stdout; the library's own events (warnings and errors:
a failed call, an opened circuit) to stderr, never among them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from resilient_cache.adapters.redis_options import redact_url
from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.result import Failure
from resilient_cache.log import LOGGER_NAME, someone_listens
from resilient_cache.testing import ServerStartError
from resilient_cache.version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

WARM_DESCRIPTION = """\
Each line of FILE.jsonl is one JSON object:
    {"key": "user:42", "value": "<a string, stored as is, or any JSON, stored encoded>",
     "ttl": 3600}
"ttl" (seconds) is optional and overrides --ttl; other fields are ignored; blank lines
are skipped. Invalid lines are counted and reported by line number (never their content).
The file is streamed. Exit code: 0 every valid line written, 1 stopped early (Redis
unavailable, budget spent) or some writes failed, 2 usage or configuration error.
"""

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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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

    info = commands.add_parser(
        "info", help="the server, the layer stack and the effective settings (exit 1: unreachable)"
    )
    info.add_argument("--redis-url", help="default: CACHE_REDIS_URL")

    bench = commands.add_parser(
        "bench",
        help="benchmarks against raw redis-py and its peers (needs redis-server)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=BENCH_DESCRIPTION,
    )  # the same options as `python -m resilient_cache.cli.bench`, which parses them again
    bench.add_argument(
        "--quick", action="store_true",
        help="one short round (about 20-40 s on 2 vCPUs, against 3 minutes), to see that it runs",
    )  # fmt: skip
    bench.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds (default 5)")
    bench.add_argument(
        "--json", metavar="PATH",
        help="where to write the results (default: .bench/results.json, or results-quick.json "
        "with --quick, under the current directory)",
    )  # fmt: skip
    bench.add_argument(  # for the project's maintainers: not in the help
        "--docs", metavar="DIR", help=argparse.SUPPRESS
    )  # rewrites DIR/performance.md's figures and DIR/performance-throughput.svg

    warm = commands.add_parser(
        "warm",
        help="pre-populate the cache from a JSON Lines file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=WARM_DESCRIPTION,
    )
    warm.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE.jsonl",
                      help="the items, one JSON object a line")  # fmt: skip
    warm.add_argument("--ttl", type=_positive_int, help="default ttl, seconds (default: none)")
    warm.add_argument("--batch-size", type=_positive_int, default=500, metavar="N",
                      help="items per set_many (default 500)")  # fmt: skip
    warm.add_argument("--concurrency", type=_positive_int, default=4, metavar="N",
                      help="batches in flight (default 4)")  # fmt: skip
    warm.add_argument("--budget", type=_positive_float, metavar="SECONDS",
                      help="stop after this many seconds (default: no limit)")  # fmt: skip
    warm.add_argument("--redis-url", help="default: CACHE_REDIS_URL")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    _events_to_stderr()
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "ping":
            return asyncio.run(_ping(args.redis_url))
        if args.command == "bench":
            return _bench(args)
        if args.command == "warm":
            return asyncio.run(_warm(args))
        return asyncio.run(_info(args.redis_url))
    except ConfigurationError as exc:
        print(f"resilient-cache: configuration error: {_as_typed(args, exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except ServerStartError as exc:  # the demo's or the benchmarks' private redis-server
        print(f"resilient-cache: {exc.summary()}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM / SIGHUP during the demo, cleaned up
        return 143


def _events_to_stderr() -> None:
    """The library's warnings and errors on stderr, unless logging is configured already;
    on the library's own logger (the root logger is the program's, when ``main`` runs in
    one)."""
    if someone_listens():
        return
    library = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("resilient-cache: %(levelname)s %(message)s"))
    library.addHandler(handler)
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)


def _as_typed(args: argparse.Namespace, exc: ConfigurationError) -> str:
    """The error, naming what the user typed: ``--redis-url``, not ``CACHE_REDIS_URL``."""
    if getattr(args, "redis_url", None) and exc.setting == "CACHE_REDIS_URL":
        return f"--redis-url{str(exc).removeprefix(exc.setting)}"
    return str(exc)


def _settings(redis_url: str | None) -> Any:
    from resilient_cache.settings import CacheSettings  # noqa: PLC0415 - keep startup light

    return CacheSettings.from_env(**({"redis_url": redis_url} if redis_url else {}))


async def _ping(redis_url: str | None) -> int:
    from resilient_cache.bootstrap import build_backend  # noqa: PLC0415

    settings = _settings(redis_url)
    adapter = build_backend(settings)  # the topology of the settings, as the stack uses it
    started = time.monotonic()
    result = await adapter.ping()
    elapsed = (time.monotonic() - started) * 1000
    await adapter.aclose()
    where = redact_url(settings.redis_url) if settings.topology == "standalone" else adapter
    if isinstance(result, Failure):
        print(f"FAIL {where} {result.error.code.value}: {result.error.message} ({elapsed:.0f} ms)")
        return EXIT_FAILED
    print(f"OK {where} PONG in {elapsed:.1f} ms")
    return EXIT_OK


async def _info(redis_url: str | None) -> int:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from resilient_cache.adapters.redis_adapter import RedisAdapter  # noqa: PLC0415
    from resilient_cache.adapters.redis_cluster import RedisClusterAdapter  # noqa: PLC0415
    from resilient_cache.bootstrap import build_cache  # noqa: PLC0415
    from resilient_cache.layers.base import backend_of  # noqa: PLC0415

    settings = _settings(redis_url)
    shown = settings.model_dump(mode="json")
    shown["redis_url"] = redact_url(settings.redis_url)
    if settings.redis.password is not None:
        shown["redis"]["password"] = "***"
    stack = build_cache(settings, registry=CollectorRegistry())
    backend = backend_of(stack)
    assert isinstance(backend, RedisAdapter | RedisClusterAdapter)  # what settings build
    try:
        answer = await backend.server_info()
    finally:
        await stack.aclose()
    server: dict[str, Any] = {"topology": settings.topology}
    if isinstance(answer, Failure):
        server["reachable"] = False
        server["error"] = f"{answer.error.code.value}: {answer.error.message}"
    else:
        fields = answer.value
        server["reachable"] = True
        server.update({name: fields.get(field) for name, field in INFO_FIELDS.items()})
    print(json.dumps({"server": server, "layers": list(stack.layers), "settings": shown},
                     indent=2))  # fmt: skip
    return EXIT_OK if server["reachable"] else EXIT_FAILED


INFO_FIELDS: Final = {
    "version": "redis_version",
    "mode": "redis_mode",
    "role": "role",
    "used_memory": "used_memory_human",
    "maxmemory": "maxmemory_human",
    "maxmemory_policy": "maxmemory_policy",
    "connected_clients": "connected_clients",
    "uptime_seconds": "uptime_in_seconds",
}
"""What ``info`` shows of the server's ``INFO``: shown name -> INFO field."""


def _demo(args: argparse.Namespace) -> int:
    if args.redis_url:
        _settings(args.redis_url)  # a bad URL: a configuration error naming --redis-url
    from resilient_cache.cli.demo.run import DemoOptions, run_demo  # noqa: PLC0415

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
    from resilient_cache.cli.bench.__main__ import main as run_bench  # noqa: PLC0415

    argv = ["--quick"] if args.quick else []
    for option in ("rounds", "json", "docs"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option}", str(value)]
    return run_bench(argv, prog="resilient-cache bench")


_COUNTED_UP_TO: Final = 64 * 1024 * 1024
"""An early stop counts the lines left in at most this many bytes (else says the bytes)."""

_SHOWN_INVALID: Final = 10
"""Invalid lines reported one by one; the others are only counted."""


class _JsonLines:
    """The items of a JSON Lines file, streamed; counts the invalid lines and the bytes read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.bytes_read = 0
        self.lines_read = 0
        self.invalid: list[tuple[int, str]] = []  # the first few: (line number, reason)
        self.invalid_count = 0

    def not_read(self) -> str:
        """What an early stop left of the file: its lines counted (not parsed) when it is a
        regular file of a sensible size, else its bytes, or nothing known (a pipe)."""
        if not self.path.is_file():
            return "the rest not read"
        left = self.size - self.bytes_read
        if left > _COUNTED_UP_TO:
            return f"{left:,} bytes not read"
        with self.path.open("rb") as rest:
            rest.seek(self.bytes_read)
            return f"{sum(1 for _ in rest):,} lines not read"

    def __iter__(self) -> Iterator[tuple[str, object, int | None]]:
        with self.path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                self.bytes_read += len(raw)
                self.lines_read = number
                if not raw.strip():
                    continue
                item = _parse_line(raw)
                if isinstance(item, str):
                    self.invalid_count += 1
                    if len(self.invalid) < _SHOWN_INVALID:
                        self.invalid.append((number, item))
                    continue
                yield item


def _parse_line(raw: bytes) -> tuple[str, object, int | None] | str:
    """The item of one line, or why the line is invalid (never quoting its content)."""
    try:
        obj = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return "not JSON (or not UTF-8)"
    if not isinstance(obj, dict):
        return "not a JSON object"
    key, ttl = obj.get("key"), obj.get("ttl")
    if not isinstance(key, str) or not key:
        return '"key" must be a non-empty string'
    if "value" not in obj:
        return '"value" is missing'
    value = obj["value"]
    if not isinstance(value, str):
        try:
            value = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:
            return '"value" holds NaN or Infinity, which JSON does not allow'
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
        return '"ttl" must be a whole number of seconds >= 1'
    return key, value, ttl


async def _warm(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from resilient_cache.bootstrap import build_cache  # noqa: PLC0415
    from resilient_cache.patterns.warming import WarmProgress, warm  # noqa: PLC0415

    try:
        source = _JsonLines(args.source)
        with args.source.open("rb"):  # readable, not only present
            pass
    except OSError as exc:
        print(f"resilient-cache: cannot read {args.source}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    settings = _settings(args.redis_url)
    tty = sys.stderr.isatty()
    shown = [0.0]

    def progress(p: WarmProgress) -> None:
        now = time.monotonic()
        if now - shown[0] < 0.1:  # at most 10 redraws a second
            return
        shown[0] = now
        done = 100 * source.bytes_read / source.size if source.size else 100.0
        print(f"\rwarming {done:5.1f}%  {p.written:,} written  {p.failed:,} failed  "
              f"{p.rate:,.0f}/s ", end="", file=sys.stderr, flush=True)  # fmt: skip

    async with build_cache(settings, registry=CollectorRegistry()) as cache:
        report = await warm(
            cache, source, ttl=args.ttl, batch_size=args.batch_size,
            concurrency=args.concurrency, budget=args.budget,
            on_progress=progress if tty else None,
        )  # fmt: skip
    if tty:  # the final state, then a new line
        shown[0] = 0.0
        progress(report)
        print(file=sys.stderr)
    for number, reason in source.invalid:
        print(f"line {number}: {reason}", file=sys.stderr)
    if source.invalid_count > len(source.invalid):
        print(f"... and {source.invalid_count - len(source.invalid)} more invalid lines",
              file=sys.stderr)  # fmt: skip
    print(f"warm {report.stopped_because}: {report.written} written, {report.failed} failed "
          f"(in {report.failed_batches} batches), {report.skipped} skipped, "
          f"{source.invalid_count} invalid lines, in {report.seconds:.1f} s "
          f"({report.rate:,.0f}/s)")  # fmt: skip
    if report.last_error is not None:
        print(f"last error: {report.last_error}")
    if report.stopped_because != "done":
        print(f"stopped after line {source.lines_read:,} of {args.source}: "
              f"{source.not_read()}")  # fmt: skip
    ok = report.stopped_because == "done" and report.failed == 0
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

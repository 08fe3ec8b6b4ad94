"""``resilient-cache demo``: fail-open under real faults, live, with a verdict and a picture.

Phases: healthy, Redis slower than the deadline, Redis blackholed, Redis killed, Redis back,
healthy again. A workload of cache-aside requests runs throughout; the terminal shows it
live; /metrics is served for Prometheus; at the end a summary per phase, a verdict, and an
HTML report with charts. Exit code 0 only if the fail-open promise held in every phase:
no request failed, and no cache call took longer than the deadline plus a small slack.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from resilient_cache.bootstrap import build_cache
from resilient_cache.cli.demo.faults import Faults, start_faults
from resilient_cache.cli.demo.report import PhaseSummary, summarize, write_report
from resilient_cache.cli.demo.workload import Recorder, Workload
from resilient_cache.domain.result import Failure
from resilient_cache.layers.circuit_breaker import CircuitBreakerLayer
from resilient_cache.settings import BreakerSettings, CacheSettings
from resilient_cache.testing import LOOPBACK

SLACK: Final = 0.1  # as in the fault suite: timers on a loaded 2-core machine run late
"""How far past the deadline a cache call may end and still count as bounded."""


@dataclass(frozen=True)
class Phase:
    name: str
    share: float  # of the whole duration
    start: Callable[[Faults], None] | None  # the fault switched on as the phase begins


PHASES: Final = (
    Phase("healthy", 0.14, None),
    Phase("latency above the deadline", 0.18, lambda f: f.slow()),
    Phase("blackhole", 0.18, lambda f: f.blackhole()),
    Phase("Redis killed", 0.16, lambda f: f.kill()),
    Phase("Redis back", 0.20, lambda f: f.restore()),
    Phase("healthy again", 0.14, None),
)


@dataclass(frozen=True)
class DemoOptions:
    duration: float = 60.0
    redis_url: str | None = None
    metrics_port: int = 9464
    report: Path = Path("resilient-cache-report.html")
    rate: int = 400


NAMESPACE: Final = "resilient-cache-demo"
"""The demo's keys live under it (``resilient-cache-demo:user:2``): in a Redis of the user's
(``--redis-url``), never the user's own ``user:N``; they are removed at the end."""


def demo_settings(url: str) -> CacheSettings:
    """The defaults, with a breaker that heals within a demo phase (1 s open, 4 s at most),
    in the demo's own namespace."""
    return CacheSettings(
        redis_url=url,
        name="demo",
        namespace=NAMESPACE,
        breaker=BreakerSettings(reset_timeout=1.0, reset_timeout_max=4.0),
    )


async def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo; return the exit code (0: the promise held in every phase)."""
    # SIGTERM/SIGHUP end the run like Ctrl-C does, through the cleanup below: a redis-server
    # left paused with SIGSTOP would outlive us otherwise
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if main is not None:
            loop.add_signal_handler(signum, main.cancel)
    faults = start_faults() if options.redis_url is None else None
    try:
        url = faults.url if faults is not None else str(options.redis_url)
        return await _run(options, url, faults, out)
    finally:
        if faults is not None:
            faults.close()


async def _run(options: DemoOptions, url: str, faults: Faults | None, out: TextIO) -> int:
    registry = CollectorRegistry()
    try:
        server, thread = start_http_server(options.metrics_port, addr=LOOPBACK, registry=registry)
    except OSError:  # the port is taken: any free one will do, it is printed below
        server, thread = start_http_server(0, addr=LOOPBACK, registry=registry)
    settings = demo_settings(url)
    log_path = options.report.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("w", encoding="utf-8")
    # the demo is an application: it decides where the library's events go (a file, as
    # JSON lines, so that the live view stays readable)
    logger = structlog.wrap_logger(
        structlog.WriteLogger(log_file),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
    )
    cache = build_cache(settings, registry=registry, logger=logger)
    recorder = Recorder()
    breaker = cache.find(CircuitBreakerLayer)
    if breaker is not None:
        breaker.add_listener(lambda old, new: recorder.breaker_moved(new.value))
    port = server.server_address[1]
    live = _Live(out, recorder)
    print(f"resilient-cache demo: Redis at {url} ({faults.kind if faults else 'yours: no faults'})",
          file=out)  # fmt: skip
    print(f"metrics: http://{LOOPBACK}:{port}/metrics   deadline: {settings.deadline}s"
          f"   events: {log_path}", file=out)  # fmt: skip
    phases = PHASES if faults is not None else (Phase(YOURS, 1.0, None),)
    try:
        async with cache:
            workload = Workload(cache, recorder, rate=options.rate)
            runner = asyncio.create_task(workload.run())
            for index, phase in enumerate(phases):
                recorder.start_phase(phase.name)
                if faults is not None and phase.start is not None:
                    phase.start(faults)
                elif faults is not None:
                    faults.clear()
                live.phase(index, len(phases), phase.name)
                await live.run_for(phase.share * options.duration)
            recorder.end()
            workload.stop()
            await runner
            if faults is None:  # a Redis of the user's: leave nothing of ours in it
                removed = await cache.flush()
                if isinstance(removed, Failure):
                    print(f"could not remove the demo's keys ({NAMESPACE}:*): "
                          f"{removed.error.message}", file=out)  # fmt: skip
    finally:
        server.shutdown()
        thread.join(timeout=5)
        log_file.close()
    summaries = summarize(recorder, [p.name for p in phases])
    verdict = _verdict(summaries, settings.deadline, user_redis=faults is None)
    write_report(options.report, recorder, summaries, verdict, settings.deadline)
    _print_summary(out, summaries, verdict, options.report)
    return 0 if verdict.held else 1


@dataclass(frozen=True)
class Verdict:
    held: bool
    failed_requests: int
    max_cache_call: float
    lines: list[str]
    headline: str


YOURS: Final = "your Redis"
"""The one phase of a run against ``--redis-url``: no faults injected, whatever it did."""


def _verdict(
    summaries: list[PhaseSummary], deadline: float, *, user_redis: bool = False
) -> Verdict:
    failed = sum(s.failed for s in summaries)
    worst = max((s.max_cache_call for s in summaries), default=0.0)
    slowest_request = max((s.max_latency for s in summaries), default=0.0)
    bounded = worst <= deadline + SLACK
    lines = [
        f"requests failed: {failed}",
        f"slowest request: {slowest_request * 1000:.0f} ms (a cache call, then the origin)",
        f"slowest cache call: {worst * 1000:.0f} ms (deadline {deadline * 1000:.0f} ms"
        f" + {SLACK * 1000:.0f} ms slack): {'bounded' if bounded else 'NOT bounded'}",
    ]
    # every lookup failed (a Redis that answers, even refusing writes, makes misses)
    down = user_redis and bool(summaries) and 0 < summaries[0].fallbacks == summaries[0].lookups
    if down:
        lines.append(f"{YOURS} never answered: {summaries[0].fallbacks} lookups fell back to "
                     "the origin; the service stayed up, without a cache")  # fmt: skip
    for s in summaries:
        if s.time_to_open is not None:
            lines.append(f"{s.name}: the breaker opened {s.time_to_open:.2f}s into the fault")
        if s.time_to_recover is not None:
            lines.append(f"{s.name}: the breaker closed {s.time_to_recover:.2f}s after the fix")
    held = failed == 0 and bounded
    outcome = "held" if held else "BROKEN"
    headline = (
        f"the fail-open promise {outcome}, but {YOURS} never answered: nothing was cached"
        if down
        else f"the fail-open promise {outcome} in every phase"
    )
    return Verdict(held, failed, worst, lines, headline)


def _print_summary(
    out: TextIO, summaries: list[PhaseSummary], verdict: Verdict, report: Path
) -> None:
    print("", file=out)
    header = f"{'phase':<28}{'req/s':>7}{'failed':>8}{'p50 ms':>8}{'p99 ms':>8}{'hit %':>7}"
    print(header + f"{'fallbacks':>10}{'origin/s':>9}  breaker", file=out)
    for s in summaries:
        print(
            f"{s.name:<28}{s.rps:>7.0f}{s.failed:>8}{s.p50 * 1000:>8.1f}{s.p99 * 1000:>8.1f}"
            f"{s.hit_ratio * 100:>7.0f}{s.fallbacks:>10}{s.origin_rps:>9.0f}  {s.breaker_states}",
            file=out,
        )
    print("", file=out)
    for line in verdict.lines:
        print(f"  {line}", file=out)
    print(f"\nverdict: {verdict.headline}", file=out)
    print(f"report: {report}", file=out)


class _Live:
    """A live view a few times a second on a terminal; a line a second otherwise."""

    def __init__(self, out: TextIO, recorder: Recorder) -> None:
        self._out = out
        self._recorder = recorder
        self._tty = out.isatty()
        self._drawn = 0
        self._label = ""
        self._shown: object = None  # the last bucket printed (off a terminal)

    def phase(self, index: int, total: int, name: str) -> None:
        self._label = f"[{index + 1}/{total}] {name}"
        if not self._tty:
            print(f"phase {self._label}", file=self._out, flush=True)

    async def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        tick = 0.25 if self._tty else 1.0
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(tick, left))
            self._show(1.0 - left / seconds)

    def _show(self, progress: float) -> None:
        seconds = self._recorder.seconds
        last = seconds[-2] if len(seconds) > 1 else seconds[-1] if seconds else None
        if last is None:
            return
        errors = ", ".join(f"{k} {v}" for k, v in last.errors.most_common(3)) or "none"
        line = (
            f"req/s {last.requests:>4}  p50 {last.quantile(0.5) * 1000:6.1f} ms"
            f"  p99 {last.quantile(0.99) * 1000:6.1f} ms  hit {last.hit_ratio * 100:3.0f}%"
            f"  origin/s {last.origin:>4}  breaker {self._recorder.breaker:<9}"
            f"  failed {last.failed}  cache errors: {errors}"
        )
        if not self._tty:
            if last is not self._shown:  # each complete second once (before: some twice)
                self._shown = last
                print(f"  {line}", file=self._out, flush=True)
            return
        bar = "#" * int(progress * 30)
        frame = [f"{self._label:<34} [{bar:<30}]", line]
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F")
        self._out.write("".join(f"\x1b[2K{row}\n" for row in frame))
        self._out.flush()
        self._drawn = len(frame)

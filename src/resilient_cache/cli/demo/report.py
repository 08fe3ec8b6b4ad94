"""The demo's summary per phase and its report: one self-contained HTML file with SVG charts."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from resilient_cache.cli.demo.workload import Recorder, Second

WIDTH: Final = 900
HEIGHT: Final = 190
LEFT: Final = 60
"""Room for the y axis's labels."""
STATE_COLORS: Final = {"closed": "#2e7d32", "half_open": "#f9a825", "open": "#c62828"}
PHASE_FILLS: Final = ("#f5f5f5", "#ffffff")


@dataclass(frozen=True)
class PhaseSummary:
    """What one phase looked like to the service's callers."""

    name: str
    seconds: float
    requests: int
    failed: int
    p50: float
    p99: float
    max_latency: float
    max_cache_call: float
    hit_ratio: float
    lookups: int
    fallbacks: int
    origin_rps: float
    breaker_states: str
    time_to_open: float | None
    time_to_recover: float | None

    @property
    def rps(self) -> float:
        """Requests served per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def _first_transition(recorder: Recorder, span: tuple[float, float], state: str) -> float | None:
    """Seconds from the start of ``span`` to the breaker's first move to ``state`` in it."""
    start, end = span
    moves = [t for t, moved_to in recorder.transitions if start <= t < end and moved_to == state]
    return moves[0] - start if moves else None


def summarize(recorder: Recorder, phases: Sequence[str]) -> list[PhaseSummary]:
    """One summary per phase, in order, of the requests made in it (phases that saw no
    request are skipped); rates over the phase's own duration."""
    summaries = []
    faulty = {"latency above the deadline", "blackhole", "Redis killed"}
    spans = recorder.spans()
    for name in phases:
        rows = [s for s in recorder.seconds if s.phase == name]
        if not rows:
            continue
        latencies = sorted(x for s in rows for x in s.latencies)

        def q(fraction: float, values: list[float] = latencies) -> float:
            return values[min(len(values) - 1, int(fraction * len(values)))] if values else 0.0

        hits = sum(s.hits for s in rows)
        lookups = hits + sum(s.misses + s.fallbacks for s in rows)
        states = list(dict.fromkeys(s.breaker for s in rows))
        span = spans.get(name, (0.0, float(len(rows))))
        opened = _first_transition(recorder, span, "open") if name in faulty else None
        recovered = None if name in faulty else _first_transition(recorder, span, "closed")
        duration = (span[1] - span[0]) or float(len(rows))
        summaries.append(
            PhaseSummary(
                name=name,
                seconds=duration,
                requests=sum(s.requests for s in rows),
                failed=sum(s.failed for s in rows),
                p50=q(0.5),
                p99=q(0.99),
                max_latency=latencies[-1] if latencies else 0.0,
                max_cache_call=max(s.cache_latency_max for s in rows),
                hit_ratio=hits / lookups if lookups else 0.0,
                lookups=lookups,
                fallbacks=sum(s.fallbacks for s in rows),
                origin_rps=sum(s.origin for s in rows) / duration,
                breaker_states=" -> ".join(states),
                time_to_open=opened,
                time_to_recover=recovered,
            )
        )
    return summaries


def per_second(recorder: Recorder) -> list[Second]:
    """The run second by second, for the charts: a second split between two phases counted
    once, and the last second left out unless the run ended on it (it is partial)."""
    merged: dict[int, Second] = {}
    for bucket in recorder.seconds:
        into = merged.get(bucket.t)
        if into is None:
            into = merged[bucket.t] = Second(bucket.t, bucket.phase, breaker=bucket.breaker)
        into.requests += bucket.requests
        into.failed += bucket.failed
        into.hits += bucket.hits
        into.misses += bucket.misses
        into.fallbacks += bucket.fallbacks
        into.origin += bucket.origin
        into.latencies += bucket.latencies
        into.cache_latency_max = max(into.cache_latency_max, bucket.cache_latency_max)
        into.errors.update(bucket.errors)
        if bucket.breaker != "closed":
            into.breaker = bucket.breaker
    ended = recorder.ended if recorder.ended is not None else recorder.elapsed()
    return [second for t, second in sorted(merged.items()) if t + 1 <= ended + 1e-9]


@dataclass(frozen=True)
class Band:
    """A phase on the time axis: from ``start`` to ``end`` seconds."""

    name: str
    start: float
    end: float


def phase_bands(recorder: Recorder, until: float) -> list[Band]:
    """Each phase's span on the time axis, cut at ``until`` (the last charted second)."""
    return [
        Band(name, start, min(end, until))
        for name, (start, end) in recorder.spans().items()
        if start < until
    ]


def _ticks(top: float) -> list[float]:
    """Three round y-axis ticks from 0 to ``top``."""
    return [0.0, top / 2, top]


def _label(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms"
    if unit == "":
        return f"{value * 100:.0f}%"
    return f"{value:.0f}{unit}"


def _chart(
    title: str,
    seconds: Sequence[Second],
    bands: Sequence[Band],
    *,
    series: Sequence[tuple[str, str, Callable[[Second], float]]],
    top: float,
    unit: str,
    line_at: tuple[float, str] | None = None,
) -> str:
    n = max(len(seconds), 1)

    def x(t: float) -> float:
        return LEFT + (WIDTH - LEFT - 10) * t / n

    def y(v: float) -> float:
        return 22 + (HEIGHT - 52) * (1 - min(v, top) / top)

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">']
    parts += _bands(bands, x)
    for tick in _ticks(top):  # the y axis
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - 10}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#ddd"/><text class="y-tick" x="{LEFT - 4}" '
                     f'y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">'
                     f"{_label(tick, unit)}</text>")  # fmt: skip
    step = 10 if n > 30 else 5
    for t in range(0, n + 1, step):  # the time axis
        parts.append(f'<text class="x-tick" x="{x(t):.1f}" y="{HEIGHT - 16}" font-size="11" '
                     f'text-anchor="middle">{t} s</text>')  # fmt: skip
    for label, color, value in series:
        points = " ".join(f"{x(s.t + 0.5):.1f},{y(value(s)):.1f}" for s in seconds)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}">'
                     f"<title>{html.escape(label)}</title></polyline>")  # fmt: skip
    if line_at is not None:
        at, name = line_at
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - 10}" y1="{y(at):.1f}" y2="{y(at):.1f}"'
                     ' stroke="#c62828" stroke-dasharray="4 3"/>'
                     f'<text class="line-label" x="{WIDTH - 12}" y="{y(at) - 3:.1f}" '
                     f'font-size="11" fill="#c62828" text-anchor="end">'
                     f"{html.escape(name)}</text>")  # fmt: skip
    legend = " · ".join(f'<tspan fill="{c}">{html.escape(label)}</tspan>' for label, c, _ in series)
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 2}" font-size="12">{legend}</text></svg>')
    return f"<h2>{html.escape(title)}</h2>\n" + "".join(parts)


def _bands(bands: Sequence[Band], x: Callable[[float], float]) -> list[str]:
    """The phases as shaded bands, each labelled with its name on the page."""
    shapes: list[str] = []
    for index, band in enumerate(bands):
        left, right = x(band.start), x(band.end)
        shapes.append(f'<rect x="{left:.1f}" y="0" width="{right - left:.1f}" '
                      f'height="{HEIGHT - 30}" fill="{PHASE_FILLS[index % 2]}"/>'
                      f'<text class="phase-label" x="{left + 3:.1f}" y="12" font-size="10" '
                      f'fill="#555">{html.escape(band.name)}</text>')  # fmt: skip
    return shapes


def _breaker_strip(seconds: Sequence[Second]) -> str:
    n = max(len(seconds), 1)
    cells = "".join(
        f'<rect x="{LEFT + (WIDTH - LEFT - 10) * s.t / n:.1f}" y="0" '
        f'width="{(WIDTH - LEFT - 10) / n + 0.5:.1f}" height="24" '
        f'fill="{STATE_COLORS.get(s.breaker, "#999")}"><title>{s.t}s: {s.breaker}</title></rect>'
        for s in seconds
    )
    legend = " ".join(f'<tspan fill="{c}">■ {k}</tspan>' for k, c in STATE_COLORS.items())
    return (f'<h2>Circuit breaker</h2><svg viewBox="0 0 {WIDTH} 44">{cells}'
            f'<text x="{LEFT}" y="40" font-size="12">{legend}</text></svg>')  # fmt: skip


def write_report(
    path: Path,
    recorder: Recorder,
    summaries: Sequence[PhaseSummary],
    verdict: Any,
    deadline: float,
) -> None:
    """Write the self-contained HTML report (no scripts, no external files)."""
    seconds = per_second(recorder)
    bands = phase_bands(recorder, float(len(seconds)))
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{s.rps:.0f}</td><td>{s.failed}</td>"
        f"<td>{s.p50 * 1000:.1f}</td><td>{s.p99 * 1000:.1f}</td>"
        f"<td>{s.max_cache_call * 1000:.0f}</td>"
        f"<td>{s.hit_ratio * 100:.0f}%</td><td>{s.fallbacks}</td><td>{s.origin_rps:.0f}</td>"
        f"<td>{html.escape(s.breaker_states)}</td></tr>"
        for s in summaries
    )
    top_latency = max(deadline * 2, max((s.quantile(0.99) for s in seconds), default=0.0))
    deadline_line = (deadline, f"deadline {deadline * 1000:.0f} ms")
    charts = [
        _chart("Request latency", seconds, bands, series=[
            ("p50", "#1565c0", lambda s: s.quantile(0.5)),
            ("p99", "#6a1b9a", lambda s: s.quantile(0.99)),
            ("slowest cache call", "#ef6c00", lambda s: s.cache_latency_max),
        ], top=top_latency, unit="s", line_at=deadline_line),
        _chart("Cache hit ratio (fallbacks count as misses)", seconds, bands, series=[
            ("hit ratio", "#2e7d32", lambda s: s.hit_ratio),
        ], top=1.0, unit=""),
        _chart("Requests and origin load per second", seconds, bands, series=[
            ("requests served", "#1565c0", lambda s: float(s.requests)),
            ("origin lookups", "#c62828", lambda s: float(s.origin)),
        ], top=max((float(s.requests) for s in seconds), default=1.0) or 1.0, unit="/s"),
        _breaker_strip(seconds),
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>resilient-cache demo</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "svg{width:100%;height:auto}</style></head><body>"
        f"<h1>resilient-cache demo: {html.escape(verdict.headline)}</h1><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in verdict.lines)
        + "</ul><table><tr><th>phase</th><th>req/s</th><th>failed</th><th>p50 ms</th>"
        "<th>p99 ms</th><th>slowest cache call ms</th><th>hit ratio</th><th>fallbacks</th>"
        f"<th>origin/s</th><th>breaker</th></tr>{rows}</table>"
        + "\n".join(charts)
        + "</body></html>\n",
        encoding="utf-8",
    )

"""The demo's summary per phase and its report: one self-contained HTML file with SVG charts."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from resilient_cache.cli.demo.workload import Recorder, Second

WIDTH: Final = 900
HEIGHT: Final = 160
STATE_COLORS: Final = {"closed": "#2e7d32", "half_open": "#f9a825", "open": "#c62828"}
PHASE_FILLS: Final = ("#f5f5f5", "#ffffff")


@dataclass(frozen=True)
class PhaseSummary:
    """What one phase looked like to the service's callers."""

    name: str
    seconds: int
    requests: int
    failed: int
    p50: float
    p99: float
    max_latency: float
    max_cache_call: float
    hit_ratio: float
    fallbacks: int
    origin_rps: float
    breaker_states: str
    time_to_open: float | None
    time_to_recover: float | None

    @property
    def rps(self) -> float:
        """Requests served per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def _first_transition(recorder: Recorder, name: str, state: str) -> float | None:
    """Seconds from the start of phase ``name`` to the breaker's first move to ``state``."""
    start = recorder.phase_starts.get(name)
    if start is None:
        return None
    names = list(recorder.phase_starts)
    following = names[names.index(name) + 1 :]
    end = recorder.phase_starts[following[0]] if following else float("inf")
    moves = [t for t, moved_to in recorder.transitions if start <= t < end and moved_to == state]
    return moves[0] - start if moves else None


def summarize(recorder: Recorder, phases: Sequence[str]) -> list[PhaseSummary]:
    """One summary per phase, in order (phases with no complete second are skipped)."""
    summaries = []
    faulty = {"latency above the deadline", "blackhole", "Redis killed"}
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
        opened = _first_transition(recorder, name, "open") if name in faulty else None
        recovered = None if name in faulty else _first_transition(recorder, name, "closed")
        summaries.append(
            PhaseSummary(
                name=name,
                seconds=len(rows),
                requests=sum(s.requests for s in rows),
                failed=sum(s.failed for s in rows),
                p50=q(0.5),
                p99=q(0.99),
                max_latency=latencies[-1] if latencies else 0.0,
                max_cache_call=max(s.cache_latency_max for s in rows),
                hit_ratio=hits / lookups if lookups else 0.0,
                fallbacks=sum(s.fallbacks for s in rows),
                origin_rps=sum(s.origin for s in rows) / len(rows),
                breaker_states=" -> ".join(states),
                time_to_open=opened,
                time_to_recover=recovered,
            )
        )
    return summaries


def _chart(
    title: str,
    seconds: Sequence[Second],
    *,
    series: Sequence[tuple[str, str, Callable[[Second], float]]],
    top: float,
    unit: str,
    line_at: float | None = None,
) -> str:
    n = max(len(seconds), 1)

    def x(t: float) -> float:
        return 40 + (WIDTH - 50) * t / n

    def y(v: float) -> float:
        return 10 + (HEIGHT - 30) * (1 - min(v, top) / top)

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">']
    parts += _phase_bands(seconds, x)
    for label, color, value in series:
        points = " ".join(f"{x(s.t + 0.5):.1f},{y(value(s)):.1f}" for s in seconds)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}">'
                     f"<title>{html.escape(label)}</title></polyline>")  # fmt: skip
    if line_at is not None:
        parts.append(f'<line x1="40" x2="{WIDTH - 10}" y1="{y(line_at):.1f}" y2="{y(line_at):.1f}"'
                     ' stroke="#c62828" stroke-dasharray="4 3"/>')  # fmt: skip
    parts.append(f'<text x="2" y="16" font-size="11">{top:g} {unit}</text>')
    parts.append(f'<text x="2" y="{HEIGHT - 20}" font-size="11">0</text>')
    legend = " · ".join(f'<tspan fill="{c}">{html.escape(label)}</tspan>' for label, c, _ in series)
    parts.append(f'<text x="50" y="{HEIGHT - 4}" font-size="12">{legend}</text></svg>')
    return f"<h2>{html.escape(title)}</h2>\n" + "".join(parts)


def _phase_bands(seconds: Sequence[Second], x: Callable[[float], float]) -> list[str]:
    bands: list[str] = []
    start = 0
    for i, s in enumerate(seconds):
        if i + 1 == len(seconds) or seconds[i + 1].phase != s.phase:
            fill = PHASE_FILLS[len(bands) % 2]
            bands.append(f'<rect x="{x(start):.1f}" y="0" width="{x(i + 1) - x(start):.1f}"'
                         f' height="{HEIGHT - 20}" fill="{fill}"><title>{html.escape(s.phase)}'
                         "</title></rect>")  # fmt: skip
            start = i + 1
    return bands


def _breaker_strip(seconds: Sequence[Second]) -> str:
    n = max(len(seconds), 1)
    cells = "".join(
        f'<rect x="{40 + (WIDTH - 50) * s.t / n:.1f}" y="0" width="{(WIDTH - 50) / n + 0.5:.1f}"'
        f' height="24" fill="{STATE_COLORS.get(s.breaker, "#999")}"><title>{s.t}s: {s.breaker}'
        "</title></rect>"
        for s in seconds
    )
    legend = " ".join(f'<tspan fill="{c}">■ {k}</tspan>' for k, c in STATE_COLORS.items())
    return (f'<h2>Circuit breaker</h2><svg viewBox="0 0 {WIDTH} 44">{cells}'
            f'<text x="40" y="40" font-size="12">{legend}</text></svg>')  # fmt: skip


def write_report(
    path: Path,
    seconds: Sequence[Second],
    summaries: Sequence[PhaseSummary],
    verdict: Any,
    deadline: float,
) -> None:
    """Write the self-contained HTML report (no scripts, no external files)."""
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{s.rps:.0f}</td><td>{s.failed}</td>"
        f"<td>{s.p50 * 1000:.1f}</td><td>{s.p99 * 1000:.1f}</td>"
        f"<td>{s.max_cache_call * 1000:.0f}</td>"
        f"<td>{s.hit_ratio * 100:.0f}%</td><td>{s.fallbacks}</td><td>{s.origin_rps:.0f}</td>"
        f"<td>{html.escape(s.breaker_states)}</td></tr>"
        for s in summaries
    )
    top_latency = max(deadline * 2, max((s.quantile(0.99) for s in seconds), default=0.0))
    charts = [
        _chart("Request latency", seconds, series=[
            ("p50", "#1565c0", lambda s: s.quantile(0.5)),
            ("p99", "#6a1b9a", lambda s: s.quantile(0.99)),
            ("slowest cache call", "#ef6c00", lambda s: s.cache_latency_max),
        ], top=top_latency, unit="s", line_at=deadline),
        _chart("Cache hit ratio (fallbacks count as misses)", seconds, series=[
            ("hit ratio", "#2e7d32", lambda s: s.hit_ratio),
        ], top=1.0, unit=""),
        _chart("Requests and origin load per second", seconds, series=[
            ("requests served", "#1565c0", lambda s: float(s.requests)),
            ("origin lookups", "#c62828", lambda s: float(s.origin)),
        ], top=max((float(s.requests) for s in seconds), default=1.0) or 1.0, unit="/s"),
        _breaker_strip(seconds),
    ]  # fmt: skip
    verdict_text = "held" if verdict.held else "BROKEN"
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>resilient-cache demo</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "svg{width:100%;height:auto}</style></head><body>"
        f"<h1>resilient-cache demo: the fail-open promise {verdict_text}</h1><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in verdict.lines)
        + "</ul><table><tr><th>phase</th><th>req/s</th><th>failed</th><th>p50 ms</th>"
        "<th>p99 ms</th><th>slowest cache call ms</th><th>hit ratio</th><th>fallbacks</th>"
        f"<th>origin/s</th><th>breaker</th></tr>{rows}</table>"
        + "\n".join(charts)
        + "</body></html>\n",
        encoding="utf-8",
    )

"""A line chart of GET throughput against concurrency, as a hand-written SVG (stdlib only)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Final

from resilient_cache.cli.bench.report import Column, Figure

WIDTH: Final = 860
HEIGHT: Final = 480
LEFT, RIGHT, TOP, BOTTOM = 90, 640, 70, 400
FONT: Final = "font-family='Helvetica, Arial, sans-serif'"

COLOURS: Final = {
    "redis-py": "#3b3b3b",
    "redis-py blocking": "#8c8c8c",
    "adapter": "#1f77b4",
    "stack": "#d62728",
    "stack unpipelined": "#e377c2",
    "stack+coalesce": "#9467bd",
    "cashews": "#2ca02c",
    "aiocache": "#ff7f0e",
}
OTHER: Final = "#17becf"
DASHED: Final = frozenset({"redis-py", "redis-py blocking"})


def _step(top: float) -> float:
    """A round tick step giving about five ticks up to ``top``."""
    raw = top / 5
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _text(
    x: float, y: float, content: str, size: int = 13, anchor: str = "start", **extra: str
) -> str:
    attributes = "".join(f" {k.replace('_', '-')}='{v}'" for k, v in extra.items())
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' "
        f"{FONT}{attributes}>{escape(content)}</text>"
    )


def _stroke(name: str, width: int) -> str:
    dash = " stroke-dasharray='6 4'" if name in DASHED else ""
    return f"stroke='{COLOURS.get(name, OTHER)}' stroke-width='{width}'{dash}"


@dataclass(frozen=True)
class _Scale:
    levels: list[int]
    top: float
    step: float

    def x(self, index: int) -> float:
        return LEFT + (RIGHT - LEFT) * (index + 0.5) / max(1, len(self.levels))

    def y(self, value: float) -> float:
        return BOTTOM - (BOTTOM - TOP) * value / self.top


def _axes(scale: _Scale) -> list[str]:
    out = []
    tick = 0.0
    while tick <= scale.top + scale.step / 2:
        y = scale.y(tick)
        out.append(f"<line x1='{LEFT}' y1='{y:.1f}' x2='{RIGHT}' y2='{y:.1f}' stroke='#e3e3e3'/>")
        out.append(_text(LEFT - 8, y + 4, f"{tick:,.0f}", 12, "end"))
        tick += scale.step
    out.append(f"<line x1='{LEFT}' y1='{BOTTOM}' x2='{RIGHT}' y2='{BOTTOM}' stroke='#333333'/>")
    out.append(f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{BOTTOM}' stroke='#333333'/>")
    for index, level in enumerate(scale.levels):
        out.append(_text(scale.x(index), BOTTOM + 20, str(level), 13, "middle"))
    out.append(_text((LEFT + RIGHT) / 2, BOTTOM + 45, "concurrent coroutines", 14, "middle"))
    middle = (TOP + BOTTOM) / 2
    turn = f"rotate(-90 24 {middle:.1f})"
    out.append(_text(24, middle, "successful GETs per second", 14, "middle", transform=turn))
    return out


def _line(scale: _Scale, name: str, points: list[tuple[int, Figure]]) -> list[str]:
    colour = COLOURS.get(name, OTHER)
    path = " ".join(f"{scale.x(i):.1f},{scale.y(f.value):.1f}" for i, f in points)
    width = 3 if name.startswith("stack") else 2
    out = [f"<polyline points='{path}' fill='none' {_stroke(name, width)}/>"]
    for i, figure in points:
        fill = "white" if figure.failures else colour
        out.append(
            f"<circle cx='{scale.x(i):.1f}' cy='{scale.y(figure.value):.1f}' r='4.5' "
            f"fill='{fill}' stroke='{colour}' stroke-width='2'><title>{escape(name)}, "
            f"{scale.levels[i]}: {figure.value:,.0f}/s</title></circle>"
        )
    return out


def _legend(names: list[str], any_failed: bool) -> list[str]:
    out = []
    y = TOP + 10
    for name in names:
        out.append(
            f"<line x1='{RIGHT + 25}' y1='{y}' x2='{RIGHT + 55}' y2='{y}' {_stroke(name, 3)}/>"
        )
        out.append(_text(RIGHT + 63, y + 4, name, 13))
        y += 24
    if any_failed:
        y += 8
        out.append(
            f"<circle cx='{RIGHT + 40}' cy='{y}' r='4.5' fill='white' stroke='#333333' "
            f"stroke-width='2'/>"
        )
        out.append(_text(RIGHT + 63, y + 4, "some calls failed", 12))
        out.append(_text(RIGHT + 63, y + 20, "(not counted)", 12))
    return out


def throughput_chart(table: list[Column], clients: list[str], subtitle: str) -> str:
    """Successful GETs per second for each number of coroutines, one line per client.

    A point where most calls failed is left out (and named under the chart); a point where
    some failed is drawn hollow.
    """
    columns = [c for c in table if c.measure.concurrency is not None]
    levels = [c.measure.concurrency or 0 for c in columns]
    series: dict[str, list[tuple[int, Figure]]] = {name: [] for name in clients}
    left_out = []
    for index, column in enumerate(columns):
        for name, figure in column.figures.items():
            if figure.calls and figure.failures * 2 > figure.calls:
                share = figure.failures / figure.calls
                left_out.append(f"{name} at {levels[index]} ({share:.0%} of calls failed)")
            else:
                series.setdefault(name, []).append((index, figure))
    series = {name: points for name, points in series.items() if points}
    peak = max((f.value for points in series.values() for _, f in points), default=1.0) or 1.0
    step = _step(peak * 1.05)
    scale = _Scale(levels, math.ceil(peak * 1.05 / step) * step, step)

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img'>",
        "<title>GET throughput against concurrency, per client</title>",
        f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
        _text(LEFT, 30, "GET throughput against concurrency", 18, font_weight="bold"),
        _text(LEFT, 50, subtitle, 12, fill="#555555"),
        *_axes(scale),
    ]
    for name, points in series.items():
        out += _line(scale, name, points)
    any_failed = any(f.failures for points in series.values() for _, f in points)
    out += _legend(list(series), any_failed)
    if left_out:
        note = "Not drawn, most calls failed: " + "; ".join(left_out)
        out.append(_text(LEFT, HEIGHT - 12, note, 12, fill="#555555"))
    out.append("</svg>")
    return "\n".join(out) + "\n"

"""From the raw samples of a run to figures, ratios, targets, a table, JSON and Markdown."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from resilient_cache.cli.bench.clients import BASELINE, BLOCKING_BASELINE
from resilient_cache.cli.bench.harness import (
    C_BENCHMARK,
    Measure,
    Memory,
    Outcome,
    Sample,
    loop_measures,
    median,
)

DOC_START: Final = "<!-- bench:start -->"
DOC_END: Final = "<!-- bench:end -->"

MEMORY_GROWTH_LIMIT: Final = 64 * 1024
"""Traced growth over the whole memory run that still counts as none (allocator noise)."""

MEMORY_JUDGED_FROM: Final = 200_000
"""Fewer gets leave pools and caches still settling: the growth is shown, not judged."""


@dataclass(frozen=True)
class Figure:
    """One client's figure for one measurement: the median over the rounds."""

    value: float
    ratio: float | None
    """Against the column's baseline: time ratio for latencies, throughput ratio otherwise."""
    failures: int
    calls: int
    rounds: list[float]
    p50_us: float | None
    p99_us: float | None
    max_us: float | None
    stall_us: float | None = None
    """The longest event-loop stall of any round (big batches)."""

    @property
    def spread(self) -> float:
        """(max - min) / median over the rounds: how noisy the figure is."""
        if len(self.rounds) < 2 or not self.value:
            return 0.0
        return (max(self.rounds) - min(self.rounds)) / self.value


@dataclass(frozen=True)
class Column:
    """One measurement across clients."""

    measure: Measure
    baseline: str | None
    figures: dict[str, Figure]


@dataclass(frozen=True)
class Target:
    """A goal of the project, and whether the run met it."""

    goal: str
    status: str  # "met", "missed" or "n/a"
    detail: str


def _optional_median(samples: list[Sample], attribute: str) -> float | None:
    values = [getattr(s, attribute) for s in samples if getattr(s, attribute) is not None]
    return median(values) if values else None


def columns(outcome: Outcome) -> list[Column]:
    """Medians and ratios, column by column.

    The baseline is plain redis-py; where it failed calls (its pool refuses more than 50
    commands in flight), redis-py on a blocking pool of the same size.
    """
    result = []
    for measure in loop_measures(outcome.plan, outcome.loops):
        samples = outcome.samples.get(measure.id, {})
        raw: dict[str, tuple[float, int, int, list[Sample]]] = {}
        for name, runs in samples.items():
            if runs:
                raw[name] = (
                    median([s.value for s in runs]),
                    sum(s.failures for s in runs),
                    sum(s.calls for s in runs),
                    runs,
                )
        baseline = next(
            (b for b in (BASELINE, BLOCKING_BASELINE) if b in raw and raw[b][1] == 0), None
        )
        base_value = raw[baseline][0] if baseline else math.nan
        figures = {}
        for name, (value, failures, calls, runs) in raw.items():
            ratio = value / base_value if baseline and base_value else None
            figures[name] = Figure(
                value=value,
                ratio=ratio,
                failures=failures,
                calls=calls,
                rounds=[s.value for s in runs],
                p50_us=_optional_median(runs, "p50_us"),
                p99_us=_optional_median(runs, "p99_us"),
                max_us=_optional_median(runs, "max_us"),
                stall_us=max((s.stall_us for s in runs if s.stall_us is not None), default=None),
            )
        result.append(Column(measure, baseline, figures))
    return result


def _better(column: Column, a: Figure, b: Figure) -> bool:
    if column.measure.higher_is_better:
        return a.value >= b.value
    return a.value <= b.value


def _ratio_target(
    goal: str, table: list[Column], ids: list[str], client: str, limit: float
) -> Target:
    """Every listed column of ``client`` within ``limit`` of the baseline, without failures."""
    parts, verdicts = [], []
    for column in table:
        figure = column.figures.get(client)
        if column.measure.id not in ids or figure is None or figure.ratio is None:
            continue
        high = column.measure.higher_is_better
        within = figure.ratio >= limit if high else figure.ratio <= limit
        verdicts.append(within and figure.failures == 0)
        failed = f", {figure.failures} failed calls" if figure.failures else ""
        parts.append(f"{column.measure.title}: {figure.ratio:.3f}x{failed}")
    if not verdicts:
        return Target(goal, "n/a", f"no {client} figures in this run")
    return Target(goal, "met" if all(verdicts) else "missed", "; ".join(parts))


def _peer_target(table: list[Column], peer: str) -> Target:
    goal = f"stack ahead of {peer}"
    wins, behind = 0, []
    for column in table:
        mine, theirs = column.figures.get("stack"), column.figures.get(peer)
        if mine is None or theirs is None:
            continue
        if mine.failures == 0 and _better(column, mine, theirs):
            wins += 1
        else:
            behind.append(column.measure.title)
    total = wins + len(behind)
    if not total:
        return Target(goal, "n/a", f"{peer} did not run")
    detail = f"ahead in {wins} of {total} columns"
    if behind:
        detail += "; behind or failing in: " + "; ".join(behind)
    return Target(goal, "met" if not behind else "missed", detail)


BREAKER_RATIO: Final = 0.1
"""A call while the breaker is open costs at most this share of a raw sequential GET: a
ratio, not microseconds, which depend on the CPU."""


def _breaker_target(outcome: Outcome, table: list[Column], loop: str = "") -> Target:
    goal = f"a call while the breaker is open <= {BREAKER_RATIO}x a raw sequential GET{_tag(loop)}"
    costs = outcome.breaker_open_us.get(f"stack{loop}")
    raw = next((c.figures.get(BASELINE) for c in table if c.measure.id == f"get{loop}"), None)
    if not costs or raw is None or not raw.value:
        return Target(goal, "n/a", "not measured")
    cost = median(costs)
    ratio = cost / raw.value
    return Target(
        goal, "met" if ratio <= BREAKER_RATIO else "missed",
        f"{ratio:.3f}x ({cost:.1f} us per call against {raw.value:.1f} us)",
    )  # fmt: skip


def _tag(loop: str) -> str:
    """`` [uvloop]`` for the ``@uvloop`` columns, nothing for the first event loop's."""
    return f" [{loop[1:]}]" if loop else ""


C_BENCHMARK_RATIO: Final = 1.0
"""stack+coalesce at 50 coroutines against ``redis-benchmark -c 50`` (the C client)."""


def _c_benchmark_target(table: list[Column], loop: str = "") -> Target:
    goal = (
        f"stack+coalesce at 50 coroutines >= {C_BENCHMARK_RATIO}x {C_BENCHMARK} -c 50{_tag(loop)}"
    )
    column = next((c for c in table if c.measure.id == f"get_x50{loop}"), None)
    mine = column.figures.get("stack+coalesce") if column else None
    theirs = column.figures.get(C_BENCHMARK) if column else None
    if mine is None or theirs is None or not theirs.value:
        return Target(goal, "n/a", f"no stack+coalesce or {C_BENCHMARK} figure in this run")
    ratio = mine.value / theirs.value
    met = ratio >= C_BENCHMARK_RATIO and mine.failures == 0
    return Target(
        goal, "met" if met else "missed",
        f"{ratio:.2f}x ({mine.value:,.0f} against {theirs.value:,.0f} GET/s)",
    )  # fmt: skip


STALL_LIMIT_US: Final = 50_000.0
"""The longest the stack may hold the event loop during a big batch: a tenth of the default
deadline (0.5 s), so that the other requests of the process keep theirs."""


def _stall_target(table: list[Column], loop: str = "") -> Target:
    goal = (
        f"stack's longest loop stall in a big batch <= {STALL_LIMIT_US / 1000:.0f} ms{_tag(loop)}"
    )
    parts, verdicts = [], []
    for column in table:
        figure = column.figures.get("stack")
        in_loop = column.measure.id.partition("@")[2] == loop[1:]
        if not (column.measure.big and in_loop) or figure is None or figure.stall_us is None:
            continue
        verdicts.append(figure.stall_us <= STALL_LIMIT_US and figure.failures == 0)
        failed = f", {figure.failures} failed calls" if figure.failures else ""
        parts.append(f"{column.measure.title}: {_ms(figure.stall_us)}{failed}")
    if not verdicts:
        return Target(goal, "n/a", "no big batch through the stack in this run")
    return Target(goal, "met" if all(verdicts) else "missed", "; ".join(parts))


IMPORT_RATIO: Final = 1.5
"""``import resilient_cache`` at most this many times ``import redis.asyncio``."""


def _import_target(outcome: Outcome) -> Target:
    goal = f"import resilient_cache <= {IMPORT_RATIO}x import redis.asyncio"
    ours = outcome.import_seconds.get("resilient_cache")
    theirs = outcome.import_seconds.get("redis.asyncio")
    if not ours or not theirs:
        return Target(goal, "n/a", "not measured")
    ratio = median(ours) / median(theirs)
    return Target(
        goal, "met" if ratio <= IMPORT_RATIO else "missed",
        f"{ratio:.2f}x ({median(ours) * 1000:.0f} ms against {median(theirs) * 1000:.0f} ms)",
    )  # fmt: skip


def _memory_target(outcome: Outcome) -> Target:
    goal = "no memory growth over 1M gets (under 64 KiB traced)"
    result = outcome.memory.get("stack")
    if result is None:
        return Target(goal, "n/a", "not measured")
    growth = projected_growth(result)
    if result.gets < MEMORY_JUDGED_FROM:
        return Target(
            goal, "n/a", f"{result.gets:,} gets are too few to judge ({how_much(result)})"
        )
    how = "measured" if result.gets >= 1_000_000 else f"projected from {result.gets:,}"
    status = "met" if growth < MEMORY_GROWTH_LIMIT else "missed"
    return Target(goal, status, f"{growth:+,.0f} bytes over 1M gets ({how})")


def how_much(result: Memory) -> str:
    """The traced growth of a memory run, in words."""
    return f"{result.growth:+,} bytes after {result.gets:,} gets"


STACK_RATIO: Final = 1.6
"""The default stack at 50 coroutines against raw redis-py's throughput."""

COALESCE_RATIO: Final = 5.0
"""The stack with read coalescing at 50 coroutines against raw redis-py's throughput."""


def targets(outcome: Outcome, table: list[Column]) -> list[Target]:
    """The project's performance goals, checked against this run, for each event loop."""
    found = []
    for name in outcome.loops:
        loop = "" if name == outcome.loops[0] else f"@{name}"
        tag = _tag(loop)
        found += [
            _ratio_target(
                f"stack sequential latency <= 1.10x redis-py{tag}",
                table, [f"get{loop}", f"set{loop}"], "stack", 1.10,
            ),
            _ratio_target(
                f"stack at 50 coroutines >= {STACK_RATIO}x redis-py throughput{tag}",
                table, [f"get_x50{loop}"], "stack", STACK_RATIO,
            ),
            _ratio_target(
                f"stack+coalesce at 50 coroutines >= {COALESCE_RATIO:.0f}x redis-py{tag}",
                table, [f"get_x50{loop}"], "stack+coalesce", COALESCE_RATIO,
            ),
            _c_benchmark_target(table, loop),
            _breaker_target(outcome, table, loop),
            _stall_target(table, loop),
        ]  # fmt: skip
    own = [c for c in table if "@" not in c.measure.id]
    return [
        *found,
        _peer_target(own, "cashews"),
        _peer_target(own, "aiocache"),
        _memory_target(outcome),
        _import_target(outcome),
    ]


def projected_growth(result: Memory) -> float:
    """Traced growth over a million gets: measured if the run had them, else projected.

    The projection keeps what the first part of the run added (pools, buffers and caches
    settling) and extends the slope between the first and the last checkpoints.
    """
    if result.gets >= 1_000_000 or len(result.checkpoints) < 2:
        return result.growth / result.gets * 1_000_000 if result.gets else math.nan
    (first_gets, first), (last_gets, last) = result.checkpoints[0], result.checkpoints[-1]
    slope = (last - first) / (last_gets - first_gets)
    return first - result.after_warmup + slope * (1_000_000 - first_gets)


# -- formatting --------------------------------------------------------------------------


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "ops/s":
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _label(measure: Measure) -> str:
    return f"{measure.title} ({measure.unit})"


def text_table(outcome: Outcome, table: list[Column]) -> str:
    """The terminal table: a value line and a ratio line per measurement."""
    names = list(outcome.clients)
    widths = [max(len(n), 9) for n in names]
    label_width = max(len(_label(c.measure)) for c in table) + 2
    lines = [" " * label_width + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))]
    flagged = False
    for column in table:
        values, ratios = [], []
        for name, width in zip(names, widths, strict=True):
            figure = column.figures.get(name)
            if figure is None:
                values.append("n/a".rjust(width))
                ratios.append("".rjust(width))
                continue
            mark = "!" if figure.failures else ""
            flagged = flagged or bool(mark)
            values.append((_number(figure.value, column.measure.unit) + mark).rjust(width))
            ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}x"
            if name == column.baseline:
                ratio = "base"
            ratios.append(ratio.rjust(width))
        lines.append(_label(column.measure).ljust(label_width) + "  ".join(values))
        lines.append(" " * label_width + "  ".join(ratios))
    if flagged:
        lines.append("")
        lines.append("! some calls failed (counted out of the throughput):")
        for column in table:
            for name, figure in column.figures.items():
                if figure.failures:
                    share = figure.failures / figure.calls if figure.calls else 0
                    lines.append(
                        f"  {column.measure.title}, {name}: {figure.failures:,} of "
                        f"{figure.calls:,} calls ({share:.1%}); slowest {_ms(figure.max_us)}"
                    )
    return "\n".join(lines)


def _ms(us: float | None) -> str:
    return "n/a" if us is None else f"{us / 1000:,.1f} ms"


def extras(outcome: Outcome, table: list[Column]) -> list[str]:
    """The slowest calls, breaker, refused-connection and memory figures, one line each."""
    lines = []
    busiest = max(table, key=lambda c: c.measure.concurrency or 0)
    if busiest.measure.concurrency:
        slowest = ", ".join(
            f"{name} {_ms(figure.max_us)}" for name, figure in busiest.figures.items()
        )
        lines.append(f"{busiest.measure.title}, slowest call: {slowest}")
    for column in table:
        stalls = [
            f"{name} {_ms(figure.stall_us)}"
            for name, figure in column.figures.items()
            if figure.stall_us is not None
        ]
        if stalls:
            lines.append(f"{column.measure.title}, longest event-loop stall: {', '.join(stalls)}")
    for name, costs in outcome.breaker_open_us.items():
        lines.append(f"{name}, breaker open: {median(costs):.1f} us per call (no I/O)")
    if outcome.refused_us:
        lines.append(
            f"adapter, connection refused (for comparison, no breaker): "
            f"{median(outcome.refused_us):.1f} us per call"
        )
    for name, result in outcome.memory.items():
        lines.append(_memory_line(name, result))
    return lines


def _memory_line(name: str, result: Memory) -> str:
    trend = ", ".join(f"{(b - result.after_warmup):+,}" for _, b in result.checkpoints)
    projected = projected_growth(result)
    scaled = "" if result.gets >= 1_000_000 else f" ({projected:+,.0f} B projected to 1M)"
    failed = f", {result.failures} failed" if result.failures else ""
    return (
        f"{name}, memory: {result.growth:+,} B traced after {result.gets:,} gets vs after "
        f"{result.warmup:,} warm-up gets{scaled}; by quarter: {trend} B; "
        f"{result.seconds:.0f} s with tracemalloc{failed}"
    )


def markdown(
    outcome: Outcome, table: list[Column], found: list[Target], info: dict[str, Any]
) -> str:
    """The figures section of docs/performance.md."""
    names = list(outcome.clients)
    out = [
        f"Last run: {info['date']}, `{info['command']}`, {outcome.plan.rounds} rounds, "
        f"{outcome.seconds:.0f} s; {info['machine']['nproc']} CPUs "
        f"({info['machine']['cpu_model']}), Linux {info['machine']['kernel']}, Python "
        f"{info['versions']['python']}, redis-py {info['versions']['redis']}, hiredis "
        f"{info['versions']['hiredis']}, redis-server {info['versions']['redis-server']}, "
        f"load average {info['load_average']['start']} at the start, "
        f"{info['load_average']['end']} at the end.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for column in table:
        cells = []
        for name in names:
            figure = column.figures.get(name)
            if figure is None:
                cells.append("n/a")
                continue
            value = _number(figure.value, column.measure.unit)
            if figure.failures:
                share = figure.failures / figure.calls if figure.calls else 0
                value += f" ⚠ {share:.1%} failed"
            if name == column.baseline:
                cells.append(f"{value} (base)")
            elif figure.ratio is not None:
                cells.append(f"{value} ({figure.ratio:.2f}x)")
            else:
                cells.append(value)
        out.append(f"| {_label(column.measure)} | " + " | ".join(cells) + " |")
    out.append("")
    out += [f"- {line}" for line in extras(outcome, table)]
    unavailable = [(n, c["reason"]) for n, c in outcome.clients.items() if c["status"] != "ok"]
    out += [f"- {name}: n/a ({reason})" for name, reason in unavailable]
    out += ["", "| target | status | this run |", "|---|---|---|"]
    out += [f"| {t.goal} | {t.status} | {t.detail} |" for t in found]
    if outcome.notes:
        out += ["", "Notes from the run:", ""]
        out += [f"- {note}" for note in grouped_notes(outcome.notes)]
    return "\n".join(out)


def grouped_notes(notes: list[str]) -> list[str]:
    """Notes that differ only in their round, once each, with the rounds listed."""
    rounds: dict[str, list[str]] = {}
    for note in notes:
        text, _, which = note.rpartition(" (round ")
        if text and which.endswith(")"):
            rounds.setdefault(text, []).append(which[:-1])
        else:
            rounds.setdefault(note, [])
    return [
        f"{text} (round{'s' if len(which) > 1 else ''} {', '.join(which)})" if which else text
        for text, which in rounds.items()
    ]


def update_doc(path: Path, section: str) -> bool:
    """Replace what lies between the markers of ``path``; ``False`` if they are missing."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(DOC_START), text.find(DOC_END)
    if start < 0 or end < start:
        return False
    head = text[: start + len(DOC_START)]
    path.write_text(f"{head}\n{section}\n{text[end:]}", encoding="utf-8")
    return True


def as_json(
    outcome: Outcome, table: list[Column], found: list[Target], info: dict[str, Any]
) -> str:
    """Raw figures, ratios, targets and the environment, for machines."""
    results: dict[str, Any] = {}
    for column in table:
        results[column.measure.id] = {
            "title": column.measure.title,
            "unit": column.measure.unit,
            "higher_is_better": column.measure.higher_is_better,
            "concurrency": column.measure.concurrency,
            "baseline": column.baseline,
            "clients": {
                name: {
                    "median": figure.value,
                    "ratio": figure.ratio,
                    "rounds": figure.rounds,
                    "spread": figure.spread,
                    "calls": figure.calls,
                    "failures": figure.failures,
                    "p50_us": figure.p50_us,
                    "p99_us": figure.p99_us,
                    "max_us": figure.max_us,
                    "stall_us": figure.stall_us,
                }
                for name, figure in column.figures.items()
            },
        }
    document = {
        "schema": 1,
        **info,
        "duration_s": round(outcome.seconds, 1),
        "event_loop": outcome.event_loop,
        "event_loops": outcome.loops,
        "plan": asdict(outcome.plan),
        "clients": outcome.clients,
        "results": results,
        "breaker_open_us": {
            name: {"median": median(costs), "rounds": costs}
            for name, costs in outcome.breaker_open_us.items()
        },
        "connection_refused_us": {
            "client": "adapter",
            "median": median(outcome.refused_us) if outcome.refused_us else None,
            "rounds": outcome.refused_us,
        },
        "memory": {
            name: {
                **asdict(result),
                "growth_bytes": result.growth,
                "growth_over_1m_gets": projected_growth(result),
                "projected": result.gets < 1_000_000,
            }
            for name, result in outcome.memory.items()
        },
        "targets": [asdict(t) for t in found],
        "notes": outcome.notes,
    }
    return json.dumps(_finite(document), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value

"""Generate grafana/dashboards/resilient-cache.json, the resilient-cache Grafana dashboard.

Run it from anywhere after changing a panel, and commit both files::

    python grafana/generate.py           # rewrite the JSON
    python grafana/generate.py --check   # exit 1 if the committed JSON is out of date

Standard library only. The output is deterministic (same input, same bytes), and
tests/observability/test_assets.py checks that the committed JSON is what this script writes.

Conventions, so that the dashboard imports into any Grafana (and the tests enforce them):

* every panel and query uses the ``datasource`` variable as ``${datasource}``, never a
  ``${DS_...}`` import input, so there is nothing to map on import;
* every ``resilient_cache_*`` selector carries ``job=~"$job", instance=~"$instance",
  cache=~"$cache"``; the Redis server panels (redis_exporter metrics, which have no ``cache``
  label and come from another job) carry ``job=~"$redis_job", instance=~"$redis_instance"``;
* every ``rate``/``increase`` uses ``[$__rate_interval]``;
* queries use raw metrics only, no recording rules, so the dashboard works without
  prometheus/rules/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "resilient-cache.json"

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance", cache=~"$cache"'
"""The label filter of every resilient_cache_* selector."""
REDIS_SEL = 'job=~"$redis_job", instance=~"$redis_instance"'
"""The label filter of every redis_exporter selector."""
RI = "[$__rate_interval]"

HIT = 'result="hit"'
FALLBACK = 'result="fallback"'
NOT_FALLBACK = 'result!="fallback"'
NON_SUCCESS = 'outcome!="success"'
OPEN = 'state="open"'
USED = 'state="used"'

DURATION = "resilient_cache_operation_duration_seconds"
DEADLINE = 0.5  # the default per-call deadline (CACHE_DEADLINE), drawn on latency panels

BREAKER_STATES = (("closed", 0, "green"), ("half_open", 1, "yellow"), ("open", 2, "red"))


def sel(metric: str, extra: str = "") -> str:
    """A resilient_cache selector with the dashboard's filters (and ``extra`` matchers)."""
    return f"{metric}{{{SEL}{', ' + extra if extra else ''}}}"


def rsel(metric: str) -> str:
    """A redis_exporter selector with the Redis variables' filters."""
    return f"{metric}{{{REDIS_SEL}}}"


def rate(selector: str) -> str:
    return f"rate({selector}{RI})"


def calls(by: str = "", extra: str = "") -> str:
    """Calls per second, from the histogram's _count."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({rate(sel(DURATION + '_count', extra))})"


def quantile(q: float, by: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(sel(DURATION + '_bucket'))}))"


# -- building blocks --------------------------------------------------------------------------


class Builder:
    """Lays panels out on Grafana's 24-column grid, row by row, numbering them."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self._next_id = 1
        self._x = 0
        self._y = 0
        self._row_height = 0

    def _id(self) -> int:
        panel_id = self._next_id
        self._next_id += 1
        return panel_id

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "id": self._id(),
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        self._y += 1

    def _newline(self) -> None:
        self._y += self._row_height
        self._x = 0
        self._row_height = 0

    def add(self, panel: Json, *, w: int, h: int) -> None:
        if self._x + w > 24:
            self._newline()
        panel = {"id": self._id(), "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y}, **panel}
        self.panels.append(panel)
        self._x += w
        self._row_height = max(self._row_height, h)


def targets(*queries: tuple[str, str]) -> list[Json]:
    """Prometheus targets from ``(expr, legendFormat)`` pairs."""
    return [
        {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": expr,
            "legendFormat": legend or "__auto",
            "range": True,
            "refId": chr(ord("A") + index),
        }
        for index, (expr, legend) in enumerate(queries)
    ]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str,
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
    mappings: list[Json] | None = None,
    decimals: int | None = None,
) -> Json:
    defaults: Json = {
        "color": {"mode": "thresholds"},
        "mappings": mappings or [],
        "thresholds": thresholds(*steps),
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
        "targets": targets((expr, "")),
        "title": title,
        "type": "stat",
    }


def timeseries(
    title: str,
    description: str,
    *queries: tuple[str, str],
    unit: str,
    stack: bool = False,
    bars: bool = False,
    deadline_line: bool = False,
    max_value: float | None = None,
) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if bars else (25 if stack else 10),
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
    }
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    if deadline_line:
        custom["thresholdsStyle"] = {"mode": "dashed"}
        steps = ((None, "transparent"), (DEADLINE, "red"))
    defaults: Json = {
        "color": {"mode": "palette-classic"},
        "custom": custom,
        "thresholds": thresholds(*steps),
        "unit": unit,
    }
    if max_value is not None:
        defaults["min"] = 0
        defaults["max"] = max_value
    return {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets(*queries),
        "title": title,
        "type": "timeseries",
    }


def breaker_timeline() -> Json:
    # The one-hot gauge folded into one series per (instance, cache): 0 closed,
    # 1 half_open, 2 open, shown as named, coloured states.
    parts = []
    for state, value, _ in BREAKER_STATES:
        selector = sel("resilient_cache_circuit_breaker_state", 'state="' + state + '"')
        parts.append(f"({selector} == 1) * {value}")
    expr = "max by (instance, cache) (\n  " + "\n  or ".join(parts) + "\n)"
    mapping: Json = {
        "options": {
            str(value): {"color": color, "index": value, "text": state}
            for state, value, color in BREAKER_STATES
        },
        "type": "value",
    }
    return {
        "datasource": DATASOURCE,
        "description": (
            "The state of each circuit breaker over time: closed (healthy), half_open "
            "(probing Redis), open (calls fail at once with circuit_open and are served "
            "from the source of truth)."
        ),
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "custom": {"fillOpacity": 80, "lineWidth": 0},
                "mappings": [mapping],
                "thresholds": thresholds((None, "green")),
            },
            "overrides": [],
        },
        "options": {
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "mergeValues": True,
            "rowHeight": 0.9,
            "showValue": "auto",
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": targets((expr, "{{cache}} @ {{instance}}")),
        "title": "Circuit breaker state",
        "type": "state-timeline",
    }


def heatmap() -> Json:
    return {
        "datasource": DATASOURCE,
        "description": (
            "Distribution of call durations as callers see them (retries and backoff "
            "included), from the histogram buckets. Anything above the deadline "
            f"({DEADLINE} s by default) breaks the bounded-latency promise."
        ),
        "fieldConfig": {
            "defaults": {"custom": {"scaleDistribution": {"type": "linear"}}},
            "overrides": [],
        },
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "yAxis": {"axisPlacement": "left", "unit": "s"},
        },
        "targets": [
            {
                **targets((f"sum by (le) (increase({sel(DURATION + '_bucket')}{RI}))", "{{le}}"))[
                    0
                ],
                "format": "heatmap",
            }
        ],
        "title": "Call duration heatmap",
        "type": "heatmap",
    }


def variable(name: str, label: str, query: str, *, hide: int = 0) -> Json:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": hide,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def templating() -> Json:
    count = f"{DURATION}_count"
    return {
        "list": [
            {
                "current": {},
                "hide": 0,
                "includeAll": False,
                "label": "Data source",
                "multi": False,
                "name": "datasource",
                "options": [],
                "query": "prometheus",
                "refresh": 1,
                "regex": "",
                "type": "datasource",
            },
            variable("job", "Job", f"label_values({count}, job)"),
            variable("instance", "Instance", f'label_values({count}{{job=~"$job"}}, instance)'),
            variable(
                "cache",
                "Cache",
                f'label_values({count}{{job=~"$job", instance=~"$instance"}}, cache)',
            ),
            variable("redis_job", "Redis job", "label_values(redis_up, job)"),
            variable(
                "redis_instance",
                "Redis instance",
                'label_values(redis_up{job=~"$redis_job"}, instance)',
            ),
        ]
    }


# -- the dashboard ------------------------------------------------------------------------


def panels() -> list[Json]:
    b = Builder()

    b.row("Overview")
    b.add(
        stat(
            "Calls/s",
            "Cache calls per second, every operation, as callers see them.",
            calls(),
            unit="reqps",
        ),
        w=5,
        h=5,
    )
    b.add(
        stat(
            "Failure ratio",
            "Share of calls that did not succeed (outcome fallback or error).",
            # "or ... * 0": 0, not "No data", before the first failure is ever recorded
            f"({calls(extra=NON_SUCCESS)} or {calls()} * 0)\n/\n({calls()} > 0)",
            unit="percentunit",
            steps=((None, "green"), (0.01, "yellow"), (0.05, "red")),
            decimals=2,
        ),
        w=5,
        h=5,
    )
    gets = "resilient_cache_gets_total"
    b.add(
        stat(
            "Hit ratio (effective)",
            "Hits over all keys looked up; a fallback (cache unavailable) counts as a miss.",
            f"sum ({rate(sel(gets, HIT))})\n/\n(sum ({rate(sel(gets))}) > 0)",
            unit="percentunit",
            steps=((None, "red"), (0.5, "yellow"), (0.8, "green")),
            decimals=1,
        ),
        w=5,
        h=5,
    )
    b.add(
        stat(
            "p99 latency",
            f"99th percentile of call duration; the default deadline is {DEADLINE} s.",
            quantile(0.99),
            unit="s",
            steps=((None, "green"), (DEADLINE / 2, "yellow"), (DEADLINE, "red")),
        ),
        w=5,
        h=5,
    )
    b.add(
        stat(
            "Open breakers",
            "Circuit breakers currently open (one per cache and instance).",
            f"sum ({sel('resilient_cache_circuit_breaker_state', OPEN)})",
            unit="none",
            steps=((None, "green"), (1, "red")),
            decimals=0,
        ),
        w=4,
        h=5,
    )

    b.row("RED per operation")
    b.add(
        timeseries(
            "Calls/s by operation",
            "Rate of calls per operation.",
            (calls("operation"), "{{operation}}"),
            unit="reqps",
            stack=True,
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Failure ratio by operation",
            "Share of calls per operation that did not succeed (fallback or error).",
            (
                f"({calls('operation', NON_SUCCESS)} or {calls('operation')} * 0)"
                f"\n/\n({calls('operation')} > 0)",
                "{{operation}}",
            ),
            unit="percentunit",
            max_value=1,
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Calls/s by outcome",
            "success; fallback: the cache was unavailable and the caller served from the "
            "source of truth; error: the request itself was bad (validation, serialization, "
            "wrong_type).",
            (calls("outcome"), "{{outcome}}"),
            unit="reqps",
            stack=True,
        ),
        w=8,
        h=8,
    )
    for q in (0.5, 0.95, 0.99):
        b.add(
            timeseries(
                f"p{round(q * 100)} latency by operation",
                f"{round(q * 100)}th percentile of call duration per operation; the dashed "
                f"line is the default deadline ({DEADLINE} s).",
                (quantile(q, "operation"), "{{operation}}"),
                unit="s",
                deadline_line=True,
            ),
            w=8,
            h=8,
        )
    b.add(
        timeseries(
            "Errors/s by operation and error type",
            "Failed calls by operation and error code (connection, timeout, circuit_open, ...).",
            (
                f"sum by (operation, error_type) ({rate(sel('resilient_cache_errors_total'))})",
                "{{operation}} {{error_type}}",
            ),
            unit="reqps",
            stack=True,
        ),
        w=24,
        h=8,
    )

    b.row("Cache")
    b.add(
        timeseries(
            "Lookups/s by result",
            "Keys looked up per second (a get_many counts each key): hit, miss, or fallback "
            "(the cache was unavailable).",
            (f"sum by (result) ({rate(sel(gets))})", "{{result}}"),
            unit="ops",
            stack=True,
        ),
        w=12,
        h=8,
    )
    hit = f"sum by (cache) ({rate(sel(gets, HIT))})"
    answered = f"sum by (cache) ({rate(sel(gets, NOT_FALLBACK))})"
    every = f"sum by (cache) ({rate(sel(gets))})"
    b.add(
        timeseries(
            "Hit ratio by cache",
            "effective: hits over every lookup, a fallback counting as a miss (what the source "
            "of truth feels); answered: hits over the lookups the cache answered.",
            (f"{hit}\n/\n({every} > 0)", "{{cache}} effective"),
            (f"{hit}\n/\n({answered} > 0)", "{{cache}} answered"),
            unit="percentunit",
            max_value=1,
        ),
        w=12,
        h=8,
    )

    b.row("Resilience")
    b.add(breaker_timeline(), w=24, h=6)
    b.add(
        timeseries(
            "Breaker transitions",
            "Circuit breaker state changes per interval.",
            (
                "sum by (cache, from_state, to_state) "
                f"(increase({sel('resilient_cache_circuit_breaker_transitions_total')}{RI}))",
                "{{cache}} {{from_state}} -> {{to_state}}",
            ),
            unit="short",
            bars=True,
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Retries/s by error type",
            "Retries made by the retry layer, by the error that caused them.",
            (
                f"sum by (error_type) ({rate(sel('resilient_cache_retries_total'))})",
                "{{error_type}}",
            ),
            unit="ops",
            stack=True,
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Retry budget exhausted/s",
            "Retries refused because the retry budget was spent: the failure rate is high "
            "enough that retrying would add load.",
            (
                f"sum by (cache) ({rate(sel('resilient_cache_retry_budget_exhausted_total'))})",
                "{{cache}}",
            ),
            unit="ops",
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Fail-open fallbacks/s",
            "Calls that failed because the cache was unavailable, so the caller served from "
            "the source of truth, by operation; and the keys looked up that way.",
            (calls("operation", 'outcome="fallback"'), "{{operation}} calls"),
            (f"sum ({rate(sel(gets, FALLBACK))})", "lookups (keys)"),
            unit="ops",
        ),
        w=24,
        h=8,
    )

    b.row("Latency")
    b.add(heatmap(), w=24, h=9)

    b.row("Connection pool")
    pool = "resilient_cache_pool_connections"
    b.add(
        timeseries(
            "Pool connections",
            "Connections in each pool: idle, and used (checked out by a call).",
            (
                f"sum by (instance, cache, state) ({sel(pool)})",
                "{{cache}} @ {{instance}} {{state}}",
            ),
            unit="short",
            stack=True,
        ),
        w=12,
        h=8,
    )
    b.add(
        timeseries(
            "Pool utilisation",
            "Used connections over all connections of each pool.",
            (
                f"sum by (instance, cache) ({sel(pool, USED)})\n/\n"
                f"(sum by (instance, cache) ({sel(pool)}) > 0)",
                "{{cache}} @ {{instance}}",
            ),
            unit="percentunit",
            max_value=1,
        ),
        w=12,
        h=8,
    )

    b.row("Near cache")
    near = "resilient_cache_near_cache_lookups_total"
    b.add(
        timeseries(
            "Near-cache lookups/s by result",
            "Keys looked up in the in-process near cache: hit (served from memory, no network "
            "call), miss (went to Redis). Nothing here when the near cache is not enabled.",
            (f"sum by (result) ({rate(sel(near))})", "{{result}}"),
            unit="ops",
            stack=True,
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Near-cache hit ratio by cache",
            "Near-cache hits over near-cache lookups. Drops to 0 while the invalidation "
            "channel is down: the near cache is flushed and stops serving.",
            (
                f"sum by (cache) ({rate(sel(near, HIT))})\n/\n"
                f"(sum by (cache) ({rate(sel(near))}) > 0)",
                "{{cache}}",
            ),
            unit="percentunit",
            max_value=1,
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Near-cache entries",
            "Entries each instance holds in its near cache.",
            (
                f"sum by (instance, cache) ({sel('resilient_cache_near_cache_entries')})",
                "{{cache}} @ {{instance}}",
            ),
            unit="short",
        ),
        w=8,
        h=8,
    )
    b.add(
        timeseries(
            "Near-cache invalidations/s",
            "Keys dropped because Redis announced a change (any client's write, expiry, "
            "eviction) on the invalidation channel.",
            (
                f"sum by (cache) ({rate(sel('resilient_cache_near_cache_invalidations_total'))})",
                "{{cache}}",
            ),
            unit="ops",
        ),
        w=12,
        h=8,
    )
    b.add(
        timeseries(
            "Near-cache flushes by reason",
            "Whole near-cache flushes: channel_lost (the invalidation channel dropped: "
            "disconnect, failover, Redis down), breaker_open (the circuit breaker opened), "
            "server_flush (FLUSHALL/FLUSHDB), local (flush or delete_pattern through the layer).",
            (
                f"sum by (reason) (increase({sel('resilient_cache_near_cache_flushes_total')}"
                f"{RI}))",
                "{{reason}}",
            ),
            unit="short",
            bars=True,
        ),
        w=12,
        h=8,
    )

    b.row("Redis server (redis_exporter)")
    b.add(
        stat(
            "Redis up",
            "Whether redis_exporter could reach Redis at its last scrape.",
            f"min ({rsel('redis_up')})",
            unit="none",
            steps=((None, "red"), (1, "green")),
            mappings=[
                {
                    "options": {
                        "0": {"color": "red", "index": 0, "text": "DOWN"},
                        "1": {"color": "green", "index": 1, "text": "UP"},
                    },
                    "type": "value",
                }
            ],
        ),
        w=4,
        h=8,
    )
    b.add(
        timeseries(
            "Connected clients",
            "Client connections to Redis.",
            (f"sum by (instance) ({rsel('redis_connected_clients')})", "{{instance}}"),
            unit="short",
        ),
        w=5,
        h=8,
    )
    b.add(
        timeseries(
            "Memory used",
            "Memory used by Redis, and its maxmemory (0 when unlimited).",
            (f"sum by (instance) ({rsel('redis_memory_used_bytes')})", "{{instance}} used"),
            (f"sum by (instance) ({rsel('redis_memory_max_bytes')})", "{{instance}} max"),
            unit="bytes",
        ),
        w=5,
        h=8,
    )
    b.add(
        timeseries(
            "Commands/s",
            "Commands processed by Redis per second.",
            (
                f"sum by (instance) ({rate(rsel('redis_commands_processed_total'))})",
                "{{instance}}",
            ),
            unit="ops",
        ),
        w=5,
        h=8,
    )
    hits = f"sum by (instance) ({rate(rsel('redis_keyspace_hits_total'))})"
    misses = f"sum by (instance) ({rate(rsel('redis_keyspace_misses_total'))})"
    b.add(
        timeseries(
            "Keyspace hit ratio",
            "Redis's own view: key lookups that found the key, for every client of the server.",
            (f"{hits}\n/\n(({hits} + {misses}) > 0)", "{{instance}}"),
            unit="percentunit",
            max_value=1,
        ),
        w=5,
        h=8,
    )
    return b.panels


def dashboard() -> Json:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": (
            "resilient-cache: calls, outcomes, latency, hit ratio, circuit breakers, retries, "
            "connection pools and the Redis server. Generated by grafana/generate.py."
        ),
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels(),
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["resilient-cache", "redis", "cache"],
        "templating": templating(),
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "resilient-cache",
        "uid": "resilient-cache",
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    """The dashboard as the exact text of the committed file."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed file is out of date"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

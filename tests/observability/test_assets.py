"""The observability assets, checked without Docker or Grafana.

* grafana/dashboards/resilient-cache.json: what grafana/generate.py writes, importable
  anywhere (a ``datasource`` variable, no ``${DS_...}``), every query filtered by the
  variables, on ``$__rate_interval``, naming only metrics that exist, valid PromQL;
* grafana/provisioning/: where docker-compose.yml mounts it and points Grafana;
* prometheus/: ``promtool check config``, ``check rules`` and ``test rules`` pass, every
  alert has a severity, a summary, a description and a runbook link, and is tested firing
  and not firing;
* docker-compose.yml: pinned images, healthchecks, host ports on 127.0.0.1 only, mounts that
  exist, scrape targets that are its services' ports;
* toxiproxy/toxiproxy.json: loaded by a real toxiproxy-server;
* examples/service/app.py: serves users with Redis up and down, and its metrics;
* end to end: a real Prometheus scrapes a synthetic exposition of every metric, loads the
  rules, and every dashboard query returns data.

promtool, prometheus and toxiproxy-server are found with ``require_binary``: skipped when
missing locally, a failure under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from resilient_cache.testing import stop_process
from tests.servers import LOOPBACK, RedisServer, free_port, require_binary

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "resilient-cache.json"
GENERATOR = ROOT / "grafana" / "generate.py"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "resilient-cache.yml"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
RULES = ROOT / "prometheus" / "rules" / "resilient-cache.rules.yml"
RULE_TESTS = ROOT / "prometheus" / "rules" / "resilient-cache.rules.test.yml"
COMPOSE = ROOT / "docker-compose.yml"
TOXIPROXY_CONFIG = ROOT / "toxiproxy" / "toxiproxy.json"
EXAMPLE_APP = ROOT / "examples" / "service" / "app.py"
OBSERVABILITY_DOC = ROOT / "docs" / "observability.md"

# The telemetry vocabulary (docs/observability.md, /work/shared/DESIGN.md), as exposed.
HISTOGRAM = "resilient_cache_operation_duration_seconds"
LIBRARY_METRICS = {
    f"{HISTOGRAM}_bucket",
    f"{HISTOGRAM}_sum",
    f"{HISTOGRAM}_count",
    "resilient_cache_gets_total",
    "resilient_cache_errors_total",
    "resilient_cache_retries_total",
    "resilient_cache_retry_budget_exhausted_total",
    "resilient_cache_circuit_breaker_state",
    "resilient_cache_circuit_breaker_transitions_total",
    "resilient_cache_pool_connections",
    "resilient_cache_near_cache_lookups_total",
    "resilient_cache_near_cache_invalidations_total",
    "resilient_cache_near_cache_flushes_total",
    "resilient_cache_near_cache_entries",
}
# The redis_exporter (oliver006) metrics the assets may use.
REDIS_EXPORTER_METRICS = {
    "redis_up",
    "redis_connected_clients",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_commands_processed_total",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
}
# Prometheus's own, one per scrape target.
PROMETHEUS_METRICS = {"up"}
KNOWN_METRICS = LIBRARY_METRICS | REDIS_EXPORTER_METRICS | PROMETHEUS_METRICS

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
LIBRARY_FILTERS = ('job=~"$job"', 'instance=~"$instance"', 'cache=~"$cache"')
REDIS_FILTERS = ('job=~"$redis_job"', 'instance=~"$redis_instance"')
ROWS = [
    "Overview",
    "RED per operation",
    "Cache",
    "Resilience",
    "Latency",
    "Connection pool",
    "Near cache",
    "Redis server (redis_exporter)",
]
ALERTS = {
    "ResilientCacheBreakerOpen",
    "ResilientCacheBreakerFlapping",
    "ResilientCacheFailureRatioHigh",
    "ResilientCacheServingFallbacks",
    "ResilientCacheHitRatioDropped",
    "ResilientCacheRetryStorm",
    "ResilientCacheP99AboveDeadline",
    "RedisDown",
    "RedisExporterDown",
}
SEVERITIES = {"critical", "warning", "info"}
HOST_PORTS = {"grafana": 3000, "prometheus": 9090, "service": 8000}

_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_PREFIXED = re.compile(r"\b((?:resilient_cache|redis)_[a-zA-Z0-9_]+)")
_RANGE = re.compile(r"\[([^\]]*)\]")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_module(path: Path, name: str) -> ModuleType:
    """Import a file that is not in a package (grafana/generate.py, the example app)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def selectors(expr: str) -> list[tuple[str, str]]:
    """``(metric, "{matchers}")`` for each metric named in a PromQL expression."""
    return [
        (match.group(1), match.group(2) or "")
        for match in _SELECTOR.finditer(expr)
        if match.group(1) in KNOWN_METRICS or _PREFIXED.fullmatch(match.group(1))
    ]


def metric_names(expr: str) -> set[str]:
    """Every name used as a metric: prefixed ones, and any name followed by a selector."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    named = set(_PREFIXED.findall(without_strings))
    with_braces = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", without_strings))
    return named | with_braces


# -- the dashboard -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> Any:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(dashboard: Any) -> Iterator[Any]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def query_panels(dashboard: Any) -> list[Any]:
    return [panel for panel in all_panels(dashboard) if panel["type"] != "row"]


def exprs(dashboard: Any) -> list[str]:
    return [t["expr"] for panel in query_panels(dashboard) for t in panel["targets"]]


def test_generated_dashboard_is_committed() -> None:
    generate = load_module(GENERATOR, "resilient_cache_grafana_generate")
    assert DASHBOARD.read_text(encoding="utf-8") == generate.render(), (
        "grafana/dashboards/resilient-cache.json is out of date: run python grafana/generate.py"
    )
    assert generate.render() == generate.render()  # deterministic


def test_dashboard_is_importable_anywhere(dashboard: Any) -> None:
    assert dashboard["uid"] == "resilient-cache"
    assert dashboard["id"] is None
    assert 36 <= dashboard["schemaVersion"] <= 41
    text = DASHBOARD.read_text(encoding="utf-8")
    assert "${DS_" not in text and "__inputs" not in dashboard
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    for name in ("job", "instance", "cache", "redis_job", "redis_instance"):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable["multi"] is True and variable["includeAll"] is True, name
        assert variable["query"].startswith("label_values("), name
        assert variable["datasource"] == DATASOURCE_REF, name


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: Any) -> None:
    panels = query_panels(dashboard)
    assert panels
    for panel in panels:
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]


def test_every_range_is_the_rate_interval(dashboard: Any) -> None:
    for expr in exprs(dashboard):
        ranges = _RANGE.findall(expr)
        assert all(r == "$__rate_interval" for r in ranges), expr
        if "rate(" in expr or "increase(" in expr:
            assert ranges, expr


def test_every_query_is_filtered_by_the_variables(dashboard: Any) -> None:
    for expr in exprs(dashboard):
        found = selectors(expr)
        assert found, expr
        for metric, matchers in found:
            filters = LIBRARY_FILTERS if metric.startswith("resilient_cache_") else REDIS_FILTERS
            for matcher in filters:
                assert matcher in matchers, f"{metric}{matchers} lacks {matcher}: {expr}"


def test_every_metric_exists(dashboard: Any) -> None:
    used = set().union(*(metric_names(expr) for expr in exprs(dashboard)))
    assert used <= KNOWN_METRICS, used - KNOWN_METRICS
    assert LIBRARY_METRICS - {f"{HISTOGRAM}_sum"} <= used  # every family has a panel


def test_dashboard_layout(dashboard: Any) -> None:
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ROWS
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(set(ids)) == len(ids)
    types = {panel["type"] for panel in query_panels(dashboard)}
    assert {"stat", "timeseries", "state-timeline", "heatmap"} <= types
    cells: set[tuple[int, int]] = set()
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
    heatmap = next(p for p in query_panels(dashboard) if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap"
    assert f"{HISTOGRAM}_bucket" in heatmap["targets"][0]["expr"]


def concrete(expr: str, rate_interval: str = "1m") -> str:
    """A dashboard query with its variables replaced, as Grafana would send it."""
    expr = expr.replace("$__rate_interval", rate_interval)
    for name in ("redis_instance", "redis_job", "instance", "job", "cache"):
        expr = expr.replace(f"${name}", ".*")
    return expr


def test_dashboard_queries_are_valid_promql(dashboard: Any, tmp_path: Path) -> None:
    promtool = require_binary("promtool", "RESILIENT_CACHE_PROMTOOL")
    rules = [
        {"record": f"dashboard:query_{index}", "expr": concrete(expr)}
        for index, expr in enumerate(exprs(dashboard))
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


# -- Grafana provisioning ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Any:
    return load_yaml(COMPOSE)


def mounts(service: Any) -> dict[str, Path]:
    """Container path -> repository path, for each bind mount of a compose service."""
    found: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        assert source.startswith("./"), f"not a bind mount of the repository: {volume}"
        found[target] = ROOT / source
    return found


def in_container(service: Any, container_path: str) -> Path:
    """The repository file that a container path of ``service`` resolves to."""
    for target, source in sorted(mounts(service).items(), key=lambda item: -len(item[0])):
        if container_path == target or container_path.startswith(target + "/"):
            return source / container_path.removeprefix(target).lstrip("/")
    raise AssertionError(f"{container_path} is not mounted")


def test_datasource_provisioning(compose: Any) -> None:
    config = load_yaml(DATASOURCES)
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["isDefault"] is True
    url = urllib.parse.urlsplit(source["url"])
    assert url.hostname in compose["services"]
    assert str(url.port) in compose["services"][url.hostname]["expose"]
    grafana = compose["services"]["grafana"]
    assert in_container(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml") == (
        DATASOURCES
    )


def test_dashboard_provisioning(compose: Any) -> None:
    config = load_yaml(DASHBOARD_PROVIDERS)
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    grafana = compose["services"]["grafana"]
    assert in_container(grafana, "/etc/grafana/provisioning/dashboards/resilient-cache.yml") == (
        DASHBOARD_PROVIDERS
    )
    directory = in_container(grafana, provider["options"]["path"])
    assert directory.is_dir() and DASHBOARD in directory.glob("*.json")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert in_container(grafana, home) == DASHBOARD
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# -- docker-compose.yml ------------------------------------------------------------------------


def pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(c.isdigit() for c in tag)


def test_compose_services(compose: Any) -> None:
    services = compose["services"]
    assert set(services) == {
        "redis",
        "toxiproxy",
        "service",
        "prometheus",
        "grafana",
        "redis-exporter",
    }
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            dockerfile = ROOT / build["context"] / build["dockerfile"]
            for line in dockerfile.read_text().splitlines():
                if line.startswith("FROM "):
                    assert pinned(line.split()[1]), f"{dockerfile}: {line}"
                if line.startswith("COPY ") and "--from" not in line:
                    for source in line.split()[1:-1]:
                        assert (ROOT / build["context"] / source).exists(), f"{name}: {line}"
        else:
            assert pinned(service["image"]), f"{name}: {service['image']}"
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, name
        for target, source in mounts(service).items():
            assert source.exists(), f"{name} mounts {source}, which is missing"
            assert target.startswith("/"), name


def test_compose_host_ports(compose: Any) -> None:
    published: dict[str, int] = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host, host_port, container_port = str(port).split(":")
            assert host == LOOPBACK, f"{name} publishes {port} beyond the loopback interface"
            assert host_port == container_port, port
            assert container_port in service["expose"], port
            published[name] = int(host_port)
    assert published == HOST_PORTS


def test_compose_service_reaches_redis_through_toxiproxy(compose: Any) -> None:
    services = compose["services"]
    url = urllib.parse.urlsplit(services["service"]["environment"]["CACHE_REDIS_URL"])
    [proxy] = json.loads(TOXIPROXY_CONFIG.read_text())
    assert proxy["name"] == "redis" and proxy.get("enabled", True)
    assert url.hostname == "toxiproxy"
    assert proxy["listen"] == f"0.0.0.0:{url.port}"
    assert str(url.port) in services["toxiproxy"]["expose"]
    upstream_host, upstream_port = proxy["upstream"].split(":")
    assert upstream_port in services[upstream_host]["expose"]
    toxiproxy = services["toxiproxy"]
    config_flag = next(a for a in toxiproxy["command"] if a.startswith("-config="))
    assert in_container(toxiproxy, config_flag.removeprefix("-config=")) == TOXIPROXY_CONFIG
    exporter = urllib.parse.urlsplit(services["redis-exporter"]["environment"]["REDIS_ADDR"])
    assert exporter.hostname == "redis" and str(exporter.port) in services["redis"]["expose"]


# -- Prometheus --------------------------------------------------------------------------------


def test_scrape_targets_are_compose_services(compose: Any) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    services = compose["services"]
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(set(jobs)) == len(jobs)
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {
        "service": "service:8000",
        "redis": "redis-exporter:9121",
        "prometheus": "prometheus:9090",
    }
    for target in targets.values():
        host, port = target.split(":")
        assert port in services[host]["expose"], target
    assert config["global"]["scrape_interval"] == "5s"
    prometheus = services["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    container_config = config_flag.removeprefix("--config.file=")
    assert in_container(prometheus, container_config) == PROMETHEUS_CONFIG
    for rule_file in config["rule_files"]:
        container_rules = str(Path(container_config).parent / rule_file)
        assert in_container(prometheus, container_rules) == RULES


def promtool_run(*args: str) -> str:
    promtool = require_binary("promtool", "RESILIENT_CACHE_PROMTOOL")
    run = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_promtool_check_config() -> None:
    assert "SUCCESS" in promtool_run("check", "config", str(PROMETHEUS_CONFIG))


def test_promtool_check_rules() -> None:
    assert f"SUCCESS: {len(ALERTS)} rules found" in promtool_run("check", "rules", str(RULES))


def test_promtool_test_rules() -> None:
    assert "SUCCESS" in promtool_run("test", "rules", str(RULE_TESTS))


def alerting_rules() -> list[Any]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def test_alerts_are_documented() -> None:
    rules = alerting_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"].endswith(f"docs/observability.md#{name.lower()}"), name
        assert metric_names(rule["expr"]) <= KNOWN_METRICS, name


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, list[bool]] = {}
    for test in load_yaml(RULE_TESTS)["tests"]:
        for check in test.get("alert_rule_test", []):
            cases.setdefault(check["alertname"], []).append(bool(check.get("exp_alerts")))
    assert set(cases) == ALERTS
    for name, fired in cases.items():
        assert True in fired and False in fired, name


def test_runbook_anchors_exist() -> None:
    if not OBSERVABILITY_DOC.exists():
        pytest.skip("docs/observability.md is not written yet")
    slugs = set()
    for line in OBSERVABILITY_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    missing = {name.lower() for name in ALERTS} - slugs
    assert not missing, f"docs/observability.md has no heading for {sorted(missing)}"


# -- Toxiproxy ---------------------------------------------------------------------------------


def wait_for_http(url: str, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_toxiproxy_server_loads_the_config(tmp_path: Path) -> None:
    binary = require_binary("toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER")
    proxies = json.loads(TOXIPROXY_CONFIG.read_text())
    # The same file, with compose's addresses moved to free loopback ports.
    for proxy in proxies:
        proxy["listen"] = f"{LOOPBACK}:{free_port()}"
        proxy["upstream"] = f"{LOOPBACK}:{free_port()}"
    config = tmp_path / "toxiproxy.json"
    config.write_text(json.dumps(proxies))
    api_port = free_port()
    with (tmp_path / "toxiproxy.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-host", LOOPBACK, "-port", str(api_port), "-config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        loaded = json.loads(wait_for_http(f"http://{LOOPBACK}:{api_port}/proxies"))
    finally:
        stop_process(proc)
    assert set(loaded) == {"redis"}
    assert loaded["redis"]["enabled"] is True
    assert loaded["redis"]["listen"] == proxies[0]["listen"]
    assert loaded["redis"]["upstream"] == proxies[0]["upstream"]


# -- the example service -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_module(EXAMPLE_APP, "resilient_cache_example_service")


def test_example_service_answers_with_redis_down(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_REDIS_URL", f"redis://{LOOPBACK}:{free_port()}/0")
    monkeypatch.setenv("CACHE_NAME", "example-down")
    app = example.create_app(example.ExampleSettings(loader_delay=0))
    with TestClient(app) as client:
        started = time.monotonic()
        response = client.get("/users/7")
        assert time.monotonic() - started < 2
        assert response.status_code == 200
        assert response.json() == {"id": 7, "name": "user 7", "views": None}
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["cache"].startswith("unavailable")
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
    assert 'cache="example-down"' in metrics.text, "build_cache() exports no metrics"
    assert 'outcome="fallback"' in metrics.text


def test_example_service_caches_and_makes_traffic(
    example: ModuleType, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert redis_server.command("FLUSHALL") == "+OK"
    monkeypatch.setenv("CACHE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("CACHE_NAME", "example-up")
    monkeypatch.setenv("CACHE_NAMESPACE", "example")
    with TestClient(example.create_app(example.ExampleSettings(loader_delay=0))) as client:
        assert client.get("/users/7").json() == {"id": 7, "name": "user 7", "views": 1}
        assert client.get("/users/7").json() == {"id": 7, "name": "user 7", "views": 2}
        assert client.get("/healthz").json() == {"status": "ok", "cache": "ok"}
        metrics = client.get("/metrics").text
    assert re.search(r'resilient_cache_gets_total\{cache="example-up",result="hit"\} 1\.0', metrics)
    settings = example.ExampleSettings(traffic_rps=200, loader_delay=0)
    monkeypatch.setenv("CACHE_NAME", "example-traffic")
    with TestClient(example.create_app(settings)) as client:
        time.sleep(0.5)
        metrics = client.get("/metrics").text
    for operation in ("get", "set", "increment", "get_many"):
        assert f'cache="example-traffic",le="+Inf",operation="{operation}"' in metrics, operation


# -- end to end: a real Prometheus -------------------------------------------------------------


def synthetic_exposition(n: int) -> str:
    """Every library metric, as prometheus-client exposes it, with counters growing with n."""
    labels = 'cache="users"'
    lines = [f"# TYPE {HISTOGRAM} histogram"]
    buckets = ["0.0001", "0.001", "0.01", "0.1", "0.5", "1.0", "+Inf"]
    for operation in ("get", "set"):
        for outcome, share in (("success", 8), ("fallback", 1), ("error", 1)):
            own = f'{labels},operation="{operation}",outcome="{outcome}"'
            for index, le in enumerate(buckets):
                count = n * share * index // (len(buckets) - 1)
                lines.append(f'{HISTOGRAM}_bucket{{{own},le="{le}"}} {count}')
            lines.append(f"{HISTOGRAM}_count{{{own}}} {n * share}")
            lines.append(f"{HISTOGRAM}_sum{{{own}}} {n * share * 0.01}")
    lines += ["# TYPE resilient_cache_gets_total counter"]
    for result, share in (("hit", 7), ("miss", 2), ("fallback", 1)):
        lines.append(f'resilient_cache_gets_total{{{labels},result="{result}"}} {n * share}')
    for family in ("errors", "retries"):
        lines += [
            f"# TYPE resilient_cache_{family}_total counter",
            f'resilient_cache_{family}_total{{{labels},operation="get",error_type="timeout"}} {n}',
        ]
    lines += [
        "# TYPE resilient_cache_retry_budget_exhausted_total counter",
        f"resilient_cache_retry_budget_exhausted_total{{{labels}}} {n}",
        "# TYPE resilient_cache_circuit_breaker_state gauge",
        f'resilient_cache_circuit_breaker_state{{{labels},state="closed"}} 0',
        f'resilient_cache_circuit_breaker_state{{{labels},state="half_open"}} 0',
        f'resilient_cache_circuit_breaker_state{{{labels},state="open"}} 1',
        "# TYPE resilient_cache_circuit_breaker_transitions_total counter",
        "resilient_cache_circuit_breaker_transitions_total"
        f'{{{labels},from_state="closed",to_state="open"}} {n}',
        "# TYPE resilient_cache_pool_connections gauge",
        f'resilient_cache_pool_connections{{{labels},state="idle"}} 3',
        f'resilient_cache_pool_connections{{{labels},state="used"}} 2',
        "# TYPE resilient_cache_near_cache_lookups_total counter",
        f'resilient_cache_near_cache_lookups_total{{{labels},result="hit"}} {n * 9}',
        f'resilient_cache_near_cache_lookups_total{{{labels},result="miss"}} {n}',
        "# TYPE resilient_cache_near_cache_invalidations_total counter",
        f"resilient_cache_near_cache_invalidations_total{{{labels}}} {n}",
        "# TYPE resilient_cache_near_cache_flushes_total counter",
        f'resilient_cache_near_cache_flushes_total{{{labels},reason="channel_lost"}} {n}',
        "# TYPE resilient_cache_near_cache_entries gauge",
        f"resilient_cache_near_cache_entries{{{labels}}} 100",
    ]
    return "\n".join(lines) + "\n"


def synthetic_redis_exposition(n: int) -> str:
    return (
        "redis_up 1\nredis_connected_clients 5\nredis_memory_used_bytes 1048576\n"
        "redis_memory_max_bytes 67108864\n"
        f"redis_commands_processed_total {n * 100}\n"
        f"redis_keyspace_hits_total {n * 7}\nredis_keyspace_misses_total {n * 3}\n"
    )


class _Exporter(BaseHTTPRequestHandler):
    started = time.monotonic()

    def do_GET(self) -> None:
        n = 1 + int((time.monotonic() - self.started) * 100)
        if self.path == "/metrics":
            body = synthetic_exposition(n)
        elif self.path == "/redis":
            body = synthetic_redis_exposition(n)
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def api(port: int, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    url = f"http://{LOOPBACK}:{port}/api/v1/{path}" + (f"?{query}" if query else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[int]:
    """A real Prometheus on a free port, scraping the synthetic exporter every second."""
    binary = require_binary("prometheus", "RESILIENT_CACHE_PROMETHEUS")
    exporter = ThreadingHTTPServer((LOOPBACK, 0), _Exporter)
    thread = threading.Thread(target=exporter.serve_forever, daemon=True)
    thread.start()
    target = f"{LOOPBACK}:{exporter.server_address[1]}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "service", "static_configs": [{"targets": [target]}]},
            {
                "job_name": "redis",
                "metrics_path": "/redis",
                "static_configs": [{"targets": [target]}],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://{LOOPBACK}:{port}/-/ready", timeout=30)
        yield port
    finally:
        stop_process(proc)
        exporter.shutdown()
        exporter.server_close()


@pytest.mark.slow
def test_prometheus_serves_every_dashboard_query(dashboard: Any, prometheus: int) -> None:
    queries = {concrete(expr, rate_interval="5s") for expr in exprs(dashboard)}
    deadline = time.monotonic() + 30
    empty = set(queries)
    while empty and time.monotonic() < deadline:
        time.sleep(0.5)
        empty = {query for query in empty if not api(prometheus, "query", query=query)["result"]}
    assert not empty, f"no data for: {sorted(empty)}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"])
        assert match, variable["query"]
        values = api(prometheus, f"label/{match[2]}/values", **{"match[]": concrete(match[1])})
        assert values, variable["name"]
    groups = api(prometheus, "rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == ALERTS
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules


def test_the_compose_service_feeds_every_row_of_the_dashboard(
    compose: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: five "No data" near-cache panels, the service not enabling the near cache."""
    from resilient_cache import CacheSettings  # noqa: PLC0415

    environment = compose["services"]["service"]["environment"]
    for name, value in environment.items():
        if name.startswith("CACHE_"):
            monkeypatch.setenv(name, str(value))
    settings = CacheSettings.from_env()
    assert settings.near_cache.enabled
    panels = json.dumps(json.loads(DASHBOARD.read_text()))
    assert "resilient_cache_near_cache_lookups_total" in panels

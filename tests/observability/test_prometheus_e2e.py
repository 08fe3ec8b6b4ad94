"""End to end: a real Prometheus scrapes a service using build_cache against a real Redis.

Debian's prometheus runs the repo's configuration (its rules, its scrape job names),
pointed at this test's own service (a metrics endpoint on a free loopback port, fed by a
cache built with ``build_cache`` that reaches the session redis-server through Toxiproxy)
and at Debian's prometheus-redis-exporter. The test drives traffic, cuts Redis off long
enough to open the breaker, and then asks Prometheus, over its HTTP API, that:

* every query of every dashboard panel returns data;
* the breaker-open alert is pending or firing.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from resilient_cache import BreakerState, CacheSettings, CircuitBreakerLayer, build_cache
from resilient_cache.testing import LOOPBACK, free_port, stop_process
from resilient_cache.testing.toxiproxy import Proxy
from tests.servers import RedisServer, require_binary
from tests.toxiproxy_fixtures import proxy_url

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "resilient-cache.json"
SCRAPE = "1s"

pytestmark = pytest.mark.slow


class Prometheus:
    """A private Prometheus process and a tiny client of its HTTP API."""

    def __init__(self, binary: str, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while not self._ready():
            assert self.proc.poll() is None, (workdir / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def point_config_at(service: str, exporter: str) -> dict[str, Any]:
    """The repo's config with its scrape targets replaced by this test's processes."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = SCRAPE
    config["global"]["evaluation_interval"] = SCRAPE
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / f) for f in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        targets = job["static_configs"][0]["targets"]
        if any(":9090" in t for t in targets):
            continue  # Prometheus scraping itself: not part of what is tested
        job["scrape_interval"] = SCRAPE
        job.pop("scrape_timeout", None)
        exporter_job = any("exporter" in t for t in targets)
        job["static_configs"] = [{"targets": [exporter if exporter_job else service]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    config.pop("alerting", None)
    return config


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]
    queries = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            expr = expr.replace("$__rate_interval", "30s").replace("${__rate_interval}", "30s")
            expr = re.sub(r"\$\{?(redis_job|redis_instance|job|instance|cache)\}?", ".+", expr)
            expr = expr.replace("$__range", "5m")
            queries.append((panel.get("title", "?"), expr))
    return queries


@pytest.fixture
def exporter(redis_server: RedisServer) -> Iterator[str]:
    binary = require_binary("prometheus-redis-exporter", "RESILIENT_CACHE_REDIS_EXPORTER")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-redis.addr", f"redis://{LOOPBACK}:{redis_server.port}",
         "-web.listen-address", f"{LOOPBACK}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield f"{LOOPBACK}:{port}"
    stop_process(proc)


async def test_every_panel_has_data_and_the_breaker_alert_fires(
    redis_proxy: Proxy, exporter: str
) -> None:
    binary = require_binary("prometheus", "RESILIENT_CACHE_PROMETHEUS")
    registry = CollectorRegistry()
    port = free_port()
    server, thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    settings = CacheSettings.model_validate(
        {"redis_url": proxy_url(redis_proxy), "name": "e2e", "namespace": "e2e",
         "near_cache": {"enabled": True, "ping_interval": 0.2}}  # its row needs data too
    )  # fmt: skip
    cache = build_cache(settings, registry=registry)
    breaker = cache.find(CircuitBreakerLayer)
    assert breaker is not None
    with tempfile.TemporaryDirectory(prefix="resilient-cache-prometheus-") as workdir:
        config = point_config_at(f"{LOOPBACK}:{port}", exporter)
        prometheus = Prometheus(binary, config, Path(workdir))
        try:
            async with cache:
                await wait_until_scraped(prometheus, jobs=len(config["scrape_configs"]))
                await drive(cache, seconds=4)
                with redis_proxy.disabled():  # Redis unreachable: fallbacks, then open
                    await drive(cache, seconds=3)
                    assert breaker.state is BreakerState.OPEN
                    await wait_for_alert(prometheus, "ResilientCacheBreakerOpen")
                missing = [
                    (title, expr)
                    for title, expr in panel_queries()
                    if not prometheus.api("query", query=expr)["result"]
                ]
                assert not missing, "panels without data:\n" + "\n".join(map(str, missing))

        finally:
            prometheus.stop()
            server.shutdown()
            thread.join(timeout=5)


async def drive(cache: Any, *, seconds: float) -> None:
    """Realistic traffic: hits, misses, writes, batches, counters."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        await cache.set(f"user:{i % 50}", "profile", ttl=60)
        await cache.get(f"user:{i % 100}")
        await cache.get_many([f"user:{i % 70}", f"user:{i % 90}"])
        await cache.increment("visits")
        await cache.set("", "v")  # a caller error, for the error outcome
        await asyncio.sleep(0.01)


async def wait_until_scraped(prometheus: Prometheus, jobs: int, within: float = 20) -> None:
    """Wait for a first successful scrape of every target, so no traffic goes unseen."""
    deadline = time.monotonic() + within
    while len(prometheus.api("query", query="up == 1")["result"]) < jobs:
        assert time.monotonic() < deadline, prometheus.api("targets")
        await asyncio.sleep(0.2)


async def wait_for_alert(prometheus: Prometheus, name: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alerts = prometheus.api("alerts")["alerts"]
        if any(a["labels"]["alertname"] == name and a["state"] in ("pending", "firing")
               for a in alerts):  # fmt: skip
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{name} never went pending: {prometheus.api('alerts')}")

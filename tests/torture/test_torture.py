"""The bounded slice of the fault campaign that ``make test`` runs (``make torture`` runs as
long as asked): every topology x shape with fixed seeds, plus one random seed, printed.

A failure prints each violation with its seed, topology, shape and the shortest history found
that shows it; ``make torture SEED=<seed>`` replays the seed's schedule.
"""

from __future__ import annotations

import random

import pytest

from tests.servers import require_binary
from tests.torture.campaign import SHAPES, Report, campaign

pytestmark = pytest.mark.slow

FIXED_SEED = 20261207
SECONDS = {"standalone": 5.0, "cluster": 5.0, "sentinel": 4.0}
"""Per shape: the slice of ``make test`` stays within its three minutes."""


@pytest.fixture(autouse=True)
def servers() -> None:
    """Skip (fail under ``CI=true``) without the servers the campaign starts."""
    require_binary("redis-server", "RESILIENT_CACHE_REDIS_SERVER")
    require_binary("redis-cli", "RESILIENT_CACHE_REDIS_CLI")
    require_binary("toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER")


def verdict(report: Report) -> str:
    lines = [report.table(), report.final_line()]
    lines += [f"seed {report.seed}: {v.render()}" for v in report.violations[:10]]
    return "\n".join(lines)


def check(report: Report, shapes: int) -> None:
    """No violation of any kind, timing included (their allowance already excuses the time
    the machine did not run the process, measured; docs/resilience.md)."""
    print(verdict(report))
    assert not report.violations, verdict(report)
    assert len(report.runs) == shapes
    for run in report.runs:  # the campaign did something in every shape
        assert run.stats.calls > 100, (run.topology, run.shape.name, run.stats.calls)
        assert run.stats.outcomes["ok"] > 0, (run.topology, run.shape.name)


@pytest.mark.timeout(170)
@pytest.mark.parametrize("topology", list(SECONDS))
async def test_the_campaign_finds_no_violation(topology: str) -> None:
    report = await campaign(
        FIXED_SEED, seconds_per_run=SECONDS[topology], topologies=[topology], echo=print
    )
    applicable = {"cluster": len(SHAPES) - 2}.get(topology, len(SHAPES))
    check(report, applicable)
    assert report.faults > 0


@pytest.mark.timeout(120)
async def test_the_campaign_with_a_random_seed() -> None:
    seed = random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    shapes = rng.sample(SHAPES, 2)
    replay = f"make torture SEED={seed} TOPOLOGIES=standalone SHAPES={','.join(shapes)}"
    print(f"random seed {seed}: standalone x {', '.join(shapes)} (replay: {replay})")
    report = await campaign(seed, seconds_per_run=6.0, topologies=["standalone"], shapes=shapes,
                            echo=print)  # fmt: skip
    check(report, len(shapes))

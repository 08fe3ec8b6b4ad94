"""``python -m tests.torture``: the generative fault campaign (``make torture``).

    make torture                      # every topology x shape, 1 minute in all, a random seed
    make torture MINUTES=30 SEED=42   # as long as asked; replay a seed's schedule

Prints a line per topology x shape, every violation with its seed and the history of the
key that shows it, the report's table, and last ``torture: <calls> calls, <faults> faults,
<violations> violations``; writes the report as JSON (``--json``). Exits 1 on a violation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path
from typing import NoReturn

import structlog

from tests.torture.campaign import SHAPES, TOPOLOGIES, campaign


def _drop(*_: object) -> NoReturn:
    raise structlog.DropEvent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make torture", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--minutes", type=float, default=1.0, help="the whole run (default 1)")
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--workers", type=int, default=8, help="concurrent callers")
    parser.add_argument(
        "--socket-timeout", type=float, default=None,
        help="redis-py's socket timeout in every shape (default: none)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("build/torture-report.json"))
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    topologies = [t for t in args.topologies.split(",") if t]
    shapes = [s for s in args.shapes.split(",") if s]
    for name, chosen, known in (("topology", topologies, TOPOLOGIES), ("shape", shapes, SHAPES)):
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"unknown {name} {', '.join(unknown)}; choose from {', '.join(known)}")
    # the minutes are shared out; each topology also spends ~5-10 s starting
    per_run = max(3.0, args.minutes * 60 / (len(topologies) * len(shapes)))
    print(f"torture: seed {seed}, {per_run:.0f} s per topology x shape "
          f"(replay: make torture SEED={seed} MINUTES={args.minutes:g})", flush=True)  # fmt: skip
    # the library's own events (structlog) would drown the report: they are not judged here
    structlog.configure(processors=[_drop])
    report = asyncio.run(
        campaign(seed, seconds_per_run=per_run, topologies=topologies, shapes=shapes,
                 workers=args.workers, socket_timeout=args.socket_timeout,
                 echo=lambda line: print(line, flush=True))
    )  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    print()
    print(report.table())
    print(f"\nseed {seed}; {report.seconds:.0f} s; report: {args.json}")
    print(report.final_line())
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

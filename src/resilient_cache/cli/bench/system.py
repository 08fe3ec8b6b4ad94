"""Where and with what a run happened: versions, machine, load, date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final

PACKAGES = ("resilient-cache", "redis", "hiredis", "cashews", "aiocache", "structlog")


def versions(redis_server: str) -> dict[str, str]:
    """Python, the packages that matter (``"not installed"`` for a missing one), the server."""
    found = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    try:
        from redis.utils import HIREDIS_AVAILABLE  # noqa: PLC0415

        found["hiredis_in_use"] = str(bool(HIREDIS_AVAILABLE))
    except ImportError:  # pragma: no cover - an old redis-py
        found["hiredis_in_use"] = "unknown"
    found["redis-server"] = _redis_server_version(redis_server)
    return found


def _redis_server_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return "unknown"
    word = next((w for w in out.split() if w.startswith("v=")), "")
    return word.removeprefix("v=") or out.strip() or "unknown"


def machine() -> dict[str, str | int]:
    """CPU count and model, kernel, OS."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": usable or 0,
        "cpu_count": os.cpu_count() or 0,
        "cpu_model": model,
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other work on the machine skews the figures)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


IMPORTED: Final = ("redis.asyncio", "resilient_cache")
"""What the import-time measurement imports, each in a fresh interpreter."""


def import_seconds(rounds: int) -> dict[str, list[float]]:
    """How long importing each of :data:`IMPORTED` takes, in a fresh interpreter (its own
    start-up left out), ``rounds`` times, interleaved."""
    found: dict[str, list[float]] = {module: [] for module in IMPORTED}
    for _ in range(rounds):
        for module in IMPORTED:
            code = (f"import time; began = time.perf_counter(); import {module}; "
                    "print(time.perf_counter() - began)")  # fmt: skip
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip
            if done.returncode == 0:
                found[module].append(float(done.stdout))
    return found

"""Run a snippet in a fresh interpreter: what importing the library does, from nothing."""

from __future__ import annotations

import subprocess
import sys


def python_run(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code``: its stdout and stderr; fails the test (with stderr) if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def python_output(code: str) -> str:
    """The stripped stdout of ``python -c code``; fails the test (with stderr) if it fails."""
    return python_run(code).stdout.strip()

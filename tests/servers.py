"""Real servers for the tests: each on a free loopback port, in a private directory.

Never a fixed or default port, never a non-loopback address; stopped by PID afterwards.
With ``CI=true`` a missing server binary fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from resilient_cache.testing import LOOPBACK, RedisServer, free_port

__all__ = ["LOOPBACK", "RedisServer", "free_port", "require_binary"]


def require_binary(name: str, env_var: str) -> str:
    """Return the path of a server binary, or skip (fail under ``CI=true``) without it."""
    path = os.environ.get(env_var) or shutil.which(name)
    if path is None:
        tools = Path(__file__).resolve().parent.parent / ".tools" / "bin" / name
        path = str(tools) if tools.exists() else None
    if path is None:
        message = f"{name} not found (set {env_var} or run `make test` to install it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path

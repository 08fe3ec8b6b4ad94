"""Real servers for the tests: each on a free loopback port, in a private directory.

Never a fixed or default port, never a non-loopback address; stopped by PID afterwards.
With ``CI=true`` a missing server binary fails the test instead of skipping it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resilient_cache.testing import LOOPBACK, RedisServer, find_server, free_port

__all__ = [
    "LOOPBACK", "RedisServer", "find_binary", "free_port", "require_binary", "require_binary_path",
]  # fmt: skip


def find_binary(name: str, env_var: str) -> str | None:
    """The path of a server binary: ``$env_var``, then ``PATH``, then the checkout's
    ``.tools/bin``."""
    return find_server(name, env_var, tools_from=Path(__file__).resolve().parent.parent)


def require_binary_path(name: str, env_var: str) -> str:
    """:func:`find_binary`, or a ``RuntimeError`` that says how to get it (outside pytest)."""
    path = find_binary(name, env_var)
    if path is None:
        raise RuntimeError(f"{name} not found (set {env_var} or run `make deps`)")
    return path


def require_binary(name: str, env_var: str) -> str:
    """Return the path of a server binary, or skip (fail under ``CI=true``) without it."""
    path = find_binary(name, env_var)
    if path is None:
        message = f"{name} not found (set {env_var} or run `make test` to install it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path

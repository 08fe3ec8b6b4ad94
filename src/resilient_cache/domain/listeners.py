"""Listeners: callbacks that observe the cache (breaker transitions, retries, invalidations).

A listener is the caller's code; it must never break the call that notifies it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

_log = logging.getLogger("resilient_cache")


def notify(listeners: Iterable[Callable[..., object]], *args: object) -> None:
    """Call each listener; one that raises is logged and skipped, never breaks the call."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception:
            _log.exception("resilient_cache listener %r failed", listener)

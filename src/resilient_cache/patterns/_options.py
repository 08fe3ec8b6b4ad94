"""The optional behaviours of ``@cached``, as value objects: early refresh, serve-stale."""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from resilient_cache.domain.errors import ConfigurationError

__all__ = ["EarlyRefresh", "ServeStale"]


def _check_positive(setting: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(setting, f"must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class EarlyRefresh:
    """Probabilistic early refresh (XFetch: Vattani, Chierichetti, Lowenstein, VLDB 2015).

    A hit recomputes in the background when ``now - delta * beta * log(rand) >= expiry``,
    ``delta`` being how long the last computation took and ``rand`` uniform in (0, 1]: the
    longer the computation and the closer the expiry, the likelier. The caller gets the
    cached value at once.

    Attributes:
        beta: above 1 favours earlier refreshes, below 1 later ones (default 1.0, the
            paper's optimum).
        random: uniform floats in [0, 1) (a test seam: ``random.Random(7).random``).
    """

    beta: float = 1.0
    random: Callable[[], float] = _random.random

    def __post_init__(self) -> None:
        _check_positive("early_refresh.beta", self.beta)
        if not callable(self.random):
            raise ConfigurationError("early_refresh.random", "must be a callable returning floats")

    def due(self, *, now: float, delta: float, expires_at: float) -> bool:
        """Whether a hit at ``now`` should recompute (draws one random number)."""
        rand = min(max(1.0 - self.random(), 1e-300), 1.0)  # (0, 1]: log is finite, <= 0
        return now - delta * self.beta * math.log(rand) >= expires_at


@dataclass(frozen=True, slots=True)
class ServeStale:
    """Serve the last known value while the cache is unavailable.

    Attributes:
        max_staleness: seconds since a value was last seen valid (read from the cache or
            computed) after which it is no longer served.
        max_entries: keys remembered in this process, least recently used dropped first
            (default 1024).
        max_bytes: memory the copy may hold, keys and serialized values as
            ``sys.getsizeof`` counts them; least recently used dropped first (default
            16 MiB).
        max_value_bytes: a serialized value larger than this is not remembered (nor its
            key's older value); default 1 MiB, the cache's default value limit (a value
            over ``max_bytes`` is never remembered either).
    """

    max_staleness: float
    max_entries: int = 1024
    max_bytes: int = 16 * 1024 * 1024
    max_value_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        _check_positive("serve_stale.max_staleness", self.max_staleness)
        for setting in ("max_entries", "max_bytes", "max_value_bytes"):
            value = getattr(self, setting)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"serve_stale.{setting}", f"must be a positive int, got {value!r}"
                )

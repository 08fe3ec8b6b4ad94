"""Moved to :mod:`resilient_cache.testing.toxiproxy`; this path works, with a warning, for one
release."""

import warnings

from resilient_cache.testing.toxiproxy import (
    Proxy,
    Stream,
    Toxic,
    ToxicContext,
    Toxiproxy,
    ToxiproxyError,
    ToxiproxyServer,
)

warnings.warn(
    "resilient_cache.toxiproxy moved to resilient_cache.testing.toxiproxy; the old path goes "
    "away in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "Proxy",
    "Stream",
    "Toxic",
    "ToxicContext",
    "Toxiproxy",
    "ToxiproxyError",
    "ToxiproxyServer",
]

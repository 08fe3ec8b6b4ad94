"""Moved to :mod:`resilient_cache.patterns.cache_aside` (``get_or_set`` and
``get_or_set_json`` are in ``resilient_cache`` itself); this path works, with a warning, for
one release."""

import warnings

from resilient_cache.patterns.cache_aside import get_or_set, get_or_set_json

warnings.warn(
    "resilient_cache.cache_aside moved to resilient_cache.patterns.cache_aside; import "
    "get_or_set from resilient_cache. The old path goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["get_or_set", "get_or_set_json"]

"""Moved to :mod:`resilient_cache.cli.bench` (``resilient-cache bench`` runs it); this path
works, with a warning, for one release."""

import warnings

warnings.warn(
    "resilient_cache.bench moved to resilient_cache.cli.bench (or run `resilient-cache bench`);"
    " the old path goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)

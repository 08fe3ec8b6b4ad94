"""The installed version of resilient-cache (``resilient_cache.__version__``)."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed

try:
    __version__ = _installed("resilient-cache")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]

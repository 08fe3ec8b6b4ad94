"""Where the library's events go: silent until the application says otherwise.

The library logs through structlog, with event names like ``resilient_cache.call_retried``
and the metric labels as keys (see :mod:`resilient_cache.layers.logs`), and configures
neither structlog nor :mod:`logging`. What an application sees depends on what it set up:

* **nothing configured**: nothing is printed. Events go to the standard library's logger
  ``logging.getLogger("resilient_cache")``, which has a :class:`logging.NullHandler`, as
  redis-py's and every well-behaved library's do (structlog's own default would print them
  on stdout, among the application's output);
* **logging configured** (``logging.basicConfig(level=logging.INFO)``, a ``dictConfig``, a
  framework's): events are records of the ``resilient_cache`` logger, at their level, through
  the application's handlers; the message reads ``resilient_cache.call_retried cache=default
  operation=get ...`` and the keys are also on the record, in ``record.event_dict``;
* **structlog configured** (``structlog.configure(...)``, JSON say): events are structlog
  events with the same names and keys, through the application's processors.

The choice is made at each event, so configuring logging or structlog after the cache was
built takes effect at once. A ``logger=`` given to :func:`~resilient_cache.build_cache` or to
a layer is used as it is.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

LOGGER_NAME: Final = "resilient_cache"
"""The standard library logger (and structlog logger name) of every library event."""

logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


def someone_listens(logger: logging.Logger | None = None) -> bool:
    """Whether a handler other than a ``NullHandler`` gets ``logger``'s records (by default
    the library's): whether the application configured logging for them."""
    current: logging.Logger | None = logger or logging.getLogger(LOGGER_NAME)
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def _to_record(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[Any, ...]:
    """structlog's last processor: ``event key=value ...`` as the message, the keys on the
    record (``record.event_dict``), an exception as ``exc_info``."""
    event = str(event_dict.pop("event", ""))
    exc_info = event_dict.pop("exc_info", None)
    message = " ".join([event, *(f"{key}={value!r}" for key, value in event_dict.items())])
    keys = {"event": event, **event_dict}
    return (message,), {"exc_info": exc_info, "extra": {"event_dict": keys}}


_STDLIB: Final = structlog.wrap_logger(
    logging.getLogger(LOGGER_NAME),
    processors=[structlog.stdlib.filter_by_level, _to_record],
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


# structlog's defaults (private names, stable from 24.1 to 26.1; absent: no default is seen)
_DEFAULT_FACTORY: Final = getattr(structlog._config, "_BUILTIN_DEFAULT_LOGGER_FACTORY", None)
_DEFAULT_PROCESSORS: Final = getattr(structlog._config, "_BUILTIN_DEFAULT_PROCESSORS", None)


def structlog_configured() -> bool:
    """Whether the application configured structlog: ``structlog.is_configured()``, unless
    what is configured is structlog's own default (``structlog.testing.capture_logs()``
    leaves it "configured" with the defaults, which print on stdout)."""
    if not structlog.is_configured():
        return False
    config = structlog.get_config()
    return not (
        config["logger_factory"] is _DEFAULT_FACTORY and config["processors"] == _DEFAULT_PROCESSORS
    )


_STRUCTLOG: Final = structlog.get_logger(LOGGER_NAME)
"""One lazy proxy, made once: it follows the configuration at each use, and caches what the
application's ``cache_logger_on_first_use`` allows (a proxy made per event never would)."""


class LibraryLogger:
    """The library's logger: structlog's when the application configured structlog, else
    the standard library's ``resilient_cache`` logger (see the module's documentation)."""

    __slots__ = ()

    @staticmethod
    def _target() -> Any:
        return _STRUCTLOG if structlog_configured() else _STDLIB

    def debug(self, event: str, *args: Any, **values: Any) -> None:
        self._target().debug(event, *args, **values)

    def info(self, event: str, *args: Any, **values: Any) -> None:
        self._target().info(event, *args, **values)

    def warning(self, event: str, *args: Any, **values: Any) -> None:
        self._target().warning(event, *args, **values)

    def error(self, event: str, *args: Any, **values: Any) -> None:
        self._target().error(event, *args, **values)

    def exception(self, event: str, *args: Any, **values: Any) -> None:
        self._target().exception(event, *args, **values)


def get_logger() -> LibraryLogger:
    """The logger the library's own events go through (see the module's documentation)."""
    return LibraryLogger()

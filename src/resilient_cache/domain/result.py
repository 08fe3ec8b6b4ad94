"""A tiny result type built for structural pattern matching.

Every :class:`~resilient_cache.CacheProtocol` method returns ``Result[T, CacheError]``
instead of raising::

    match await cache.get("user:42"):
        case Success(None):
            ...  # a miss
        case Success(value):
            ...  # a hit
        case Failure(error):
            ...  # the cache could not answer: fall back to the source of truth

``Success`` and ``Failure`` are frozen, slotted and generic; ``__match_args__`` makes the
positional patterns above work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, NoReturn, TypeAlias, TypeVar

T_co = TypeVar("T_co", covariant=True)
E_co = TypeVar("E_co", covariant=True)
U = TypeVar("U")
D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class Success(Generic[T_co]):
    """The call worked; ``value`` is its answer."""

    value: T_co

    def is_success(self) -> Literal[True]:
        """Return ``True``: this is a ``Success``."""
        return True

    def is_failure(self) -> Literal[False]:
        """Return ``False``: this is not a ``Failure``."""
        return False

    def unwrap(self) -> T_co:
        """Return the value."""
        return self.value

    def unwrap_or(self, default: object) -> T_co:
        """Return the value (``default`` is only used by ``Failure``)."""
        return self.value

    def map(self, fn: Callable[[T_co], U]) -> Success[U]:
        """Apply ``fn`` to the value and wrap the answer in a new ``Success``."""
        return Success(fn(self.value))


@dataclass(frozen=True, slots=True)
class Failure(Generic[E_co]):
    """The call did not work; ``error`` says why."""

    error: E_co

    def is_success(self) -> Literal[False]:
        """Return ``False``: this is not a ``Success``."""
        return False

    def is_failure(self) -> Literal[True]:
        """Return ``True``: this is a ``Failure``."""
        return True

    def unwrap(self) -> NoReturn:
        """Raise :class:`UnwrapError`: a ``Failure`` has no value.

        Meant for tests and scripts; services should ``match`` or use ``unwrap_or``.
        """
        raise UnwrapError(self.error)

    def unwrap_or(self, default: D) -> D:
        """Return ``default``: the fail-open answer."""
        return default

    def map(self, fn: Callable[[Any], object]) -> Failure[E_co]:
        """Return this ``Failure`` unchanged; ``fn`` is not called."""
        return self


Result: TypeAlias = Success[T_co] | Failure[E_co]
"""Either ``Success[T_co]`` or ``Failure[E_co]``."""


class UnwrapError(Exception):
    """Raised by :meth:`Failure.unwrap`; ``error`` holds the failure's error."""

    def __init__(self, error: object) -> None:
        super().__init__(f"unwrap() called on a Failure: {error}")
        self.error = error

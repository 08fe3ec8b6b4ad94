"""Serializers of ``@cached``: the :class:`Serializer` protocol and the default, JSON."""

from __future__ import annotations

from typing import Final, Protocol, TypeVar

from resilient_cache.domain.errors import CacheError
from resilient_cache.domain.protocol import JsonInput, JsonValue
from resilient_cache.domain.result import Failure, Success
from resilient_cache.domain.validation import dump_json, load_json

__all__ = ["JSON", "JsonSerializer", "Serializer"]

T = TypeVar("T")


class Serializer(Protocol[T]):
    """Turns a function's values into the text stored in the cache, and back.

    Both methods raise (``ValueError``, ``TypeError``...) on what they cannot handle: a value
    that cannot be written is returned to the caller uncached; stored text that cannot be
    read is a miss, recomputed and overwritten.
    """

    def dumps(self, value: T) -> str:
        """The text to store for ``value``."""
        ...

    def loads(self, text: str) -> T:
        """The value stored as ``text``."""
        ...


class JsonSerializer:
    """JSON under the library's rules: those of ``set_json``/``get_json``, same code.

    Compact output; NaN, Infinity and non-JSON types are refused. Values come back as JSON
    gives them: a ``tuple`` as a ``list``, ``dict`` keys as ``str``.
    """

    def dumps(self, value: JsonInput) -> str:
        """Compact, strict JSON; ``ValueError`` for anything JSON cannot hold."""
        text = dump_json("cached", "", value)
        if isinstance(text, CacheError):
            raise ValueError(text.message) from text.cause
        return text

    def loads(self, text: str) -> JsonValue:
        """The decoded document; ``ValueError`` for text that is not strict JSON."""
        match load_json("cached", "", text):
            case Success(value):
                return value
            case Failure(error):
                raise ValueError(error.message) from error.cause
        raise AssertionError("unreachable")  # pragma: no cover


JSON: Final = JsonSerializer()
"""The default serializer."""

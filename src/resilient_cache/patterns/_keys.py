"""Key templates: ``"user:{user_id}"`` filled from one call's arguments.

A template is checked once, against the decorated function's signature, when it is
decorated: every placeholder must name a parameter, so that a typo stops the application
at start-up instead of caching every user under one key. A placeholder is a parameter
name, optionally followed by public attributes (``{user.id}``); no indexing, no format spec
and no conversion, so what a key looks like is written in the template and nowhere else.

Values are written as :func:`~resilient_cache.cache_key` writes key parts: a ``str`` as is,
an ``int`` in decimal, a ``UUID`` in its canonical form, with ``%`` written ``%25`` and
``:`` written ``%3A``. A value taken from outside cannot change the key's structure
(``"1:admin"`` gives ``user:1%3Aadmin``, never ``user:1:admin``), and the template
``"user:{user_id}"`` gives the very key ``cache_key("user", user_id)`` gives.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from resilient_cache.domain.errors import ConfigurationError
from resilient_cache.domain.glob import glob_escape
from resilient_cache.keys import key_part

__all__ = ["KeyTemplate"]

_VARIADIC: Final = frozenset({inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD})


@dataclass(frozen=True, slots=True)
class _Field:
    parameter: str
    attributes: tuple[str, ...]
    source: str  # as written, for error messages


class KeyTemplate:
    """A template checked against a signature; :meth:`render` fills it from arguments.

    Args:
        template: the key, with ``{parameter}`` or ``{parameter.attribute}`` placeholders
            (``{{`` and ``}}`` for literal braces).
        signature: the decorated function's signature.
        owner: the function's name, for error messages.
        setting: the setting the errors name (``key``; ``keys``/``pattern`` for
            ``@invalidate``).
        glob: a pattern (``@invalidate(pattern=...)``): the template's own text is a Redis
            glob and each value is glob-escaped too, so that an argument ``"4*"`` matches the
            key ``user:4*`` and nothing more: a value from outside cannot widen a deletion.

    Raises:
        ConfigurationError: an empty or malformed template, or a placeholder that names no
            parameter, a ``*args``/``**kwargs`` parameter, a private attribute, or uses
            indexing, a format spec or a conversion.
    """

    __slots__ = ("_glob", "_parts", "_setting", "template")

    def __init__(
        self,
        template: object,
        signature: inspect.Signature,
        owner: str,
        *,
        setting: str = "key",
        glob: bool = False,
    ) -> None:
        if not isinstance(template, str) or not template:
            raise ConfigurationError(setting, f"must be a non-empty str, got {template!r}")
        self.template = template
        self._setting = setting
        self._glob = glob
        self._parts: list[str | _Field] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigurationError(
                setting, f"{template!r} is not a valid template: {exc}"
            ) from exc
        for literal, name, spec, conversion in parsed:
            if literal:
                self._parts.append(literal)
            if name is not None:
                self._parts.append(self._field(name, spec, conversion, signature, owner))

    def _field(
        self,
        name: str,
        spec: str | None,
        conversion: str | None,
        signature: inspect.Signature,
        owner: str,
    ) -> _Field:
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        shown += "}"

        def refuse(problem: str) -> ConfigurationError:
            return ConfigurationError(
                self._setting, f"{self.template!r}: placeholder {shown} {problem}"
            )

        if spec or conversion:
            raise refuse("has a format spec or conversion; only {name} or {name.attr} is allowed")
        parameter, *attributes = name.split(".")
        if not parameter or parameter.isdigit():
            raise refuse("must name a parameter of " + owner)
        if not all(part.isidentifier() for part in (parameter, *attributes)):
            raise refuse("is not a parameter name or a dotted attribute path (no indexing)")
        if any(attribute.startswith("_") for attribute in attributes):
            raise refuse("reaches a private attribute")
        found = signature.parameters.get(parameter)
        if found is None:
            known = ", ".join(signature.parameters) or "none"
            raise refuse(f"names no parameter of {owner} (its parameters: {known})")
        if found.kind in _VARIADIC:
            raise refuse(f"names the variadic parameter {found}; name a plain parameter")
        return _Field(parameter, tuple(attributes), shown)

    def render(self, arguments: Mapping[str, object]) -> str:
        """The key for one call's bound arguments (defaults applied).

        Raises:
            TypeError, ValueError: a value that cannot be a key part (see :func:`key_part`);
                the message names the placeholder, never the value.
            AttributeError: ``{user.id}`` on a value without that attribute.
        """
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = arguments[part.parameter]
            for attribute in part.attributes:
                value = getattr(value, attribute)
            try:
                text = key_part(value)
            except (TypeError, ValueError) as exc:
                raise type(exc)(
                    f"{self._setting} {self.template!r}: placeholder {part.source} {exc}"
                ) from None
            out.append(glob_escape(text) if self._glob else text)
        return "".join(out)

    def __repr__(self) -> str:
        return f"KeyTemplate({self.template!r}, glob={self._glob})"

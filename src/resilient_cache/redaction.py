"""SecretScrubber: a structlog processor that keeps secrets out of the events you log.

The library's own events, spans, metrics and errors never hold a password (see
docs/security.md). The application's events are another matter: a settings dump, a header
dict, an exception whose message quotes a connection URL. One processor near the end of the
chain catches what slips through, whoever logged it. It cannot know every secret, so it works
from four rules (each replaces what it finds with ``"***"``):

1. **Secret key names.** The value of a key that names a secret, at any depth, whatever its
   type (``None`` stays ``None``: "no password" is worth seeing). A name is normalised first:
   camelCase split into words, lower-cased, every run of other characters turned into one
   ``_`` (``X-Api-Key`` -> ``x_api_key``, ``dbPassword`` -> ``db_password``). It names a
   secret when it EQUALS one of :data:`SECRET_KEY_NAMES` or ENDS with ``_`` and one of them:
   ``password``, ``db_password``, ``CACHE_REDIS__PASSWORD``, ``x-api-key``, ``accessToken``,
   ``client_secret`` do; ``key``, ``cache_key``, ``token_count``, ``max_tokens``,
   ``password_policy``, ``secretary``, ``author`` do not (their values are still searched
   by the text rules below). ``pass`` is not in the list: ``first_pass``, ``pass`` (a test
   outcome) are too common; add it with ``extra_keys`` if you use it.
2. **Secrets inside text**, in every string (and bytes) value and string dict key:

   * a URL's user-info password, any scheme: ``redis://user:pw@host`` ->
     ``redis://user:***@host``, ``rediss://:pw@host``, ``https://u:pw@host``. Up to the last
     ``@`` before white space, so that an unencoded ``@`` in a password does not expose its
     end: this can hide more than the password (never less);
   * an assignment of a secret-named key: ``password=pw``, ``?access_token=pw&db=0``,
     ``RedisOptions(password='pw')``, ``{"api_key": "pw"}``, ``'token': 'pw'`` (a bare name
     followed by ``:`` is not one: ``password: must be set`` is a sentence);
   * an ``Authorization`` header's credentials: ``Authorization: Bearer pw`` ->
     ``Authorization: Bearer ***``;
   * Redis commands that carry a password: ``AUTH pw``, ``AUTH user pw``, ``AUTH2 user pw``
     (bare in upper case only, as clients write commands, since English has "auth"; quoted
     in any case: ``'auth'``, ``b"AUTH"``), and ``requirepass pw`` / ``masterauth pw`` (any
     case, also ``--requirepass pw``). In text ``AUTH a b`` cannot be told from
     ``AUTH pw more-words``, so both words are hidden. In a list or tuple of command
     arguments (``["AUTH", "user", "pw"]``, ``("HELLO", 3, "AUTH", "user", "pw")``,
     ``["redis-server", "--requirepass", "pw"]``) the arity is known and only the password
     is.
3. **Registered secrets** (:class:`SecretScrubber` only): every occurrence of each, also in
   its escaped forms (``repr``, JSON, percent-encoded), anywhere in text.
4. **Exceptions.** An exception object held as a value whose text would show a secret
   becomes that text, scrubbed (``"TypeName: message"``); one that shows nothing stays the
   object. Traceback text is a string once ``format_exc_info`` or ``dict_tracebacks`` has
   run, so put the scrubber AFTER them. Placed before, it formats an ``exc_info`` itself
   when the traceback would show a secret (as ``format_exc_info`` would, into
   ``exception``).

Other values (numbers, ``None``, objects) pass through untouched: the processor cannot know
how the renderer will show an object, so give yours a ``repr`` that hides secrets, as the
library's own objects (``CacheSettings``, ``RedisOptions``, ``RedisAdapter``) do.

The processor returns a new dict and never changes a value the caller holds: a container
with something to scrub is copied (a named tuple keeps its type, another mapping becomes a
``dict``), one with nothing is passed on as it is; a container met again inside itself
becomes ``"<cycle>"``. The recommended chain::

    import structlog
    from resilient_cache import SecretScrubber

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,  # tracebacks become text...
            SecretScrubber([settings.redis.password.get_secret_value()]),  # ...then scrubbed
            structlog.processors.JSONRenderer(),  # last: render what is left
        ]
    )
"""

from __future__ import annotations

import functools
import json
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

from structlog.typing import EventDict, WrappedLogger

from resilient_cache.domain.errors import ConfigurationError

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SECRET_KEY_NAMES",
    "SecretScrubber",
    "scrub_secrets",
]

REDACTED: Final = "***"
"""What a secret is replaced with."""

MIN_SECRET_LENGTH: Final = 4
"""Shortest secret :class:`SecretScrubber` accepts: a shorter one would redact random text."""

SECRET_KEY_NAMES: Final = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "requirepass", "masterauth",
        "secret", "token", "auth", "authorization", "credential", "credentials",
        "api_key", "apikey", "private_key", "secret_key", "access_key", "signing_key",
        "cookie", "cookies", "session_id", "sessionid",
    }
)  # fmt: skip
"""Normalised key names (and ``_``-suffixes) whose values are secret, see rule 1."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

# A URL's user info with a password: scheme://user:password@ (user may be empty).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\[\]]*:)\S+@")

_QUOTED = r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*\""""
# a command argument: quoted, or a word (which may hold commas); separated by spaces or ", "
_WORD = rf"""{_QUOTED}|[^\s'",]\S*"""
_ARGUMENTS = re.compile(rf"""[\s,]+(?P<arg>{_WORD})""")

# name=value, 'name': value, "name"=value; the value quoted or up to a delimiter.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.\-])(?:(?P<q>['"])(?P<quoted>[A-Za-z_][\w.\-]*)(?P=q)\s*[:=]|"""
    r"""(?P<bare>[A-Za-z_][\w.\-]*)\s*=)\s*"""
    rf"""(?P<value>{_QUOTED}|[^\s&,;)\]}}'"=][^\s&,;)\]}}'"]*)"""
)

_SCHEMES = "basic|bearer|digest|token|negotiate|ntlm|apikey|aws4-hmac-sha256"
_AUTHORIZATION = re.compile(
    rf"""(?P<head>(?<![\w\-])(?:proxy-)?authorization['"]?\s*[:=]\s*['"]?"""
    rf"""(?:(?:{_SCHEMES})\s+)?)(?P<credentials>[^\s'",;]+)""",
    re.IGNORECASE,
)

# AUTH [user] password, AUTH2 user password, requirepass/masterauth password: bare AUTH in
# upper case only (English has "auth"), quoted in any case
_PASSWORD_WORDS = "(?i:auth2?|(?:--)?(?:requirepass|masterauth))"
_COMMAND = re.compile(
    rf"""(?<![\w.\-])(?P<command>b?(?P<q>['"]){_PASSWORD_WORDS}(?P=q)"""
    rf"""|AUTH2?|(?i:(?:--)?(?:requirepass|masterauth)))(?P<args>(?:[\s,]+(?:{_WORD})){{1,2}})"""
)
_ONE_ARGUMENT: Final = frozenset({"requirepass", "--requirepass", "masterauth", "--masterauth"})


@functools.lru_cache(maxsize=1024)  # events repeat the same few key names
def _normalise(name: str) -> str:
    return _NOT_ALNUM.sub("_", _CAMEL.sub("_", name).lower()).strip("_")


def _redact_quoted(text: str) -> str:
    """``'pw'`` -> ``'***'``, ``b"pw"`` -> ``b"***"``, ``pw`` -> ``***``."""
    prefix = "b" if text[:1] == "b" and text[1:2] in ("'", '"') else ""
    body = text[len(prefix) :]
    if len(body) >= 2 and body[0] in "'\"" and body[-1] == body[0]:
        return f"{prefix}{body[0]}{REDACTED}{body[0]}"
    return REDACTED


def _as_text(value: object) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` raises."""
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _command_word(item: object) -> str | None:
    if isinstance(item, bytes | bytearray):
        item = bytes(item).decode("latin-1")
    return item.lower() if isinstance(item, str) else None


class SecretScrubber:
    """A structlog processor that replaces secrets in an event with ``"***"``.

    See the module documentation for the rules and where to put it in the chain.

    Args:
        secrets: strings to hide wherever they appear (e.g. the Redis password). ``None``
            and ``""`` are skipped: nothing is configured, nothing to hide.
        extra_keys: more key names whose values are secret, matched like
            :data:`SECRET_KEY_NAMES` (whole normalised name or ``_``-suffix).

    Raises:
        ConfigurationError: a secret shorter than :data:`MIN_SECRET_LENGTH` characters
            (``secrets``: hiding it would garble unrelated text, and it is too short to be
            a secret; the value is never shown), or an empty key name (``extra_keys``).
    """

    __slots__ = ("_key_names", "_pattern", "_secret_count")

    def __init__(
        self, secrets: Iterable[str | None] = (), *, extra_keys: Iterable[str] = ()
    ) -> None:
        forms: set[str] = set()
        count = 0
        for secret in secrets:
            if secret is None or secret == "":
                continue
            if not isinstance(secret, str):
                raise ConfigurationError("secrets", f"must be str, got {type(secret).__name__}")
            if len(secret) < MIN_SECRET_LENGTH:
                raise ConfigurationError(
                    "secrets",
                    f"a secret shorter than {MIN_SECRET_LENGTH} characters cannot be hidden "
                    "without garbling unrelated text; use a longer one (value not shown)",
                )
            count += 1
            forms.update(_escaped_forms(secret))
        names = set(SECRET_KEY_NAMES)
        for name in extra_keys:
            normalised = _normalise(name) if isinstance(name, str) else ""
            if not normalised:
                raise ConfigurationError("extra_keys", f"not a usable key name: {name!r}")
            names.add(normalised)
        self._key_names = frozenset(names)
        self._secret_count = count
        longest_first = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if forms else None

    def __repr__(self) -> str:
        extra = sorted(self._key_names - SECRET_KEY_NAMES)
        return f"SecretScrubber(<{self._secret_count} secrets>, extra_keys={extra!r})"

    # -- rules ------------------------------------------------------------------------------

    def is_secret_key(self, name: object) -> bool:
        """Whether a value under the key ``name`` is secret (rule 1; only ``str`` names)."""
        if not isinstance(name, str):
            return False
        normalised = _normalise(name)
        if normalised in self._key_names:
            return True
        words = normalised.split("_")
        return any("_".join(words[i:]) in self._key_names for i in range(1, len(words)))

    def scrub_text(self, text: str) -> str:
        """Return ``text`` with every secret the text rules find replaced by ``"***"``."""
        scrubbed = text
        if self._pattern is not None:
            scrubbed = self._pattern.sub(REDACTED, scrubbed)
        if "://" in scrubbed:
            scrubbed = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", scrubbed)
        lowered = scrubbed.lower()
        if "authorization" in lowered:
            scrubbed = _AUTHORIZATION.sub(rf"\g<head>{REDACTED}", scrubbed)
        if "=" in scrubbed or ":" in scrubbed:
            scrubbed = _ASSIGNMENT.sub(self._assignment, scrubbed)
        if "auth" in lowered or "requirepass" in lowered:
            scrubbed = _COMMAND.sub(_command, scrubbed)
        return text if scrubbed == text else scrubbed

    def _assignment(self, match: re.Match[str]) -> str:
        if not self.is_secret_key(match["quoted"] or match["bare"]):
            return match[0]
        start = match.start("value") - match.start()
        return match[0][:start] + _redact_quoted(match["value"])

    # -- the processor ----------------------------------------------------------------------

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Return a scrubbed copy of ``event_dict`` (a structlog processor)."""
        exc_info = event_dict.get("exc_info")
        scrubbed: dict[str, Any] = {}
        path = {id(event_dict)}
        for key, value in event_dict.items():
            if key == "exc_info":
                scrubbed[key] = value
            elif self.is_secret_key(key) and value is not None:
                scrubbed[key] = REDACTED
            else:
                scrubbed[self.scrub_text(key)] = self._scrub(value, path)
        if exc_info is not None and exc_info is not False:
            text = self._traceback_text(exc_info)
            if text is not None:
                del scrubbed["exc_info"]
                scrubbed["exception"] = text
        return scrubbed

    def _scrub(self, value: object, path: set[int]) -> object:
        """``value`` with secrets replaced; the same object when there was nothing to hide."""
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, bytes | bytearray):
            text = bytes(value).decode("latin-1")
            scrubbed = self.scrub_text(text)
            return value if scrubbed is text else scrubbed.encode("latin-1")
        if isinstance(value, BaseException):
            message = _as_text(value)
            scrubbed = self.scrub_text(message)
            return value if scrubbed is message else f"{type(value).__qualname__}: {scrubbed}"
        if not isinstance(value, Mapping | list | tuple):
            return value
        if id(value) in path:
            return "<cycle>"
        path.add(id(value))
        try:
            if isinstance(value, Mapping):
                return self._scrub_mapping(value, path)
            return self._scrub_sequence(value, path)
        finally:
            path.discard(id(value))

    def _scrub_mapping(self, value: Mapping[Any, Any], path: set[int]) -> object:
        items: list[tuple[Any, object]] = []
        changed = False
        for key, item in value.items():
            new_key: Any = key
            new_item: object
            if self.is_secret_key(key) and item is not None:
                new_item = REDACTED
            else:
                new_key = self.scrub_text(key) if isinstance(key, str) else key
                new_item = self._scrub(item, path)
            changed = changed or new_key is not key or new_item is not item
            items.append((new_key, new_item))
        return dict(items) if changed else value

    def _scrub_sequence(self, value: list[Any] | tuple[Any, ...], path: set[int]) -> object:
        items = [self._scrub(item, path) for item in value]
        for position in _command_passwords(items):
            items[position] = REDACTED
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        if isinstance(value, list):
            return items
        make = getattr(type(value), "_make", None)  # a named tuple keeps its type
        return make(items) if make is not None else tuple(items)

    def _traceback_text(self, exc_info: object) -> str | None:
        """The scrubbed traceback of an unformatted ``exc_info``, or ``None`` if it is clean."""
        if isinstance(exc_info, BaseException):
            error: BaseException | None = exc_info
        elif isinstance(exc_info, tuple) and len(exc_info) == 3:
            error = exc_info[1] if isinstance(exc_info[1], BaseException) else None
        else:
            error = sys.exc_info()[1]  # exc_info=True: the exception being handled
        if error is None:
            return None
        try:
            text = "".join(traceback.format_exception(error))
        except Exception:
            text = f"{type(error).__qualname__}: {_as_text(error)}"
        scrubbed = self.scrub_text(text)
        return None if scrubbed is text else scrubbed


def _escaped_forms(secret: str) -> set[str]:
    """The secret as it may appear in text: raw, repr- and JSON-escaped, percent-encoded."""
    forms = {
        secret,
        repr(secret)[1:-1],
        secret.replace("\\", "\\\\").replace("'", "\\'"),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        secret.encode().decode("latin-1"),  # as bytes values are searched
    }
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _command(match: re.Match[str]) -> str:
    """Redact the arguments of ``AUTH``/``AUTH2`` (two) or ``requirepass`` (one) in text."""
    word = match["command"].lstrip("b").strip("'\"").lower()
    limit = 1 if word in _ONE_ARGUMENT else 2
    args = match["args"]
    out: list[str] = []
    end = 0
    for count, argument in enumerate(_ARGUMENTS.finditer(args)):
        if count >= limit:
            break
        out += [args[end : argument.start("arg")], _redact_quoted(argument["arg"])]
        end = argument.end()
    return match["command"] + "".join(out) + args[end:]


def _command_passwords(items: list[Any]) -> list[int]:
    """Positions of passwords in a list of Redis command arguments (arity is known)."""
    positions = []
    first = _command_word(items[0]) if items else None
    for i, item in enumerate(items):
        word = _command_word(item)
        if word in ("auth", "auth2"):
            if word == "auth2" or first == "hello":
                target = i + 2  # AUTH2 user password; HELLO ... AUTH user password
            elif i == 0:
                target = len(items) - 1 if len(items) <= 3 else i + 2  # AUTH [user] password
            else:
                target = i + 1  # MIGRATE ... AUTH password
            if i < target < len(items):
                positions.append(target)
        elif word in _ONE_ARGUMENT and i + 1 < len(items):
            positions.append(i + 1)
    return positions


_DEFAULT: Final = SecretScrubber()


def scrub_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: :class:`SecretScrubber` with no registered secrets.

    Scrubs secret-named keys, URL passwords, ``Authorization`` credentials and Redis
    ``AUTH`` arguments; returns a new dict. Put it after ``format_exc_info``.
    """
    return _DEFAULT(logger, method_name, event_dict)

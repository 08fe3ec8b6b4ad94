"""Redis's glob matcher (``stringmatchlen`` in Redis's ``util.c``), ported to Python.

``fnmatch`` is not the same language: it has no ``\\`` escapes, spells negation ``[!a]``
instead of ``[^a]``, and matches characters, while Redis matches bytes. MemoryCache uses
this port so that ``delete_pattern`` selects exactly the keys Redis would.
"""

from __future__ import annotations


def glob_match(pattern: bytes, string: bytes) -> bool:
    """Tell whether ``string`` matches the Redis glob ``pattern`` (both UTF-8 bytes)."""
    return _match(pattern, 0, string, 0, [False])


def glob_escape(text: str) -> str:
    """Escape ``text`` so that it matches itself literally inside a Redis glob."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _match(p: bytes, pi: int, s: bytes, si: int, skip_longer: list[bool]) -> bool:
    plen, slen = len(p), len(s)
    while pi < plen and si < slen:
        c = p[pi]
        if c == 0x2A:  # '*'
            while pi + 1 < plen and p[pi + 1] == 0x2A:
                pi += 1
            if pi + 1 == plen:
                return True
            while si < slen:
                if _match(p, pi + 1, s, si, skip_longer):
                    return True
                if skip_longer[0]:
                    return False
                si += 1
            skip_longer[0] = True
            return False
        if c == 0x3F:  # '?'
            si += 1
        elif c == 0x5B:  # '['
            pi += 1
            negate = pi < plen and p[pi] == 0x5E  # '^'
            if negate:
                pi += 1
            matched = False
            while True:
                if pi < plen and p[pi] == 0x5C and plen - pi >= 2:  # '\' escape
                    pi += 1
                    if p[pi] == s[si]:
                        matched = True
                elif pi < plen and p[pi] == 0x5D:  # ']'
                    break
                elif pi >= plen:  # unterminated class: Redis treats the end as ']'
                    pi -= 1
                    break
                elif plen - pi >= 3 and p[pi + 1] == 0x2D:  # range 'a-z'
                    start, end = sorted((_signed(p[pi]), _signed(p[pi + 2])))
                    pi += 2
                    if start <= _signed(s[si]) <= end:
                        matched = True
                elif p[pi] == s[si]:
                    matched = True
                pi += 1
            if matched == negate:
                return False
            si += 1
        else:
            if c == 0x5C and plen - pi >= 2:  # '\' escapes the next byte
                pi += 1
            if p[pi] != s[si]:
                return False
            si += 1
        pi += 1
        if si == slen:
            while pi < plen and p[pi] == 0x2A:
                pi += 1
            break
    return pi == plen and si == slen


def _signed(byte: int) -> int:
    """Redis compares range bounds as C ``char``: signed on x86-64, the platform we follow.

    (On ARM Linux ``char`` is unsigned, so a range with a non-ASCII bound such as
    ``[a-é]`` can match differently there; ASCII ranges are the same everywhere.)
    """
    return byte - 256 if byte > 127 else byte

"""TLS diagnosis: say what failed in a handshake, and tell a TLS/plaintext mismatch apart.

redis-py turns an ``ssl.SSLError`` into its own ``ConnectionError`` (the original is its
context), and a port that speaks the other protocol shows up as a connection dropped before
any reply. :func:`tls_failure` reads the first from the exception chain; :class:`TlsProbe` asks
the port itself, off the call's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import ssl
from typing import Final

PROBE_TIME: Final = 0.2  # the longest a probe may take
PROBE_MARGIN: Final = 0.02  # a call stops waiting for the probe this long before its deadline
PROBE_EVERY: Final = 10.0  # seconds between two probes of one adapter, however many resets
WAIT_SHARE: Final = 0.25  # the share of a call's remaining time it may wait for a probe
_CLIENT_CERT_ALERTS: Final = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "PEER DID NOT RETURN")


def tls_failure(exc: BaseException) -> str | None:
    """What failed in a TLS handshake, if ``exc`` or an exception behind it says so.

    redis-py turns an ``ssl.SSLError`` into its own ``ConnectionError`` (the original is
    its context). A plaintext client talking to a TLS port reads a TLS alert record
    (``\x15\x03``) where a Redis reply should start.
    """
    node: BaseException | None = exc
    for _ in range(8):  # a short chain; never loop on a cycle
        if node is None:
            break
        if isinstance(node, ssl.SSLCertVerificationError):
            return f"TLS: the server's certificate did not verify: {node.verify_message}"
        if isinstance(node, ssl.SSLError):
            reason = node.reason or type(node).__name__
            if reason == "WRONG_VERSION_NUMBER":
                return "TLS: the server does not speak TLS on this port (use redis://?)"
            return f"TLS: handshake failed: {reason}"
        node = node.__cause__ or node.__context__
    if "\\x15\\x03" in str(exc):
        return "TLS: the server speaks TLS on this port (use rediss://)"
    return None


def cut_off(exc: BaseException) -> bool:
    """Whether the server reset or closed the connection (rather than refusing it)."""
    node: BaseException | None = exc
    for _ in range(8):
        if node is None:
            break
        if isinstance(node, ConnectionResetError | BrokenPipeError):
            return True
        node = node.__cause__ or node.__context__
    text = str(exc)
    return "reset by peer" in text or "closed by server" in text


class TlsProbe:
    """Asks a port which protocol it speaks, after a new connection was dropped before any reply.

    A diagnosis may only add words to a failure (P9). So the probe runs as a task of its own,
    bounded by the deadline of the call that started it: a call waits for it at most
    ``WAIT_SHARE`` of its remaining time (on loopback a probe takes a few milliseconds), then
    returns the error it has, while the probe finishes for the calls after it. One probe
    runs at a time, at most once every ``every`` seconds, so a storm of resets costs one
    probe. A verdict serves for ``every`` seconds after its probe, and not after a new
    connection succeeded (:meth:`forget`): a port fixed since then is not blamed. Its SSL
    contexts load no certificate store (that blocks the event loop for up to 100 ms): the
    probe verifies nothing, it only reads which protocol answers.
    """

    def __init__(
        self, host: object, port: object, *, tls: bool, client_certificate: bool,
        every: float = PROBE_EVERY,
    ) -> None:  # fmt: skip
        self._address = (host, port) if isinstance(host, str) and isinstance(port, int) else None
        self._tls = tls
        self._useful = self._address is not None and not (tls and client_certificate)
        self._every = every
        self._loop: asyncio.AbstractEventLoop | None = None  # whose clock the times are
        self._task: asyncio.Task[str | None] | None = None
        self._started = -math.inf
        self._verdict: str | None = None
        self._verdict_at = -math.inf

    async def explain(self, seconds_left: float) -> str | None:
        """The diagnosis of the port, if one is known or arrives in time; ``None`` otherwise.

        Never raises but the caller's own ``CancelledError``; returns by
        ``seconds_left - PROBE_MARGIN``.
        """
        if not self._useful:
            return None
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (asyncio.run again): start afresh
            self._reset(loop)
        budget = seconds_left - PROBE_MARGIN
        if self._task is None and loop.time() - self._started >= self._every and budget > 0:
            self._started = loop.time()
            self._verdict = None
            self._task = loop.create_task(self._probe(min(budget, PROBE_TIME)))
            self._task.add_done_callback(self._done)
        task = self._task
        if task is not None and budget * WAIT_SHARE > 0:
            await asyncio.wait((task,), timeout=budget * WAIT_SHARE)
        if loop.time() - self._verdict_at > self._every:
            return None  # an old verdict: the port may have changed since
        return self._verdict

    def forget(self) -> None:
        """A new connection succeeded: whatever the last probe said is out of date."""
        self._verdict = None

    def cancel(self) -> None:
        """Stop a probe in flight (the adapter is closing)."""
        task = self._task
        if task is not None and not task.get_loop().is_closed():
            task.cancel()

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        old, self._loop, self._task = self._task, loop, None
        if old is not None and old.get_loop().is_closed():
            # its loop will never run it again: end its coroutine here, quietly, rather than
            # in the garbage collector with a traceback
            with contextlib.suppress(Exception):
                old.get_coro().close()
        self._started = self._verdict_at = -math.inf
        self._verdict = None

    def _done(self, task: asyncio.Task[str | None]) -> None:
        if task is not self._task:
            return  # a task of an earlier event loop
        self._task = None
        if not task.cancelled() and task.exception() is None:
            self._verdict = task.result()
            self._verdict_at = task.get_loop().time()

    async def _probe(self, seconds: float) -> str | None:
        assert self._address is not None
        host, port = self._address
        try:
            async with asyncio.timeout(seconds):
                _, writer = await asyncio.open_connection(host, port, ssl=_context(self._tls))
        except ssl.SSLError as exc:
            if self._tls and any(word in str(exc).upper() for word in _CLIENT_CERT_ALERTS):
                return "TLS: the server requires a client certificate (ssl_certfile, ssl_keyfile)"
            return None
        except (OSError, TimeoutError, ValueError):
            return None
        writer.close()
        return None if self._tls else "TLS: the server speaks TLS on this port (use rediss://)"


@functools.cache
def _context(tls: bool) -> ssl.SSLContext:
    """A context that only asks which protocol a port speaks (no certificates, none loaded)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if tls:  # TLS 1.2 asks for a client certificate during the handshake itself
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context

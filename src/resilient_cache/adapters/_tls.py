"""TLS diagnosis: say what failed in a handshake, and tell a TLS/plaintext mismatch apart.

redis-py turns an ``ssl.SSLError`` into its own ``ConnectionError`` (the original is its
context), and a port that speaks the other protocol shows up as a connection dropped before
any reply. :func:`tls_failure` reads the first from the exception chain; :func:`probe_tls`
asks the port itself, once, within the rest of the call's deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

PROBE_TIME: Final = 0.2
PROBE_MARGIN: Final = 0.02  # the probe ends this long before the call's deadline
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


async def probe_tls(
    host: object, port: object, *, tls: bool, client_certificate: bool, seconds: float
) -> str | None:
    """Probe ``host:port``: does it expect TLS, or a client certificate?

    Runs only after a new connection was dropped before any reply, within ``seconds`` (the
    rest of the call's deadline). ``None``: nothing to say about TLS.
    """
    if not isinstance(host, str) or not isinstance(port, int) or seconds <= 0:
        return None
    if tls and client_certificate:
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asks which protocol the port speaks
    if tls:  # TLS 1.2 asks for a client certificate during the handshake itself
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        async with asyncio.timeout(min(seconds, PROBE_TIME)):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLError as exc:
        if tls and any(word in str(exc).upper() for word in _CLIENT_CERT_ALERTS):
            return "TLS: the server requires a client certificate (ssl_certfile, ssl_keyfile)"
        return None
    except (OSError, TimeoutError):
        return None
    writer.close()
    return None if tls else "TLS: the server speaks TLS on this port (use rediss://)"

"""A small client for Toxiproxy, to run network faults against a real TCP connection.

`Toxiproxy <https://github.com/Shopify/toxiproxy>`_ is a TCP proxy whose faults ("toxics":
latency, blackholes, resets, cut-offs...) are switched on and off over an HTTP API. Put a
proxy between your service and Redis, point the client at the proxy, and break it::

    with ToxiproxyServer() as server:                       # or Toxiproxy("http://host:8474")
        proxy = server.client.create_proxy("redis", "127.0.0.1:0", "127.0.0.1:6379")
        url = f"redis://{proxy.listen_host}:{proxy.listen_port}/0"
        with proxy.latency(300):
            ...                                             # every reply is 300 ms late
        with proxy.disabled():
            ...                                             # connections are refused

Dependency-free (stdlib ``urllib``) and synchronous: each call is one short request to the
API. Needs Toxiproxy >= 2.6 (proxy updates use ``PATCH``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from resilient_cache.testing import LOOPBACK, ServerProcess

__all__ = [
    "Proxy",
    "Stream",
    "Toxic",
    "ToxicContext",
    "Toxiproxy",
    "ToxiproxyError",
    "ToxiproxyServer",
]

Stream = Literal["upstream", "downstream"]
"""``downstream``: server to client (the default); ``upstream``: client to server."""
ToxicContext = AbstractContextManager["Toxic"]
"""What the fault methods return: a context manager that removes its toxic on exit."""

# Never send these requests through an HTTP proxy from the environment (http_proxy etc.).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ToxiproxyError(Exception):
    """The Toxiproxy API refused a request (``status``, ``body``), or could not be reached
    (``status`` is ``None`` and ``body`` says why)."""

    def __init__(self, method: str, url: str, status: int | None, body: str) -> None:
        self.method, self.url, self.status, self.body = method, url, status, body
        what = f"HTTP {status}" if status is not None else "unreachable"
        super().__init__(f"Toxiproxy {method} {url}: {what}: {body}")


@dataclass(frozen=True)
class Toxic:
    """A toxic as the server reports it."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Toxic:
        return cls(data["name"], data["type"], data["stream"], data["toxicity"], data["attributes"])


class Toxiproxy:
    """A client for the Toxiproxy HTTP API at ``url`` (e.g. ``http://127.0.0.1:8474``)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Toxiproxy({self.url!r})"

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one API request; return the decoded JSON reply (``None`` when empty)."""
        url = self.url + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                raw: bytes = resp.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(
                method, url, exc.code, exc.read().decode(errors="replace")
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToxiproxyError(method, url, None, str(reason)) from None
        return json.loads(raw) if raw.strip() else None

    def version(self) -> str:
        """The server's version (``"2.12.0"``)."""
        reply = self.request("GET", "/version")
        return str(reply["version"] if isinstance(reply, dict) else reply)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self.request("POST", "/reset")

    def create_proxy(self, name: str, listen: str, upstream: str, *, enabled: bool = True) -> Proxy:
        """Create a proxy listening on ``listen`` (``"127.0.0.1:0"``: a free port, chosen by
        the server) and forwarding to ``upstream`` (``"host:port"``).

        Raises :class:`ToxiproxyError` (409) if a proxy of that name exists.
        """
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return Proxy(self, self.request("POST", "/proxies", body))

    def get_proxy(self, name: str) -> Proxy:
        """The proxy called ``name`` (:class:`ToxiproxyError` 404 if there is none)."""
        return Proxy(self, self.request("GET", f"/proxies/{quote(name, safe='')}"))

    def proxies(self) -> dict[str, Proxy]:
        """All proxies, by name."""
        reply: dict[str, dict[str, Any]] = self.request("GET", "/proxies")
        return {name: Proxy(self, data) for name, data in reply.items()}


class Proxy:
    """One proxy, as of the server's last reply about it (:meth:`Toxiproxy.get_proxy` re-reads).

    Faults are context managers that undo themselves on exit::

        with proxy.timeout(0):      # blackhole: data stops flowing, connections stay open
            ...
    """

    def __init__(self, client: Toxiproxy, data: dict[str, Any]) -> None:
        self.client = client
        self.name: str = data["name"]
        self._data = data

    def __repr__(self) -> str:
        return f"Proxy({self.name!r}, listen={self.listen!r}, upstream={self.upstream!r})"

    @property
    def listen(self) -> str:
        """The address the proxy listens on, ``"host:port"``."""
        return str(self._data["listen"])

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def upstream(self) -> str:
        return str(self._data["upstream"])

    @property
    def enabled(self) -> bool:
        return bool(self._data["enabled"])

    @property
    def _path(self) -> str:
        return f"/proxies/{quote(self.name, safe='')}"

    def enable(self) -> None:
        """Listen again (on the same address)."""
        self._data = self.client.request("PATCH", self._path, {"enabled": True})

    def disable(self) -> None:
        """Close the listener and every open connection: new connects are refused."""
        self._data = self.client.request("PATCH", self._path, {"enabled": False})

    def delete(self) -> None:
        """Remove the proxy from the server."""
        self.client.request("DELETE", self._path)

    def toxics(self) -> list[Toxic]:
        """The toxics active on this proxy now."""
        return [Toxic.from_json(t) for t in self.client.request("GET", f"{self._path}/toxics")]

    def add_toxic(
        self,
        type: str,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
        **attributes: float | str | bool,
    ) -> Toxic:
        """Add a toxic (default name: ``<type>_<stream>``); see Toxiproxy's list of types."""
        body: dict[str, Any] = {
            "type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes,
        }  # fmt: skip
        if name is not None:
            body["name"] = name
        return Toxic.from_json(self.client.request("POST", f"{self._path}/toxics", body))

    def remove_toxic(self, name: str) -> None:
        self.client.request("DELETE", f"{self._path}/toxics/{quote(name, safe='')}")

    @contextmanager
    def toxic(
        self,
        type: str,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
        **attributes: float | str | bool,
    ) -> Iterator[Toxic]:
        """Add a toxic for the duration of a ``with`` block (it is removed on exit)."""
        toxic = self.add_toxic(type, stream=stream, toxicity=toxicity, name=name, **attributes)
        try:
            yield toxic
        finally:
            self.remove_toxic(toxic.name)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The proxy is down (connects refused) inside the block, up again after it."""
        self.disable()
        try:
            yield
        finally:
            self.enable()

    def latency(self, ms: int, jitter: int = 0, *, stream: Stream = "downstream") -> ToxicContext:
        """Delay data by ``ms`` (+/- ``jitter``) milliseconds."""
        return self.toxic("latency", stream=stream, latency=ms, jitter=jitter)

    def timeout(self, ms: int = 0, *, stream: Stream = "downstream") -> ToxicContext:
        """Stop all data; close the connection after ``ms`` (0: hold it open until removed)."""
        return self.toxic("timeout", stream=stream, timeout=ms)

    def reset_peer(self, timeout_ms: int = 0, *, stream: Stream = "downstream") -> ToxicContext:
        """Close connections with a TCP RST (``ECONNRESET``), after ``timeout_ms``."""
        return self.toxic("reset_peer", stream=stream, timeout=timeout_ms)

    def limit_data(self, nbytes: int, *, stream: Stream = "downstream") -> ToxicContext:
        """Close a connection once ``nbytes`` bytes have gone through it."""
        return self.toxic("limit_data", stream=stream, bytes=nbytes)

    def slicer(
        self, average_size: int, size_variation: int = 0, delay_us: int = 0,
        *, stream: Stream = "downstream",
    ) -> ToxicContext:  # fmt: skip
        """Cut data into packets of about ``average_size`` bytes, ``delay_us`` apart."""
        return self.toxic(
            "slicer", stream=stream, average_size=average_size,
            size_variation=size_variation, delay=delay_us,
        )  # fmt: skip

    def bandwidth(self, rate_kb: int, *, stream: Stream = "downstream") -> ToxicContext:
        """Limit throughput to ``rate_kb`` KB/s."""
        return self.toxic("bandwidth", stream=stream, rate=rate_kb)

    def slow_close(self, delay_ms: int, *, stream: Stream = "downstream") -> ToxicContext:
        """Delay the closing of a connection by ``delay_ms``."""
        return self.toxic("slow_close", stream=stream, delay=delay_ms)


class ToxiproxyServer(ServerProcess):
    """A private ``toxiproxy-server`` process on a free loopback port, for tests.

    Use it as a context manager (or :meth:`start` then :meth:`cleanup`); talk to it through
    :attr:`client`. Its proxies should listen on loopback too (``"127.0.0.1:0"``).

    Args:
        binary: the ``toxiproxy-server`` executable.
        extra_args: more command-line flags (e.g. ``"-proxy-metrics"``).
    """

    name = "toxiproxy"

    def __init__(self, binary: str = "toxiproxy-server", *extra_args: str) -> None:
        super().__init__(binary, *extra_args)
        self.client = Toxiproxy(self.url)
        self._probe = Toxiproxy(self.url, timeout=0.5)

    @property
    def url(self) -> str:
        """The API's URL, ``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.port}"

    def _argv(self) -> list[str]:
        return [self.binary, "-host", LOOPBACK, "-port", str(self.port), *self.extra_args]

    def _answers(self) -> bool:
        try:
            self._probe.version()
        except ToxiproxyError:
            return False
        return True

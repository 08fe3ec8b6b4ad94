"""The campaign's deployments repair what its tools break, too."""

from __future__ import annotations

import signal

import pytest
import redis

from tests.servers import require_binary
from tests.torture.world import Standalone, admin


@pytest.mark.slow
def test_a_toxiproxy_server_that_died_is_started_again_with_its_proxies_on_their_ports() -> None:
    """toxiproxy-server 2.12.0 panics now and then under the campaign's load (a toxic added
    while clients connect); heal() starts it again, the proxy on the port the stack knows."""
    deployment = Standalone(
        require_binary("redis-server", "RESILIENT_CACHE_REDIS_SERVER"),
        require_binary("toxiproxy-server", "RESILIENT_CACHE_TOXIPROXY_SERVER"),
    )
    with deployment:
        assert deployment.proxy is not None
        port = deployment.proxy.listen_port
        assert admin(port, "PING") is True
        proc = deployment.toxiproxy.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with pytest.raises(redis.ConnectionError):
            admin(port, "PING", timeout=0.5)
        assert deployment.heal() == []  # nothing of Redis was lost
        assert deployment.revivals == 1
        assert deployment.proxy.listen_port == port
        assert admin(port, "PING") is True
        assert deployment.heal() == [] and deployment.revivals == 1  # running: left alone

"""Real Redis Cluster and Sentinel deployments for the tests, built from redis-server processes.

* :class:`RedisClusterProcesses`: N primaries with M replicas each (default 3 x 1), formed with
  ``redis-cli --cluster create``; kill a primary with SIGKILL and wait for its replica's
  promotion; bring a node back; :meth:`~RedisClusterProcesses.heal` undoes what a test broke.
* :class:`RedisSentinelProcesses`: a master, a replica and 3 sentinels (quorum 2); a forced
  ``SENTINEL FAILOVER`` or a SIGKILL of the master, each waited until the sentinels agree on
  the new master and it answers ``ROLE`` as a master.

Every process listens on the loopback interface on a free port (never a fixed or default
one), lives in a private temporary directory, and is stopped by its PID (:meth:`cleanup`,
also when the start fails half-way). Both classes are context managers.

The helpers are synchronous, like :class:`~resilient_cache.testing.ServerProcess`: they poll
with short sleeps. From an async test call them through ``asyncio.to_thread`` when the event
loop must keep running meanwhile (e.g. to measure what a client sees during a failover).

The pytest fixtures live beside their deployments (cluster.py, sentinel.py): ``redis_cluster``
(a module-scoped cluster, healed and flushed before each test, on which no test fails a node
over), ``private_cluster`` (a test's own, to kill and fail over) and ``redis_sentinel`` (a
fresh deployment per test). A test module imports them (``from tests.topology import
redis_cluster, ...``) and lists them in its ``__all__``; a ``pytest_plugins`` entry would
import the module a second time.
"""

from tests.topology.cluster import (
    ClusterNodeServer,
    NodeView,
    RedisClusterProcesses,
    private_cluster,
    redis_cli_binary,
    redis_cluster,
    redis_cluster_deployment,
)
from tests.topology.common import CLUSTER_SLOTS, Address, TopologyError, query, try_query
from tests.topology.sentinel import RedisSentinelProcesses, SentinelServer, redis_sentinel

__all__ = [
    "CLUSTER_SLOTS",
    "Address",
    "ClusterNodeServer",
    "NodeView",
    "RedisClusterProcesses",
    "RedisSentinelProcesses",
    "SentinelServer",
    "TopologyError",
    "private_cluster",
    "query",
    "redis_cli_binary",
    "redis_cluster",
    "redis_cluster_deployment",
    "redis_sentinel",
    "try_query",
]

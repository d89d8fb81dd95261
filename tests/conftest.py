"""Shared fixtures: a private real Redis per test (never the machine's 127.0.0.1:6379)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from swarm.devtools.devcluster import DevCluster
from swarm.devtools.devredis import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started, empty, non-persistent redis-server, stopped after the test whatever happens."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start extra servers (e.g. `persistence=True`); every one is stopped after the test."""
    servers: list[RedisServer] = []

    def start(*, persistence: bool = False) -> RedisServer:
        server = RedisServer(persistence=persistence)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[DevCluster]:
    """One Redis Cluster (3 masters, 3 replicas) for the whole run: it takes seconds to form."""
    cluster = DevCluster(masters=3, replicas=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster(redis_cluster_session: DevCluster) -> Iterator[DevCluster]:
    """The session's cluster, healed after the test (killed nodes back as replicas)."""
    yield redis_cluster_session
    redis_cluster_session.heal()

"""Shared fixtures: a private real Redis per test (never the machine's 127.0.0.1:6379)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

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

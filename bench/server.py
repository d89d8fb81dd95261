"""The private redis-server of one benchmark run: the same throwaway server the tests use (free
loopback port, temp dir, no persistence), so figures never depend on the machine's Redis."""

from __future__ import annotations

from swarm.devtools.devredis import RedisServer as BenchRedis
from swarm.devtools.devredis import RedisServerError as BenchServerError

__all__ = ["BenchRedis", "BenchServerError"]

"""What went wrong with Redis, in words an operator can act on.

Every failure of a Redis command or of the subscription is sorted into a cause: the connection
(unreachable, not answering, the host name does not resolve, the credentials are refused) or a
refusal of the command itself (out of memory under `noeviction`, a read-only replica, an ACL that
does not allow it). The transport reports each cause once to its `Problems` (swarm/problems.py)
and clears it when Redis works again.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)

from swarm.transport.topology import TopologyError

CONNECTION = "redis-connection"  # every kind of "cannot talk to Redis" shares one cause
OOM = "redis-oom"
READONLY = "redis-readonly"
NOPERM = "redis-noperm"
REFUSED = "redis-refused"  # any other error reply
CAUSES = (CONNECTION, OOM, READONLY, NOPERM, REFUSED)

_DNS_HINTS = ("name or service not known", "name resolution", "nodename nor servname", "-2 conn")


@dataclass(frozen=True)
class RedisFailure:
    cause: str  # one of CAUSES
    kind: str  # finer: what changed when a new log line is due (unreachable -> auth...)
    message: str  # one line for the log, /readyz and status


def classify(exc: BaseException, where: str) -> RedisFailure:
    """The cause of `exc`, raised by Redis at `where` (host:port, for the message)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, TopologyError):  # says itself what is wrong with the deployment
        return RedisFailure(CONNECTION, "topology", text)
    if isinstance(exc, ClusterDownError) or lowered.startswith("clusterdown"):
        return RedisFailure(
            CONNECTION, "cluster-down", f"Redis Cluster at {where} is down (no quorum of "
            f"masters, or a slot without a master): {text}"
        )
    if isinstance(exc, MasterNotFoundError):
        return RedisFailure(
            CONNECTION, "sentinel", f"Sentinel names no master for {where} (every sentinel "
            f"unreachable, or the service unknown): {text}"
        )
    if isinstance(exc, OutOfMemoryError) or lowered.startswith("oom"):
        return RedisFailure(
            OOM,
            OOM,
            f"Redis at {where} refuses writes: out of memory (maxmemory reached, "
            f"policy noeviction): {text}",
        )
    if isinstance(exc, ReadOnlyError) or lowered.startswith("readonly"):
        return RedisFailure(
            READONLY, READONLY, f"Redis at {where} refuses writes: a read-only replica: {text}"
        )
    if (
        isinstance(exc, NoPermissionError)
        or "can't run this command" in lowered
        or (lowered.startswith("noperm") or "no permissions" in lowered)
    ):
        return RedisFailure(
            NOPERM,
            NOPERM,
            f"Redis at {where} refuses a command: the ACL of this user does not "
            f"allow it (see docs/security.md): {text}",
        )
    if isinstance(exc, AuthenticationError) or "wrongpass" in lowered or "noauth" in lowered:
        return RedisFailure(
            CONNECTION,
            "auth",
            f"Redis at {where} refused the credentials (check "
            f"SWARM_REDIS_USERNAME / SWARM_REDIS_PASSWORD or the URL): {text}",
        )
    if isinstance(exc, ResponseError):
        return RedisFailure(REFUSED, REFUSED, f"Redis at {where} refused a command: {text}")
    if _is_dns(exc) or any(hint in lowered for hint in _DNS_HINTS):
        return RedisFailure(CONNECTION, "dns", f"cannot resolve the Redis host of {where}: {text}")
    if isinstance(exc, TimeoutError) or "timeout" in lowered or "timed out" in lowered:
        return RedisFailure(
            CONNECTION, "timeout", f"Redis unreachable at {where} (no answer): {text}"
        )
    return RedisFailure(CONNECTION, "unreachable", f"Redis unreachable at {where}: {text}")


def _is_dns(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, socket.gaierror):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False

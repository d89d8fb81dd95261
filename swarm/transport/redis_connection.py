"""What every part of the Redis transport shares: the clients, the codec, and how a failed
command becomes one `TransportError` and one reported problem per cause."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from swarm.problems import Problems
from swarm.transport import redis_lua as lua
from swarm.transport.base import Message, TransportError
from swarm.transport.codec import LOG, Codec, Decoded, PlainCodec, Rejected, ReplayGuard
from swarm.transport.redis_client import (
    CONNECT_TIMEOUT_S,
    RECONNECT_CAP_S,
    SOCKET_TIMEOUT_S,
    RedisSecurity,
)
from swarm.transport.redis_errors import CONNECTION, classify
from swarm.transport.redis_keys import SwarmKeys
from swarm.transport.rejects import RejectLog
from swarm.transport.topology import CLUSTER, ClientOptions, Deployment, TopologyError
from swarm.wire import Envelope

log = logging.getLogger("swarm.transport.redis_transport")

CONNECTION_ERRORS = (RedisError, OSError, TimeoutError)


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return b""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, TopologyError):  # already says what is wrong, in words
        return text
    return f"{type(exc).__name__}: {text}"


class RedisConnection:
    """One node's connection to one swarm on one Redis: the state the parts share."""

    def __init__(
        self,
        url: str,
        swarm: str,
        node: str,
        *,
        queue_size: int = 10_000,
        socket_timeout: float = SOCKET_TIMEOUT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        reconnect_cap: float = RECONNECT_CAP_S,
        ping_interval: float = 5.0,
        codec: Codec | None = None,
        security: RedisSecurity | None = None,
        sentinel_password: str | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 200,
    ) -> None:
        """`codec` seals what goes to Redis (default: plain, no key); `security` holds the
        Redis credentials and TLS trust; `sentinel_password` the sentinels' own password.
        `wait_replicas` > 0: each publish also waits (up to `wait_timeout_ms`) for that many
        replicas to have it (WAIT); it narrows what a failover can lose, nothing relies on it."""
        if not node:
            raise ValueError("node id must not be empty")
        self.url = url
        self.swarm = swarm
        self.node = node
        self.keys = SwarmKeys.for_swarm(swarm)
        self.log_length: int | None = None  # XLEN after our last publish
        self.rejected = 0  # undecodable messages / log entries / snapshot records skipped
        # path -> the envelope of its snapshot as `snapshots` last read it (sender, signature)
        self.snapshot_envelopes: dict[str, Envelope] = {}
        self.last_scanned_id = "0-0"  # last log entry read_log looked at, decodable or not
        self.codec: Codec = codec if codec is not None else PlainCodec(swarm)
        self.rejects = RejectLog(log)  # rejections per reason, and rate-limited logging
        self._replays = ReplayGuard()
        # Log entries already counted as rejected: catch-ups re-read them, count them once.
        self._bad_entries: OrderedDict[str, None] = OrderedDict()
        self.reconnects = 0
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.unreplicated = 0  # publishes that fewer than `wait_replicas` replicas confirmed
        self.last_error: str | None = None
        # Where problems are reported once per cause (the daemon sets it; status does not).
        self.problems: Problems | None = None
        self._refusing: dict[str, set[str]] = {}  # cause of a refusal -> operations it hits
        # Live peers whose heartbeat this node cannot open: node -> (reason, seen ms).
        self.unreadable_nodes: dict[str, tuple[str, int]] = {}
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._op_timeout = socket_timeout + connect_timeout + 1.0
        self._reconnect_cap = reconnect_cap
        self._ping_interval = ping_interval
        options = ClientOptions(
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            client_name=f"swarm:{node}",
            security=security or RedisSecurity(),
            sentinel_password=sentinel_password,
        )
        try:
            # One server, a cluster or Sentinel (swarm/transport/topology.py): the commands below
            # are the same for each; publishing and subscribing differ on a cluster.
            self._deployment = Deployment(url, options)
        except ValueError as exc:
            raise TransportError(f"invalid Redis URL {url!r}: {one_line(exc)}") from None
        self.where = self._deployment.where
        self._bind_client()
        self._files_sent: str | None = None  # per-file facts as last stored in Redis
        self._files_obj: object = None  # the facts object last encoded, and its encoding
        self._files_json: str | None = None
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=queue_size)
        self._connected = False
        self._started = False
        self._closed = False
        self._reader: asyncio.Task[None] | None = None

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """reason -> inputs dropped for it (see swarm.transport.codec), for /metrics."""
        return dict(self.rejects.by_reason)

    def _reject(self, exc: Rejected) -> None:
        self.rejected += 1
        self.rejects.reject(exc.reason, exc.sender, str(exc))

    def _open(self, data: bytes, context: bytes = LOG) -> Decoded | None:
        try:
            return self.codec.open(data, context)
        except Rejected as exc:
            self._reject(exc)
            return None

    @contextmanager
    def _failures(self, operation: str) -> Iterator[None]:
        try:
            yield
        except CONNECTION_ERRORS as exc:
            self._failed(exc, operation)
            raise TransportError(f"{operation} failed: {self.last_error}") from None
        self._worked(operation)

    def _failed(self, exc: BaseException, operation: str) -> None:
        """Note why `operation` failed; report its cause once (see swarm/problems.py)."""
        self.last_error = one_line(exc)
        if self.problems is None:
            return
        failure = classify(exc, self.where)
        if failure.cause != CONNECTION:
            self._refusing.setdefault(failure.cause, set()).add(operation)
        quiet = failure.kind in ("unreachable", "timeout")  # Redis restarts: not an error yet
        level = logging.WARNING if quiet else logging.ERROR
        self.problems.report(failure.cause, failure.message, kind=failure.kind, level=level)

    def _worked(self, operation: str) -> None:
        """`operation` went through: the connection is fine, and refusals that hit only it
        are over."""
        if self.problems is None:
            return
        self.problems.resolve(CONNECTION, f"Redis at {self.where} answers again")
        for cause, operations in list(self._refusing.items()):
            operations.discard(operation)
            if not operations:
                del self._refusing[cause]
                self.problems.resolve(cause, f"Redis at {self.where} accepts {operation} again")

    def _bind_client(self) -> None:
        """Use the deployment's command client (again, once `_resolve` found a cluster)."""
        self._client = self._deployment.client
        self.where = self._deployment.where
        # XRANGE replies stay as Redis sent them ([id, [field, value, ...]]): redis-py would
        # build a dict per entry, a tenth of a whole-log catch-up's time.
        self._client.set_response_callback("XRANGE", _raw_reply)
        self._sharded = self._deployment.kind == CLUSTER
        self._publish_lua = lua.SHARDED_PUBLISH_LUA if self._sharded else lua.PUBLISH_LUA
        register = self._client.register_script
        self._publish_script = register(self._publish_lua)
        self._acquire_script = register(lua.ACQUIRE_LEASE_LUA)
        self._release_script = register(lua.RELEASE_LEASE_LUA)
        self._snapshot_script = register(lua.PUT_SNAPSHOT_LUA)
        self._heartbeat_script = register(lua.OOM_FLAG + lua.HEARTBEAT_LUA)
        self._heartbeat_fallback = register(lua.HEARTBEAT_LUA)
        self._epoch_script = register(lua.EPOCH_LUA)

    async def _resolve(self) -> None:
        """Find out what the URL names before the first command (see topology.Deployment)."""
        if not self._deployment.resolved:
            await self._deployment.resolve()
            self._bind_client()

    @property
    def topology(self) -> str:
        """"redis", "cluster" or "sentinel" (a redis:// URL is "redis" until first used)."""
        return self._deployment.kind

    def _publish_call(self, data: bytes) -> tuple[int, list[bytes | str]]:
        """(number of keys, keys and arguments) of one call of the publish script."""
        if self._sharded:
            return 2, [self.keys.log, self.keys.bus, data]
        return 1, [self.keys.log, data, self.keys.bus]

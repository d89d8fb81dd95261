"""Which Redis a URL names (one server, a Cluster, a Sentinel-watched master), and its clients.

`redis://` / `rediss://` / `unix://` name one server; whether it is a node of a Redis Cluster is
asked once (`INFO cluster`), so any node's address works and nobody has to say "cluster".
`redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]` (the form Celery and kombu
use) names sentinels that are asked for the master, again on every new connection, so a failover
is followed by reconnecting. The URL's credentials are the master's; the sentinels' password is
a setting of its own.

The swarm's transport sees one command client whatever the topology, and a subscription adapter
(`swarm.transport.subscription`) that uses SSUBSCRIBE on a cluster and SUBSCRIBE otherwise.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from swarm.transport.redis_client import (
    CONNECT_TIMEOUT_S,
    SOCKET_TIMEOUT_S,
    RedisSecurity,
    command_retry,
    make_client,
)

PLAIN, CLUSTER, SENTINEL = "redis", "cluster", "sentinel"
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
_HELP = "use redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"


class TopologyError(RedisError):
    """What is wrong with the Redis deployment itself, in one line (no quorum, unknown service,
    Sentinel unreachable); raised like a connection failure, so the daemon keeps retrying."""


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None  # the master's credentials (the URL's user info)
    password: str | None = None

    @property
    def hosts(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)

    @property
    def where(self) -> str:
        return f"service {self.service} of sentinels {self.hosts}"


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service and database of a redis+sentinel:// URL; ValueError in one line."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a Sentinel URL: {_HELP}")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if has_password else None
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise ValueError(f"a Sentinel URL needs at least one HOST:PORT: {_HELP}")
        try:
            number = int(port) if port else DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"bad sentinel port {port!r}: {_HELP}") from None
        if not 0 < number < 65536:
            raise ValueError(f"bad sentinel port {number}: {_HELP}")
        sentinels.append((host.strip("[]"), number))
    path = [urllib.parse.unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"a Sentinel URL names the service after the hosts: {_HELP}")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"bad database number {path[1]!r}: {_HELP}")
        db = int(path[1])
    return SentinelTarget(tuple(sentinels), path[0], db, username, password)


def where(url: str) -> str:
    """What a URL points at, for messages: host:port, the socket path, or the sentinels."""
    if is_sentinel_url(url):
        try:
            return parse_sentinel_url(url).where
        except ValueError:
            return "sentinels ?"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


def node_url(url: str, host: str, port: int) -> str:
    """`url` (scheme, credentials, options) pointed at another node of the same cluster."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, "/0", parts.query, ""))


def no_retry() -> Retry:
    """Subscriptions never retry: a silent reconnect would hide the gap in which messages were
    lost (the transport reconnects itself and re-reads the log)."""
    return Retry(NoBackoff(), 0, supported_errors=())


@dataclass(frozen=True)
class ClientOptions:
    socket_timeout: float = SOCKET_TIMEOUT_S
    connect_timeout: float = CONNECT_TIMEOUT_S
    client_name: str | None = None
    security: RedisSecurity = field(default_factory=RedisSecurity)
    sentinel_password: str | None = None


class Deployment:
    """The Redis a URL names: its kind, the command client, and clients for subscribing.

    Until `resolve()` has run, a redis:// URL is served as one server; `resolve()` asks whether
    it is a cluster node and, if so, switches to a cluster client (`kind` tells which).
    """

    def __init__(self, url: str, options: ClientOptions) -> None:
        self.url = url
        self.options = options
        self.where = where(url)
        self.resolved = False
        self.cluster_node = False  # the URL names a node of a Redis Cluster (CLUSTER INFO answered)
        self.sentinel_target: SentinelTarget | None = None
        self._sentinel: Sentinel | None = None
        self.cluster: RedisCluster | None = None
        if is_sentinel_url(url):
            self.kind = SENTINEL
            self.sentinel_target = parse_sentinel_url(url)
            self._sentinel = self._make_sentinel(self.sentinel_target)
            self.client: Redis | RedisCluster = self._sentinel_client(command_retry())
        else:
            self.kind = PLAIN
            self.client = self._plain_client(url, command_retry())

    # -- clients -------------------------------------------------------------------------------

    def _plain_client(self, url: str, retry: Retry, name: str | None = None) -> Redis:
        o = self.options
        return make_client(
            url,
            socket_timeout=o.socket_timeout,
            connect_timeout=o.connect_timeout,
            retry=retry,
            client_name=name or o.client_name,
            security=o.security,
        )

    def _make_sentinel(self, target: SentinelTarget) -> Sentinel:
        o = self.options
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": o.socket_timeout,
            "socket_connect_timeout": o.connect_timeout,
            "retry": command_retry(),  # redis-py's default takes seconds to give up on one
        }
        if o.sentinel_password is not None:
            sentinel_kwargs["password"] = o.sentinel_password
        return Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=sentinel_kwargs
        )

    def _sentinel_client(self, retry: Retry, name: str | None = None) -> Redis:
        assert self._sentinel is not None and self.sentinel_target is not None
        o, target = self.options, self.sentinel_target
        credentials: dict[str, Any] = {}
        username = target.username or o.security.username
        password = target.password if target.password is not None else o.security.password
        if username is not None:
            credentials["username"] = username
        if password is not None:
            credentials["password"] = password
        client: Redis = self._sentinel.master_for(
            target.service,
            redis_class=Redis,
            db=target.db,
            socket_timeout=o.socket_timeout,
            socket_connect_timeout=o.connect_timeout,
            retry=retry,
            decode_responses=False,
            client_name=name or o.client_name,
            **credentials,
        )
        return client

    def subscriber_client(self, name: str) -> Redis:
        """A client for one subscription on one server or through Sentinel (never retrying);
        on a cluster see `node_subscriber_client`."""
        if self.kind == SENTINEL:
            return self._sentinel_client(no_retry(), name)
        return self._plain_client(self.url, no_retry(), name)

    def node_subscriber_client(self, host: str, port: int, name: str) -> Redis:
        """A never-retrying client to one node of the cluster (for SSUBSCRIBE on its shard)."""
        return self._plain_client(node_url(self.url, host, port), no_retry(), name)

    # -- finding out what it is ----------------------------------------------------------------

    async def resolve(self) -> None:
        """Ask what the URL names (once it answers): a cluster node switches the command client to
        a cluster client; Sentinel is asked for the master, with one-line errors naming what is
        wrong. Raises redis errors (TopologyError for the deployment's own trouble)."""
        if self.resolved:
            return
        if self.kind == SENTINEL:
            await self._check_sentinel()
        elif not self.url.startswith("unix://") and await self._cluster_enabled():
            self.cluster_node = True
            # redis-py would report a refused slot map as "cluster mode is not enabled": ask
            # first, so an ACL without +cluster|slots is reported as what it is.
            await self.client.execute_command("CLUSTER", "SLOTS")
            cluster = self._cluster_client()
            try:
                try:
                    await cluster.initialize()
                except RedisClusterException as exc:  # e.g. "All slots are not covered"
                    raise TopologyError(
                        f"Redis Cluster at {self.where} is down: {' '.join(str(exc).split())}"
                    ) from None
                await self.check_cluster(cluster)
            except BaseException:
                await cluster.aclose()
                raise
            old, self.client, self.cluster, self.kind = self.client, cluster, cluster, CLUSTER
            self.where = f"the Redis Cluster of {self.where}"
            await old.aclose()
        self.resolved = True

    async def _cluster_enabled(self) -> bool:
        """CLUSTER INFO answers on a cluster node; a single server refuses it ("cluster support
        disabled"), and so does an ACL without +cluster|info (then: one server)."""
        assert isinstance(self.client, Redis)
        try:
            await self.client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        except ResponseError:
            return False
        return True

    def _cluster_client(self) -> RedisCluster:
        o = self.options
        parts = urllib.parse.urlsplit(self.url)
        if parts.path.strip("/") not in ("", "0"):
            raise TopologyError(
                f"{self.where} is a Redis Cluster node: a cluster has only database 0 "
                f"(use {parts.scheme}://HOST:PORT/0)"
            )
        options: dict[str, Any] = {
            "socket_timeout": o.socket_timeout,
            "socket_connect_timeout": o.connect_timeout,
            "retry": Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.05), 1),
            "client_name": o.client_name,
            "decode_responses": False,
            **o.security.client_options(self.url),
        }
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
        try:
            return RedisCluster.from_url(url, **options)
        except (RedisClusterException, ValueError) as exc:
            raise TopologyError(f"Redis Cluster at {self.where}: {exc}") from None

    async def check_cluster(self, cluster: RedisCluster) -> None:
        """TopologyError when the cluster cannot serve (no quorum, a slot without a master)."""
        try:
            info = await cluster.cluster_info()
        except RedisClusterException as exc:
            raise TopologyError(f"Redis Cluster at {self.where} cannot serve: {exc}") from None
        state = info.get("cluster_state") if isinstance(info, dict) else None
        if isinstance(state, bytes):
            state = state.decode()
        if state != "ok":
            raise TopologyError(
                f"Redis Cluster at {self.where} is down (cluster_state:{state}): no quorum of "
                "masters, or a slot that no master serves"
            )

    async def _check_sentinel(self) -> None:
        """Ask every sentinel for the master: none answering and none knowing the service are
        told apart (redis-py says "No master found" for both)."""
        assert self.sentinel_target is not None and self._sentinel is not None
        target = self.sentinel_target
        answered = 0
        errors: list[str] = []
        for sentinel in self._sentinel.sentinels:
            try:
                address = await sentinel.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.service
                )
            except (RedisConnectionError, TimeoutError, OSError) as exc:
                errors.append(" ".join(str(exc).split()) or type(exc).__name__)
                continue
            except ResponseError as exc:
                raise TopologyError(
                    f"Sentinel at {target.hosts} refused the question (check "
                    f"SWARM_SENTINEL_PASSWORD): {' '.join(str(exc).split())}"
                ) from None
            answered += 1
            if address:
                return
        if not answered:
            raise TopologyError(
                f"Sentinel unreachable: none of {target.hosts} answers"
                + (f" ({errors[0]})" if errors else "")
            )
        raise TopologyError(
            f"unknown Sentinel service name {target.service!r}: no sentinel of {target.hosts} "
            "monitors a master by that name"
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()

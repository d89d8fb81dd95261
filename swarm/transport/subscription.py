"""One live subscription to a swarm's channel: SUBSCRIBE on one server or through Sentinel,
sharded SSUBSCRIBE on the node of a Redis Cluster that owns the swarm's slot.

A subscription never heals itself: when its server dies, or the cluster moves the slot away
(Redis then sends `sunsubscribe`), it ends, and the transport subscribes again and re-reads the
log from its cursor. redis-py's ClusterPubSub would re-subscribe silently on a slot change,
hiding the moment in which messages were missed, so the shard's node is found here instead.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import RedisError

from swarm.transport.topology import CLUSTER, Deployment

MESSAGE = "message"  # a published payload (SUBSCRIBE's message, SSUBSCRIBE's smessage)
ENDED = "ended"  # the server dropped the subscription (slot moved): subscribe again


class Subscription:
    """Replies normalised to {"type": MESSAGE | ENDED | other, "data": ...}."""

    def __init__(self, client: Redis, pubsub: PubSub, sharded: bool, where: str) -> None:
        self._client = client
        self._pubsub = pubsub
        self.sharded = sharded
        self.where = where  # the server subscribed to (host:port), for logs

    @classmethod
    async def open(
        cls, deployment: Deployment, channel: str, name: str, reply_timeout: float
    ) -> Subscription:
        """Subscribed and confirmed by the server, or an exception (the caller bounds the time)."""
        if deployment.kind == CLUSTER:
            client, where = await _shard_client(deployment, channel, name)
        else:
            client, where = deployment.subscriber_client(name), deployment.where
        pubsub = client.pubsub()
        sharded = deployment.kind == CLUSTER
        subscription = cls(client, pubsub, sharded, where)
        try:
            if sharded:
                await pubsub.ssubscribe(channel)
            else:
                await pubsub.subscribe(channel)
            confirmation = "ssubscribe" if sharded else "subscribe"
            while True:
                reply = await pubsub.get_message(timeout=reply_timeout)
                if reply is None:
                    raise TimeoutError(f"no {confirmation.upper()} confirmation")
                if reply["type"] == confirmation:
                    return subscription
        except BaseException:
            await subscription.aclose()
            raise

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        reply = await self._pubsub.get_message(timeout=timeout)
        if reply is None:
            return None
        kind = reply["type"]
        if kind in ("message", "smessage"):
            return {"type": MESSAGE, "data": reply["data"]}
        if kind in ("unsubscribe", "sunsubscribe"):
            return {"type": ENDED, "data": None}
        return {"type": kind, "data": reply.get("data")}

    async def ping(self) -> None:
        await self._pubsub.ping()

    async def aclose(self) -> None:
        with suppress(RedisError, OSError, TimeoutError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        with suppress(RedisError, OSError, TimeoutError):
            await self._client.aclose()


async def _shard_client(deployment: Deployment, channel: str, name: str) -> tuple[Redis, str]:
    """A client to the master that owns `channel`'s slot, from a freshly read slot map (after a
    failover or a reshard the cached one names the old owner)."""
    cluster = deployment.cluster
    assert cluster is not None
    await cluster.nodes_manager.initialize()
    node = cluster.nodes_manager.get_node_from_slot(key_slot(channel.encode()))
    host, port = node.host, int(node.port)
    return deployment.node_subscriber_client(host, port, name), f"{host}:{port}"

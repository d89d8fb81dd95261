"""Anti-entropy acts on what was already known a round ago, against a real Redis.

Under load a peer's heartbeat is always a little ahead (its edits are in flight on the channel):
asking for those files every round would flood the swarm with full-state replies. What a peer
had one round ago and this node still lacks was lost, and is asked for.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swarm.devtools.devredis import RedisServer
from swarm.memory import MemoryDoc, vector
from swarm.node import Node, NodeOptions
from swarm.replication import ReplicationOptions, Replicator
from swarm.store import Store
from swarm.transport.redis_transport import RedisTransport

SWARM = "ae"
PATH = "MEMORY.md"


@pytest.fixture
async def replicator(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Replicator]:
    store = Store(tmp_path / "state")
    node = Node(NodeOptions(root=tmp_path / "mem", state_dir=tmp_path / "state"), store)
    transport = RedisTransport(redis_server.url, SWARM, "a")
    yield Replicator(node, transport, ReplicationOptions(swarm=SWARM, node_id="a"))
    await transport.close()
    store.close()


async def announce(peer: RedisTransport, doc: MemoryDoc) -> None:
    """`peer` heartbeats that it holds `doc`'s state."""
    sv = doc.state_vector()
    facts = {"sv": base64.b64encode(sv).decode(), "digest": vector.digest(vector.decode(sv))}
    await peer.heartbeat({"files_digest": facts["digest"], "files": {PATH: facts}}, ttl_s=60)


async def test_in_flight_edits_are_not_requested_lost_ones_are(
    replicator: Replicator, redis_server: RedisServer
) -> None:
    mine = replicator.node.doc(PATH)
    seed = mine.write("- shared\n")
    assert seed is not None
    theirs = MemoryDoc(PATH, client_id=999)
    theirs.apply(seed)
    peer = RedisTransport(redis_server.url, SWARM, "b")
    try:
        in_flight = theirs.write(theirs.content + "- from b, on its way\n")
        assert in_flight is not None
        await announce(peer, theirs)
        await replicator.anti_entropy()
        assert replicator.counters.lag > 0  # status shows the lag...
        assert replicator.counters.sync_requests == 0  # ...but nothing is requested yet

        replicator.node.apply_remote(PATH, in_flight)  # it arrives before the next round
        lost = theirs.write(theirs.content + "- from b, lost on the channel\n")
        assert lost is not None
        await announce(peer, theirs)
        await replicator.anti_entropy()
        assert replicator.counters.sync_requests == 0  # the new one may still be in flight

        await replicator.anti_entropy()  # a round later it is still missing: lost
        assert replicator.counters.sync_requests == 1
    finally:
        await peer.close()

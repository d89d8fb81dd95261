"""The replicator: one node's replication, its jobs wired together and run as one task group.

Jobs: publishing the outbox (outbox.py), the cursor with gap detection (cursor.py), catch-up
(catchup.py), heartbeats with anti-entropy (heartbeats.py), compaction (compaction.py). This
module applies what arrives live and answers peers' sync requests. It sees the node only through
`swarm.replica.Replica` and the swarm only through `swarm.transport.base.SwarmTransport`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from swarm.edge import INAPPLICABLE
from swarm.memory import vector
from swarm.replica import Replica
from swarm.replication.catchup import CatchUp
from swarm.replication.compaction import Compaction
from swarm.replication.cursor import LogCursor
from swarm.replication.heartbeats import Heartbeats
from swarm.replication.loops import run_on_wake
from swarm.replication.options import ReplicationCounters, ReplicationOptions
from swarm.replication.outbox import Publisher
from swarm.transport.base import Message, SwarmTransport, is_gap_marker
from swarm.wire import Envelope, Kind

log = logging.getLogger("swarm.replication")

_INBOUND_BATCH = 512


class Replicator:
    def __init__(
        self, node: Replica, transport: SwarmTransport, options: ReplicationOptions
    ) -> None:
        self.node = node
        self.transport = transport
        self.options = options
        self.counters = ReplicationCounters()
        self._outbox_wake = asyncio.Event()
        self._catchup_wake = asyncio.Event()
        self.cursor = LogCursor(
            node.meta("cursor") or "0-0",
            save=lambda position: node.set_meta("cursor", position),
            backlog=lambda: transport.backlog,
            on_gap=self._catchup_wake.set,
            published=node.meta("published") or "0-0",
            save_published=lambda entry: node.set_meta("published", entry),
        )
        self.compaction = Compaction(
            node, transport, options, self.counters, self.cursor, lambda: self.caught_up
        )
        self.publisher = Publisher(
            node, transport, options, self.counters, self.cursor, self.compaction.wake.set
        )
        self.catchup = CatchUp(
            node,
            transport,
            options,
            self.counters,
            self.cursor,
            self.publisher,
            self.compaction.snapshotted,
        )
        self.heartbeats = Heartbeats(
            node,
            transport,
            options,
            self.counters,
            self.cursor,
            self.publisher,
            caught_up=lambda: self.caught_up,
            read_log=self._catchup_wake.set,
        )
        node.on_local_update(self._outbox_wake.set)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        return self.catchup.done.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then flush the outbox one last time (bounded by the caller)."""
        self._outbox_wake.set()
        self._catchup_wake.set()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._inbound(stop))
                suspect = self.cursor.suspect
                group.create_task(
                    run_on_wake(stop, self._outbox_wake, self.flush_outbox, "outbox flush", suspect)
                )
                group.create_task(
                    run_on_wake(stop, self._catchup_wake, self.catch_up, "catch-up", suspect)
                )
                group.create_task(self.heartbeats.loop(stop))
                group.create_task(self.compaction.loop(stop))
                await stop.wait()
                raise _Stop
        except* _Stop:
            pass

    async def wait_caught_up(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.catchup.done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def flush(self) -> int:
        """Publish what the outbox holds; returns how many entries are left."""
        await self.flush_outbox()
        return self.node.outbox_depth()

    def wake_outbox(self) -> None:
        """Try the outbox again now (not on the next local change)."""
        self._outbox_wake.set()

    # -- the jobs, for the daemon, the bench and the tests ------------------------------------

    async def flush_outbox(self) -> None:
        await self.publisher.flush_outbox()

    async def catch_up(self) -> None:
        await self.catchup.run()

    async def compact_once(self) -> bool:
        return await self.compaction.compact_once()

    async def anti_entropy(self) -> None:
        await self.heartbeats.anti_entropy()

    def presence_info(self) -> dict[str, Any]:
        return self.heartbeats.info()

    # -- inbound -------------------------------------------------------------------------------

    async def _inbound(self, stop: asyncio.Event) -> None:
        async for message in self.transport.messages():
            if stop.is_set():
                return
            # One turn of the loop lets the reader parse what else has already arrived, so a
            # busy channel is applied in bursts (one commit each).
            await asyncio.sleep(0)
            burst = [message, *self.transport.ready_messages(_INBOUND_BATCH)]
            # One commit for a burst. Each update is applied on its own, through the document's
            # causal buffer: live messages can arrive with a gap (see merge_runs).
            with self.node.batch():
                for item in burst:
                    if is_gap_marker(item):
                        self._catchup_wake.set()
                    else:
                        self._receive(item)

    def _receive(self, message: Message) -> None:
        env = message.envelope
        self.counters.received += 1
        self.counters.received_bytes += len(env.payload)
        if env.kind in (Kind.UPDATE, Kind.STATE) and env.sender != self.options.node_id:
            if self.node.protection.admits(env):
                self.node.apply_remote(env.path, env.payload, env.sender)
        elif env.kind is Kind.SYNC_REQUEST and env.path and env.sender != self.options.node_id:
            self._answer_sync_request(env)
        if message.stream_id is not None and message.prev_id is not None:
            self.cursor.link(message.prev_id, message.stream_id)

    def _answer_sync_request(self, env: Envelope) -> None:
        """A peer says it lacks something in `env.path`: publish what it lacks, if we have it."""
        doc = self.node.docs.get(env.path)
        if doc is None:
            return
        try:
            theirs = vector.decode(env.payload)
        except vector.VectorError:
            self.node.reject(env.path, INAPPLICABLE, "a sync request with a malformed vector")
            return
        if vector.missing(theirs, doc.state_vector_dict()) == 0 and not doc.has_pending:
            return
        reply = self.publisher.envelope(env.path, Kind.STATE, doc.diff_since(env.payload))
        asyncio.get_running_loop().create_task(self.publisher.publish_quietly(reply))


class _Stop(Exception):
    """Raised inside the task group to cancel its siblings once `stop` is set."""

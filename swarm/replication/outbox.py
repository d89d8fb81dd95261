"""Publishing: the node's outbox to the swarm log, and the few messages replication itself sends
(sync requests, replies to them, a re-seed)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from swarm.memory.batching import coalesce
from swarm.replica import Replica
from swarm.replication.cursor import LogCursor
from swarm.replication.options import ReplicationCounters, ReplicationOptions
from swarm.transport.base import SwarmLog, TransportError
from swarm.wire import MAX_PAYLOAD, Envelope, Kind, WireError

log = logging.getLogger("swarm.replication")

_OUTBOX_BATCH = 256


class Publisher:
    def __init__(
        self,
        replica: Replica,
        transport: SwarmLog,
        options: ReplicationOptions,
        counters: ReplicationCounters,
        cursor: LogCursor,
        compaction_due: Callable[[], None],
    ) -> None:
        self.replica = replica
        self.transport = transport
        self.options = options
        self.counters = counters
        self.cursor = cursor
        self._compaction_due = compaction_due

    def envelope(self, path: str, kind: Kind, payload: bytes) -> Envelope:
        return Envelope(self.options.swarm, path, self.options.node_id, kind, payload)

    async def flush_outbox(self) -> None:
        """Publish the outbox oldest first, a batch per round trip, acking each batch in one
        commit; the updates a batch holds for one path go out merged, as one message. Entries
        are dropped only once the log has them."""
        replica = self.replica
        while True:
            entries = replica.outbox(limit=_OUTBOX_BATCH)
            if not entries:
                return
            sendable = []
            for path, update in coalesce(((e.path, e.update) for e in entries), MAX_PAYLOAD):
                if len(update) > MAX_PAYLOAD:  # can never be sent: say so, do not block
                    log.error("cannot publish an update of %s: %d bytes", path, len(update))
                    continue
                env = self.replica.protection.outgoing(self.envelope(path, Kind.UPDATE, update))
                if env is not None:  # None: a protected file's fix-up on a node not its writer
                    sendable.append(env)
            try:
                receipts = await self.transport.publish_many(sendable) if sendable else []
            except TransportError:
                self.counters.publish_errors += 1
                raise
            with replica.batch():
                for prev, stream_id in receipts:
                    self.cursor.link(prev, stream_id)
                    self.cursor.note_published(prev, stream_id)
                replica.ack(entry.id for entry in entries)
            if (self.transport.log_length or 0) >= self.options.compact_after_entries:
                self._compaction_due()
            self.counters.published += len(sendable)
            self.counters.published_bytes += sum(len(env.payload) for env in sendable)

    async def publish(self, env: Envelope) -> None:
        self.replica.commit()  # nothing leaves the node before it is stored (group commit)
        sendable = self.replica.protection.outgoing(env)  # signed, or None: not ours to send
        if sendable is None:
            return
        env = sendable
        prev, stream_id = await self.transport.publish_chained(env)
        self.cursor.link(prev, stream_id)
        self.cursor.note_published(prev, stream_id)
        self.counters.published += 1
        self.counters.published_bytes += len(env.payload)

    async def publish_quietly(self, env: Envelope) -> None:
        try:
            await self.publish(env)
        except (TransportError, WireError) as exc:
            log.debug("could not publish %s for %s: %s", env.kind.name, env.path, exc)

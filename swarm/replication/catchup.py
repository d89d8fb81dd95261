"""Catch-up: loading what this node missed from snapshots and the log tail (on join, after every
gap), and re-seeding a log that lost the swarm's data from this node's own state."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from swarm.replica import Replica
from swarm.replication.cursor import LogCursor
from swarm.replication.options import ReplicationCounters, ReplicationOptions
from swarm.replication.outbox import Publisher
from swarm.transport.base import Message, SwarmLog, parse_stream_id
from swarm.wire import Kind

log = logging.getLogger("swarm.replication")

_READ_BATCH = 10_000
_RENDER_HOLD_S = 3.0  # longest a catch-up keeps files from being rendered in one go


class CatchUp:
    def __init__(
        self,
        replica: Replica,
        transport: SwarmLog,
        options: ReplicationOptions,
        counters: ReplicationCounters,
        cursor: LogCursor,
        publisher: Publisher,
        snapshotted: dict[str, str],
    ) -> None:
        self.replica = replica
        self.transport = transport
        self.options = options
        self.counters = counters
        self.cursor = cursor
        self.publisher = publisher
        self._snapshotted = snapshotted  # compaction's: what the snapshots in the log hold
        self.done = asyncio.Event()  # set once the first catch-up finished

    async def run(self) -> None:
        """Load what this node missed: snapshots if the log no longer reaches back to the cursor,
        then the log tail; re-seed the log from our own state if it lost the swarm's data.

        Redis loses data two ways. Wiped (or restarted without persistence): the epoch is gone.
        Failed over to a replica that lagged (replication is asynchronous): the epoch survives,
        but entries Redis had acknowledged are gone, the newest one this node knows (its cursor,
        or what it published last) among them; new entries may already follow the shorter log.
        Either way this node reads the whole swarm again and publishes the full state of every
        file it holds, so whatever the lost entries carried is in the log again: edits of this
        node and edits of others that reached it. Peers do the same; merging is idempotent."""
        started = time.perf_counter()
        replica, cursor = self.replica, self.cursor
        known_epoch = replica.meta("epoch")
        # Always offer a fresh value: offering the known one would let the first node back after
        # a wipe restore the old epoch, and no node would ever notice the wipe and re-seed.
        epoch = await self.transport.epoch(uuid.uuid4().hex)
        reseed = known_epoch is not None and epoch != known_epoch
        if reseed:
            log.warning("Redis lost the swarm's data; re-seeding it from this node's state")
        else:
            reseed = await self._lost_entries()
        if reseed:
            cursor.reset()
        info = await self.transport.log_info()
        first = info.get("first_id")
        after = cursor.position
        if cursor.position == "0-0" or (first is not None and cursor.behind(first)):
            after = await self._load_snapshots(first, after)
        try:
            while True:
                messages = await self.transport.read_log(after, count=_READ_BATCH)
                if not messages:
                    # only undecodable entries were left: nothing can ever apply them
                    cursor.advance(self.transport.last_scanned_id, save=False)
                    break
                after = messages[-1].stream_id or after
                if len(messages) >= _READ_BATCH and not replica.renders_held:
                    # More pages follow: rewriting every file after each page costs more than
                    # merging it, so files are written once at the end (or every few seconds).
                    replica.hold_renders(_RENDER_HOLD_S)
                self._merge_log_page(messages, after)
        finally:
            replica.release_renders()
        cursor.settle()
        if reseed or known_epoch is None:
            replica.set_meta("epoch", epoch)
        if reseed:
            await self._reseed()
        self.counters.catchups += 1
        self.counters.catchup_seconds.append(time.perf_counter() - started)
        self.done.set()

    async def _lost_entries(self) -> bool:
        """Whether the log lost entries it had acknowledged (a failover to a lagging replica)."""
        cursor = self.cursor
        wanted = sorted({cursor.position, cursor.published} | cursor.verify, key=parse_stream_id)
        lost = None
        for entry in wanted:
            if not await self.transport.holds_entry(entry):
                lost = entry
        cursor.verify.difference_update(wanted)
        if lost is None:
            return False
        log.warning(
            "Redis lost acknowledged log entries (%s among them; a failover to a replica that "
            "lagged?): re-reading the swarm and re-sending this node's state",
            lost,
        )
        self.counters.rollbacks += 1
        return True

    async def _load_snapshots(self, first: str | None, after: str) -> str:
        """Apply every snapshot; the log id to read on from."""
        snapshots = await self.transport.snapshots()
        for path, env in self.transport.snapshot_envelopes.items():
            if not self.replica.protection.admits(env):
                del snapshots[path]  # a protected file's, not signed by a writer
        with self.replica.batch():
            for path, (_covered, state) in snapshots.items():
                self.replica.apply_remote(path, state)
        if not snapshots:
            return after
        oldest = min((covered for covered, _ in snapshots.values()), key=parse_stream_id)
        position = self.cursor.position
        if self.cursor.behind(oldest) or first is None or self.cursor.behind(first):
            return oldest
        return position  # every snapshot covers less than the cursor, and the log reaches it

    def _merge_log_page(self, messages: list[Message], last: str) -> None:
        """One commit per page; per path, the page's updates in log order with each writer's
        adjacent ones merged (`merge_runs`)."""
        by_path: dict[str, list[bytes]] = {}
        senders: dict[str, set[str]] = {}
        for message in messages:
            env = message.envelope
            if (
                env.sender != self.options.node_id
                and env.kind in (Kind.UPDATE, Kind.STATE)
                and self.replica.protection.admits(env)
            ):
                by_path.setdefault(env.path, []).append(env.payload)
                senders.setdefault(env.path, set()).add(env.sender)
        with self.replica.batch():
            for path, updates in by_path.items():
                self.replica.apply_remote_many(path, updates, senders[path])
            self.cursor.advance(last)

    async def _reseed(self) -> None:
        """Publish every document's full state so the log again holds the whole history."""
        for path, doc in list(self.replica.docs.items()):
            await self.publisher.publish(
                self.publisher.envelope(path, Kind.STATE, doc.encode_state())
            )
        self._snapshotted.clear()
        self.counters.reseeds += 1

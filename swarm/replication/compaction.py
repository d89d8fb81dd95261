"""Compaction: under the lease, a snapshot of every changed file covering the cursor, then the log
trimmed behind the snapshots, so a node back from a long absence loads snapshots and a short
tail, not the whole log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from swarm.memory import vector
from swarm.replica import Replica
from swarm.replication.cursor import LogCursor
from swarm.replication.options import ReplicationCounters, ReplicationOptions
from swarm.transport.base import SwarmTransport, TransportError

log = logging.getLogger("swarm.replication")


class Compaction:
    def __init__(
        self,
        replica: Replica,
        transport: SwarmTransport,
        options: ReplicationOptions,
        counters: ReplicationCounters,
        cursor: LogCursor,
        caught_up: Callable[[], bool],
    ) -> None:
        self.replica = replica
        self.transport = transport
        self.options = options
        self.counters = counters
        self.cursor = cursor
        self._caught_up = caught_up
        self.snapshotted: dict[str, str] = {}  # path -> state vector digest in the snapshots
        self.wake = asyncio.Event()  # compact now: the log grew long

    async def loop(self, stop: asyncio.Event) -> None:
        """Compact every `compaction_interval`, or sooner when the log grows long."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.options.compaction_interval)
            self.wake.clear()
            if stop.is_set() or not self._caught_up():
                continue
            try:
                await self.compact_once()
            except TransportError as exc:
                log.debug("compaction skipped: %s", exc)
            self.replica.compact()

    async def compact_once(self) -> bool:
        """Safe if two nodes briefly both do it: snapshots never move backwards and each holds
        everything up to its covered id."""
        transport = self.transport
        if not await transport.acquire_lease(self.options.lease_ttl_ms):
            return False
        covered = self.cursor.position
        if covered == "0-0":
            return False
        for path, doc in list(self.replica.docs.items()):
            digest = vector.digest(doc.state_vector_dict())
            if self.snapshotted.get(path) == digest:
                continue
            if await transport.put_snapshot(path, covered, doc.encode_state()):
                self.snapshotted[path] = digest
                self.counters.snapshots_written += 1
        await transport.trim_log()
        forgotten = await transport.forget_nodes(int(self.options.forget_nodes_after * 1000))
        if forgotten:
            log.info(
                "forgot nodes silent for %.0f s: %s", self.options.forget_nodes_after, forgotten
            )
        return True

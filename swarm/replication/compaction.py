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
from swarm.wire import Envelope, Kind

log = logging.getLogger("swarm.replication")

_LEASE_YIELD_ROUNDS = 3  # compaction rounds a non-writer leaves the lease to a protected file's


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
        # Protected files this node may not snapshot: path -> digest when last seen changed,
        # and compaction rounds left before it takes the lease again (see compact_once).
        self._protected_seen: dict[str, str] = {}
        self._lease_yield = 0

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
        if self._lease_yield > 0:  # leaving the lease to a writer for a while (see below)
            self._lease_yield -= 1
            return False
        if not await transport.acquire_lease(self.options.lease_ttl_ms):
            return False
        covered = self.cursor.position
        if covered == "0-0":
            return False
        protected_changed = False
        for path, doc in list(self.replica.docs.items()):
            digest = vector.digest(doc.state_vector_dict())
            if self.snapshotted.get(path) == digest:
                continue
            self.replica.commit()  # a snapshot holds only what is stored (group commit)
            state = doc.encode_state()
            env = self.replica.protection.outgoing(
                Envelope(self.options.swarm, path, self.options.node_id, Kind.STATE, state)
            )
            if env is None:  # a protected file: only its writers vouch for a snapshot of it
                protected_changed |= self._protected_seen.get(path) != digest
                self._protected_seen[path] = digest
                continue
            if await transport.put_snapshot(path, covered, state, env.signature):
                self.snapshotted[path] = digest
                self.counters.snapshots_written += 1
        await transport.trim_log()
        forgotten = await transport.forget_nodes(int(self.options.forget_nodes_after * 1000))
        if forgotten:
            log.info(
                "forgot nodes silent for %.0f s: %s", self.options.forget_nodes_after, forgotten
            )
        if protected_changed:
            # The log is trimmed only behind snapshots, and only a writer may write a protected
            # file's: a non-writer that kept the lease would let the log grow for good.
            await transport.release_lease()
            self._lease_yield = _LEASE_YIELD_ROUNDS
        return True

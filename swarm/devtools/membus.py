"""An in-process swarm for tests: every node's transport on one hub, with injectable faults.

The hub keeps what Redis keeps for a swarm (the log, snapshots, the compaction lease, the epoch,
the heartbeats) behind the same contract (`swarm.transport.base.SwarmTransport`), so a node on
it runs the production replication path: chained log ids, gap detection, catch-up, anti-entropy,
compaction. Faults apply to live deliveries only, as pub/sub loses messages and the log does not.
They are drawn from one seeded `random.Random`, so a failing property test replays exactly. Held
deliveries model delay and reordering: they stay out of the queues until `flush()`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarm.transport.base import (
    Message,
    NodeRecord,
    TransportError,
    parse_stream_id,
    queued_messages,
    ready_messages,
)
from swarm.wire import Envelope, Kind

if TYPE_CHECKING:
    from swarm.problems import Problems

DeliveryFilter = Callable[[Envelope, str], bool]


@dataclass
class BusStats:
    published: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    held: int = 0


@dataclass
class _SwarmState:
    """What Redis would hold for the swarm."""

    log: list[tuple[str, Envelope]] = field(default_factory=list)
    last_seq: int = 0
    snapshots: dict[str, tuple[str, Envelope]] = field(default_factory=dict)
    lease: tuple[str, float] | None = None  # holder, monotonic expiry
    epoch: str | None = None
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class MemoryBus:
    """The hub. Probabilities apply per (envelope, receiver) delivery."""

    def __init__(
        self,
        *,
        swarm: str = "t",
        seed: int | None = None,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        hold_rate: float = 0.0,
    ) -> None:
        self.swarm = swarm  # the swarm's name, for the envelopes the hub makes (snapshots)
        self.rng = random.Random(seed)
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.hold_rate = hold_rate
        # Deterministic hook: return False to drop the delivery of `envelope` to `receiver`.
        self.accept: DeliveryFilter | None = None
        self.stats = BusStats()
        self.paused: set[str] = set()
        self.state = _SwarmState()
        self._transports: dict[str, MemoryTransport] = {}
        self._held: list[tuple[str, Message]] = []

    def connect(self, node: str) -> MemoryTransport:
        if not node:
            raise ValueError("node id must not be empty")
        if node in self._transports:
            raise ValueError(f"node {node!r} is already connected to this bus")
        transport = MemoryTransport(self, node)
        self._transports[node] = transport
        return transport

    def _disconnect(self, node: str) -> None:
        self._transports.pop(node, None)

    @property
    def held(self) -> int:
        return len(self._held)

    def pause(self, node: str) -> None:
        """Hold every delivery to `node` (a partition) until `resume` + `flush`."""
        self.paused.add(node)

    def resume(self, node: str) -> None:
        self.paused.discard(node)

    def flush(self, *, shuffle: bool = True) -> int:
        """Deliver held messages to receivers that are not paused, in random order if `shuffle`."""
        ready = [item for item in self._held if item[0] not in self.paused]
        self._held = [item for item in self._held if item[0] in self.paused]
        if shuffle:
            self.rng.shuffle(ready)
        for receiver, message in ready:
            self._deliver(receiver, message)
        return len(ready)

    def _append(self, env: Envelope) -> Message:
        state = self.state
        prev = state.log[-1][0] if state.log else "0-0"
        state.last_seq += 1
        stream_id = f"{state.last_seq}-0"
        state.log.append((stream_id, env))
        return Message(env, stream_id, prev)

    def _route(self, publisher: str, env: Envelope) -> tuple[str, str]:
        self.stats.published += 1
        message = self._append(env)
        for receiver in list(self._transports):
            if receiver == publisher:
                continue
            if self.accept is not None and not self.accept(env, receiver):
                self.stats.dropped += 1
                continue
            if self.rng.random() < self.drop_rate:
                self.stats.dropped += 1
                continue
            copies = 2 if self.rng.random() < self.duplicate_rate else 1
            self.stats.duplicated += copies - 1
            for _ in range(copies):
                if receiver in self.paused or self.rng.random() < self.hold_rate:
                    self.stats.held += 1
                    self._held.append((receiver, message))
                else:
                    self._deliver(receiver, message)
        assert message.prev_id is not None and message.stream_id is not None
        return message.prev_id, message.stream_id

    def _deliver(self, receiver: str, message: Message) -> None:
        transport = self._transports.get(receiver)
        if transport is not None:
            self.stats.delivered += 1
            transport._queue.put_nowait(message)


class MemoryTransport:
    """One node's end of a MemoryBus; set `offline` to make it fail like a dead Redis."""

    def __init__(self, bus: MemoryBus, node: str) -> None:
        self.bus = bus
        self.node = node
        self.offline = False
        self.log_length: int | None = None
        self.last_scanned_id = "0-0"
        self.snapshot_envelopes: dict[str, Envelope] = {}
        self.problems: Problems | None = None
        self.unreadable_nodes: dict[str, tuple[str, int]] = {}
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._closed = False

    def _check(self, operation: str) -> None:
        if self._closed:
            raise TransportError(f"{operation} failed: transport of {self.node!r} is closed")
        if self.offline:
            raise TransportError(f"{operation} failed: transport of {self.node!r} is offline")

    # -- live messages -------------------------------------------------------------------------

    async def publish(self, env: Envelope) -> str:
        return (await self.publish_chained(env))[1]

    async def publish_chained(self, env: Envelope) -> tuple[str, str]:
        self._check("publish")
        receipt = self.bus._route(self.node, env)
        self.log_length = len(self.bus.state.log)
        return receipt

    async def publish_many(self, envs: list[Envelope]) -> list[tuple[str, str]]:
        self._check("publish")
        return [await self.publish_chained(env) for env in envs]

    async def messages(self) -> AsyncIterator[Message]:
        async for message in queued_messages(self._queue):
            yield message

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def ready_messages(self, limit: int) -> list[Message]:
        return ready_messages(self._queue, limit)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.bus._disconnect(self.node)
            self._queue.put_nowait(None)

    # -- the log -------------------------------------------------------------------------------

    async def read_log(self, after: str = "0-0", count: int = 10_000) -> list[Message]:
        self._check("read_log")
        start = parse_stream_id(after)
        found: list[Message] = []
        for stream_id, env in self.bus.state.log:
            if parse_stream_id(stream_id) > start:
                found.append(Message(env, stream_id))
                if len(found) >= count:
                    break
        self.last_scanned_id = (found[-1].stream_id or after) if found else after
        return found

    async def log_info(self) -> dict[str, Any]:
        self._check("log_info")
        state = self.bus.state
        if not state.last_seq:
            return {}
        return {
            "length": len(state.log),
            "first_id": state.log[0][0] if state.log else None,
            "last_id": state.log[-1][0] if state.log else None,
            "last_generated_id": f"{state.last_seq}-0",
        }

    async def holds_entry(self, entry_id: str) -> bool:
        self._check("holds_entry")
        wanted = parse_stream_id(entry_id)
        if wanted == (0, 0):
            return True
        log = self.bus.state.log
        if wanted > (self.bus.state.last_seq, 0):
            return False
        if not log or parse_stream_id(log[0][0]) > wanted:
            return True  # trimmed behind the snapshots
        return any(stream_id == entry_id for stream_id, _ in log)

    async def epoch(self, candidate: str) -> str:
        self._check("epoch")
        if self.bus.state.epoch is None:
            self.bus.state.epoch = candidate
        return self.bus.state.epoch

    async def snapshots(self) -> dict[str, tuple[str, bytes]]:
        self._check("snapshots")
        stored = self.bus.state.snapshots
        self.snapshot_envelopes = {path: env for path, (_covered, env) in stored.items()}
        return {path: (covered, env.payload) for path, (covered, env) in stored.items()}

    async def put_snapshot(
        self, path: str, covered_id: str, state: bytes, signature: bytes = b""
    ) -> bool:
        self._check("put_snapshot")
        covered = parse_stream_id(covered_id)
        swarm = self.bus.state
        lease = swarm.lease
        if lease is None or lease[0] != self.node or lease[1] < time.monotonic():
            return False
        if covered > (swarm.last_seq, 0):
            return False
        old = swarm.snapshots.get(path)
        if old is not None and covered < parse_stream_id(old[0]):
            return False
        env = Envelope(self.bus.swarm, path, self.node, Kind.STATE, state, signature=signature)
        swarm.snapshots[path] = (covered_id, env)
        return True

    async def acquire_lease(self, ttl_ms: int) -> bool:
        if ttl_ms <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_ms} ms")
        self._check("acquire_lease")
        swarm, now = self.bus.state, time.monotonic()
        if swarm.lease is not None and swarm.lease[0] != self.node and swarm.lease[1] >= now:
            return False
        swarm.lease = (self.node, now + ttl_ms / 1000)
        return True

    async def release_lease(self) -> bool:
        self._check("release_lease")
        swarm = self.bus.state
        if swarm.lease is None or swarm.lease[0] != self.node:
            return False
        swarm.lease = None
        return True

    async def trim_log(self) -> int:
        """Drop the entries before the oldest one a snapshot does not hold (sync requests carry
        no document data and never hold the cut back)."""
        self._check("trim_log")
        swarm = self.bus.state
        covered = {path: parse_stream_id(cid) for path, (cid, _) in swarm.snapshots.items()}
        cut = len(swarm.log)
        for index, (stream_id, env) in enumerate(swarm.log):
            snapshot = covered.get(env.path)
            held = snapshot is not None and parse_stream_id(stream_id) <= snapshot
            if env.kind is not Kind.SYNC_REQUEST and not held:
                cut = index
                break
        del swarm.log[:cut]
        return cut

    # -- presence ------------------------------------------------------------------------------

    async def heartbeat(self, info: dict[str, Any], ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"heartbeat ttl must be positive, got {ttl_s} s")
        self._check("heartbeat")
        files = info.get("files")
        summary = {key: value for key, value in info.items() if key != "files"}
        swarm = self.bus.state
        swarm.nodes[self.node] = NodeRecord(self.node, _now_ms(), int(ttl_s * 1000), summary)
        if isinstance(files, dict):
            swarm.files[self.node] = files

    async def presence(self) -> dict[str, dict[str, Any]]:
        self._check("presence")
        now = _now_ms()
        return {n: r.info for n, r in self.bus.state.nodes.items() if r.online(now)}

    async def files_of(self, nodes: list[str]) -> dict[str, dict[str, Any]]:
        self._check("files_of")
        files = self.bus.state.files
        return {node: files[node] for node in nodes if node in files}

    async def forget_nodes(self, silent_for_ms: int) -> list[str]:
        self._check("forget_nodes")
        swarm, now = self.bus.state, _now_ms()
        gone = [n for n, r in swarm.nodes.items() if now - r.seen_ms > silent_for_ms]
        for node in gone:
            swarm.nodes.pop(node, None)
            swarm.files.pop(node, None)
        return gone

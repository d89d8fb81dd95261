"""An in-process bus for tests: every node's transport on one hub, with injectable faults.

Faults are drawn from one seeded `random.Random`, so a failing property test replays exactly.
Held deliveries model delay and reordering: they stay out of the queues until `flush()`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from swarm.transport.base import Message, TransportError
from swarm.wire import Envelope

DeliveryFilter = Callable[[Envelope, str], bool]


@dataclass
class BusStats:
    published: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    held: int = 0


class MemoryBus:
    """The hub. Probabilities apply per (envelope, receiver) delivery."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        hold_rate: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.hold_rate = hold_rate
        # Deterministic hook: return False to drop the delivery of `envelope` to `receiver`.
        self.accept: DeliveryFilter | None = None
        self.stats = BusStats()
        self.paused: set[str] = set()
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

    def _route(self, publisher: str, env: Envelope) -> None:
        self.stats.published += 1
        message = Message(env, stream_id=None)
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

    def _deliver(self, receiver: str, message: Message) -> None:
        transport = self._transports.get(receiver)
        if transport is not None:
            self.stats.delivered += 1
            transport._queue.put_nowait(message)


class MemoryTransport:
    """One node's end of a MemoryBus; set `offline` to make publish fail like a dead Redis."""

    def __init__(self, bus: MemoryBus, node: str) -> None:
        self.bus = bus
        self.node = node
        self.offline = False
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._closed = False

    async def publish(self, env: Envelope) -> None:
        if self._closed:
            raise TransportError(f"transport of {self.node!r} is closed")
        if self.offline:
            raise TransportError(f"transport of {self.node!r} is offline")
        self.bus._route(self.node, env)

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            yield message

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.bus._disconnect(self.node)
            self._queue.put_nowait(None)

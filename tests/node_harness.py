"""Run nodes in-process on an in-memory bus: the file bridge, memory model and store for real,
with the transport swapped for `MemoryBus` (Redis has its own tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from daemon_harness import wait_until_async

from swarm.devtools.membus import MemoryBus, MemoryTransport
from swarm.node import Node, NodeOptions
from swarm.replication import ReplicationOptions, Replicator
from swarm.store import Store


@dataclass
class Running:
    name: str
    root: Path
    node: Node
    replicator: Replicator
    transport: MemoryTransport

    def read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text(encoding="utf-8")
        except FileNotFoundError:  # not there, or removed while we looked
            return None


@contextlib.asynccontextmanager
async def running_node(
    bus: MemoryBus, name: str, root: Path, state_dir: Path, *, max_bytes: int = 4 * 1024 * 1024
) -> AsyncIterator[Running]:
    root.mkdir(parents=True, exist_ok=True)
    store = Store(state_dir)
    node = Node(NodeOptions(root=root, state_dir=state_dir, max_bytes=max_bytes), store)
    node.load()
    transport = bus.connect(name)
    replicator = Replicator(node, transport, ReplicationOptions(swarm=bus.swarm, node_id=name))
    stop = asyncio.Event()
    watching = asyncio.Event()
    tasks = [
        asyncio.create_task(replicator.run(stop)),
        asyncio.create_task(node.watch_loop(stop, watching)),
        asyncio.create_task(node.render_loop(stop)),
        asyncio.create_task(node.maintenance_loop(stop)),
    ]
    await watching.wait()
    await node.reconcile()
    try:
        yield Running(name, root, node, replicator, transport)
    finally:
        stop.set()
        await transport.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.close()
        store.close()


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, **options: int) -> AsyncIterator[tuple[Running, Running]]:
    """Nodes a and b on one bus, their folders and state folders under `tmp_path`."""
    async with two_nodes_on(MemoryBus(), tmp_path, **options) as pair:
        yield pair


@contextlib.asynccontextmanager
async def two_nodes_on(
    bus: MemoryBus, tmp_path: Path, **options: int
) -> AsyncIterator[tuple[Running, Running]]:
    async with (
        running_node(bus, "a", tmp_path / "a", tmp_path / "sa", **options) as a,
        running_node(bus, "b", tmp_path / "b", tmp_path / "sb", **options) as b,
    ):
        yield a, b


async def eventually(
    condition: Callable[[], object], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `condition` until it is truthy; fail with `what` after `timeout` seconds."""
    await wait_until_async(condition, what, timeout)


def write_atomically(path: Path, text: str) -> None:
    """How many agents save: a temp file beside the target, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.agent-tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)

"""Running a real node (open_runtime + running) inside a benchmark process, and timing arrivals.

An edit carries a marker `<worker.seq>`; the receiving node's `apply_remote_many` is wrapped so the
moment an update holding a marker has been merged is recorded. Timestamps are CLOCK_MONOTONIC
nanoseconds, which every process on the machine shares, so sender and receiver times compare.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from swarm.config import DaemonSettings
from swarm.daemon import running
from swarm.node import Node
from swarm.runtime import Runtime, open_runtime

MARKER = re.compile(rb"<(\d+)\.(\d+)>")
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class NodeSpec:
    redis_url: str
    swarm: str
    node_id: str
    root: str
    heartbeat_interval: float = 1.0


def settings_for(spec: NodeSpec) -> DaemonSettings:
    Path(spec.root).mkdir(parents=True, exist_ok=True)
    return DaemonSettings(
        swarm=spec.swarm,
        redis_url=spec.redis_url,
        dir=Path(spec.root),
        node=spec.node_id,
        http="0",
        heartbeat_interval=spec.heartbeat_interval,
    )


@asynccontextmanager
async def running_node(spec: NodeSpec) -> AsyncIterator[Runtime]:
    """A node that is caught up and reconciled; stopped gracefully (outbox flushed) on exit."""
    runtime = open_runtime(settings_for(spec))
    async with running(runtime, ready_timeout=READY_TIMEOUT_S):
        yield runtime


def marker(worker: int, seq: int) -> str:
    return f"<{worker}.{seq}>"


def edit_line(worker: int, seq: int) -> str:
    return f"- {marker(worker, seq)} the user prefers short answers and metric units\n"


def local_edit(node: Node, path: str, line: str) -> bool:
    """What an agent write becomes inside the node (without the file read): document change,
    then update + outbox entry in one commit, then replication is woken."""
    doc = node.doc(path)
    update = doc.write(doc.content + line)
    if update is None:
        return False
    node._persist_local(path, [update])  # the node has no public edit API yet
    return True


class Arrivals:
    """When each marked edit was first merged into this node's documents."""

    def __init__(self) -> None:
        self.at: dict[tuple[int, int], int] = {}

    def hook(self, node: Node) -> None:
        original = node.apply_remote_many
        seen = self.at

        def apply_remote_many(path: str, updates: list[bytes], senders: Iterable[str] = ()) -> int:
            applied = original(path, updates, senders)
            now = time.monotonic_ns()
            for update in updates:
                for found in MARKER.finditer(update):
                    seen.setdefault((int(found[1]), int(found[2])), now)
            return applied

        node.apply_remote_many = apply_remote_many  # type: ignore[method-assign]


def content_digest(node: Node) -> str:
    """One hash over every document's content: equal on two nodes means converged."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(node.docs):
        h.update(path.encode() + b"\0" + node.docs[path].content.encode() + b"\0")
    return h.hexdigest()


async def until(condition: object, deadline_s: float, poll_s: float = 0.001) -> bool:
    """Poll `condition()` until true or the deadline passes; True if it became true."""
    assert callable(condition)
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(poll_s)
    return True

"""A node process that makes marked edits through the node API and waits for its peers' edits.

Shared by the API-path latency scenario (paced edits) and the throughput scenario (edits as fast
as the node takes them). Each worker is one real node (store, replication, Redis) in its own
process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.nodes import (
    Arrivals,
    NodeSpec,
    content_digest,
    edit_line,
    local_edit,
    running_node,
    until,
)
from bench.procs import GO, READY, send_result
from swarm.node import Node
from swarm.store import Store


@dataclass(frozen=True)
class EditPlan:
    spec: NodeSpec
    worker: int
    edits: int
    files: int
    interval_s: float  # pause after each edit; 0 = only yield to the event loop
    expect: int  # marked edits from other workers this node must receive
    deadline_s: float


async def _quiet(node: Node, store: Store, quiet_s: float = 0.5, deadline_s: float = 30.0) -> None:
    """Wait until nothing was applied or left in the outbox for `quiet_s`."""
    end = time.monotonic() + deadline_s
    seen, since = node.counters.remote_applied, time.monotonic()
    while time.monotonic() < end:
        await asyncio.sleep(0.05)
        if node.counters.remote_applied != seen or store.outbox_depth():
            seen, since = node.counters.remote_applied, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def edit_worker(plan: EditPlan, conn: Connection) -> None:
    send_result(conn, _work(plan, conn))


async def _work(plan: EditPlan, conn: Connection) -> dict[str, Any]:
    async with running_node(plan.spec) as runtime:
        node, store = runtime.node, runtime.store
        arrivals = Arrivals()
        arrivals.hook(node)
        conn.send(READY)
        if await asyncio.to_thread(conn.recv) != GO:
            raise RuntimeError("expected go")
        cpu_start = time.process_time()
        applied_start = node.counters.remote_applied
        sent: list[int] = []
        started = time.monotonic_ns()
        for seq in range(plan.edits):
            path = f"f{seq % plan.files:03d}.md"
            sent.append(time.monotonic_ns())
            local_edit(node, path, edit_line(plan.worker, seq))
            await asyncio.sleep(plan.interval_s)
        edited = time.monotonic_ns()
        complete = await until(
            lambda: len(arrivals.at) >= plan.expect and store.outbox_depth() == 0,
            plan.deadline_s,
        )
        finished = time.monotonic_ns()
        cpu = time.process_time() - cpu_start
        await _quiet(node, store)  # genesis fix-ups of concurrent first writes may still travel
        return {
            "worker": plan.worker,
            "sent": sent,
            "arrived": {f"{w}.{s}": t for (w, s), t in arrivals.at.items()},
            "started": started,
            "edited": edited,
            "finished": finished,
            "complete": complete,
            "cpu_s": cpu,
            "local_updates": plan.edits,
            "remote_applied": node.counters.remote_applied - applied_start,
            "digest": content_digest(node),
        }

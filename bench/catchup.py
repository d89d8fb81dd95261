"""Scenario 4: a node that was offline while N updates happened; time from its start to converged.

The missed history is written into the swarm log beforehand, in the log's own format (wire
envelopes in field `e`), as a peer's one-line appends spread over many files. The node starts in
its own process with an empty state folder; "converged" means caught up and every file on its
disk holds the final text.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pycrdt

from bench.floor import Floor
from bench.nodes import NodeSpec, running_node
from bench.procs import GO, READY, report_failure, run_workers, send_result
from bench.report import Figure
from bench.server import BenchRedis
from bench.sizes import Size
from swarm.memory.genesis import TEXT_ROOT
from swarm.transport.redis_keys import SwarmKeys
from swarm.transport.redis_transport import RedisTransport
from swarm.wire import Envelope, Kind, encode


def write_history(
    server: BenchRedis, swarm: str, updates: int, files: int
) -> tuple[dict[str, str], dict[str, bytes]]:
    """Append `updates` one-line edits to the swarm log; path -> final text, path -> state."""
    keys = SwarmKeys.for_swarm(swarm)
    client = server.client()
    docs: list[tuple[pycrdt.Doc[Any], pycrdt.Text, list[bytes]]] = []
    for _ in range(files):
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        captured: list[bytes] = []
        doc.observe(lambda event, out=captured: out.append(event.update))
        docs.append((doc, doc.get(TEXT_ROOT, type=pycrdt.Text), captured))
    lengths = [0] * files
    pipe = client.pipeline(transaction=False)
    for seq in range(updates):
        index = seq % files
        _doc, text, captured = docs[index]
        line = f"- <9.{seq}> a fact learned while the other engine was away\n"
        text.insert(lengths[index], line)
        lengths[index] += len(line.encode())
        env = Envelope(swarm, f"f{index:03d}.md", "peer", Kind.UPDATE, captured.pop())
        pipe.xadd(keys.log, {"e": encode(env)})
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    client.close()
    texts = {f"f{i:03d}.md": str(text) for i, (_d, text, _c) in enumerate(docs)}
    states = {f"f{i:03d}.md": doc.get_update() for i, (doc, _t, _c) in enumerate(docs)}
    return texts, states


async def compact_history(server: BenchRedis, swarm: str, states: dict[str, bytes]) -> int:
    """What a running swarm's lease holder does: snapshot every file up to the log's last entry
    and trim the log behind the snapshots. Returns the log length left."""
    transport = RedisTransport(server.url, swarm, "compactor")
    try:
        last = (await transport.log_info())["last_id"]
        if not await transport.acquire_lease(10_000):
            raise RuntimeError("compaction lease is taken")
        for path, state in states.items():
            await transport.put_snapshot(path, last, state)
        await transport.trim_log()
        return int((await transport.log_info()).get("length", 0))
    finally:
        await transport.close()


@dataclass(frozen=True)
class CatchupPlan:
    spec: NodeSpec
    expected: dict[str, str]
    deadline_s: float


def catchup_worker(plan: CatchupPlan, conn: Connection) -> None:
    conn.send(READY)
    if conn.recv() != GO:
        report_failure(conn, RuntimeError("expected go"))
        return
    send_result(conn, _catch_up(plan))


def _on_disk(root: Path, expected: dict[str, str]) -> bool:
    for path, text in expected.items():
        try:
            if (root / path).read_text(encoding="utf-8") != text:
                return False
        except FileNotFoundError:
            return False
    return True


async def _catch_up(plan: CatchupPlan) -> dict[str, Any]:
    started = time.monotonic()
    cpu = time.process_time()
    root = Path(plan.spec.root)
    async with running_node(plan.spec) as runtime:
        ready = time.monotonic() - started
        end = started + plan.deadline_s
        while not _on_disk(root, plan.expected) and time.monotonic() < end:
            await asyncio.sleep(0.005)
        converged = _on_disk(root, plan.expected)
        seconds = time.monotonic() - started
        applied = runtime.node.counters.remote_applied
    return {"seconds": seconds, "ready_s": ready, "converged": converged, "applied": applied,
            "cpu_s": time.process_time() - cpu}  # fmt: skip


def _timed(server: BenchRedis, swarm: str, expected: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="swarm-bench-catchup-") as tmp:
        spec = NodeSpec(server.url, swarm, "late", str(Path(tmp) / "late"))
        (result,) = run_workers(catchup_worker, [CatchupPlan(spec, expected, 600.0)], timeout=700)
    return dict(result)


def run(server: BenchRedis, size: Size, floor: Floor) -> list[Figure]:
    n = size.catchup_updates
    scenario = "4 catch-up"
    figures: list[Figure] = []
    for compacted in (False, True):
        swarm = f"catchup-{uuid.uuid4().hex[:8]}"
        expected, states = write_history(server, swarm, n, size.catchup_files)
        how = "whole log, no snapshot"
        if compacted:
            left = asyncio.run(compact_history(server, swarm, states))
            how = f"snapshots + {left} log entries, as a running swarm keeps it"
        result = _timed(server, swarm, expected)
        per_update_us = result["cpu_s"] * 1e6 / n
        figures += [
            Figure(scenario, f"{n:,} missed updates ({how}): start -> converged on disk", "s",
                   value=result["seconds"], target="<=1", met=result["converged"]
                   and result["seconds"] <= 1.0,
                   note="" if result["converged"] else "NOT converged"),
            Figure(scenario, f"start -> caught up (ready), {how}", "s", value=result["ready_s"]),
            Figure(scenario, f"CPU per missed update, {how}", "µs", value=per_update_us,
                   floor_ratio=per_update_us / floor.apply_us),
        ]  # fmt: skip
    return figures

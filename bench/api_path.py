"""Scenario 1: an edit applied to node A's document -> merged into node B's document.

Two nodes in two processes; A makes paced edits (latency, not queueing), B records when each
arrived. Sender and receiver share CLOCK_MONOTONIC.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from bench.editing import EditPlan, edit_worker
from bench.floor import Floor
from bench.nodes import NodeSpec
from bench.procs import run_workers
from bench.report import Figure, distribution
from bench.server import BenchRedis
from bench.sizes import Size


def run(server: BenchRedis, size: Size, floor: Floor) -> list[Figure]:
    swarm = f"api-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="swarm-bench-api-") as tmp:
        specs = [NodeSpec(server.url, swarm, f"n{i}", str(Path(tmp) / f"n{i}")) for i in (0, 1)]
        plans = [
            EditPlan(specs[0], 0, size.api_edits, 10, size.api_interval_s, 0, 120.0),
            EditPlan(specs[1], 1, 0, 10, 0.0, size.api_edits, 120.0),
        ]
        sender, receiver = run_workers(edit_worker, plans, timeout=300.0)
    latencies = [
        (receiver["arrived"][f"0.{seq}"] - sent) / 1e6
        for seq, sent in enumerate(sender["sent"])
        if f"0.{seq}" in receiver["arrived"]
    ]
    lost = size.api_edits - len(latencies)
    figure = distribution(
        "1 api-path",
        "A document -> B document",
        "ms",
        latencies,
        target="p50<=1 p99<=3",
        note=f"{lost} not arrived" if lost else "",
    )
    if figure.p50 is not None and figure.p99 is not None:
        figure.met = figure.p50 <= 1.0 and figure.p99 <= 3.0 and not lost
        figure.floor_ratio = figure.p50 / floor.publish_ms
    converged = sender["digest"] == receiver["digest"]
    return [figure, Figure("1 api-path", "documents identical after run", "bool",
                           value=float(converged), met=converged)]  # fmt: skip

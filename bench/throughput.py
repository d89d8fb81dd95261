"""Scenario 3: sustained edits/s until every node has every edit, and CPU per update.

One node editing with one peer receiving, then three nodes editing at once. Edits are made as
fast as the node takes them (yielding to the event loop after each, so replication runs); the
clock stops when the last edit has been merged on the last node. CPU per update is each node's
process CPU time over the edits it handled: its own plus the ones it merged from its peers
(counted by marker, so a message carrying several merged edits counts as several).
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.editing import EditPlan, edit_worker
from bench.floor import Floor
from bench.nodes import NodeSpec
from bench.procs import run_workers
from bench.report import Figure
from bench.server import BenchRedis
from bench.sizes import Size

_FILES = 20


def _one_round(server: BenchRedis, edits: int, editors: int, nodes: int) -> list[dict[str, Any]]:
    swarm = f"tput-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="swarm-bench-tput-") as tmp:
        plans = []
        for i in range(nodes):
            spec = NodeSpec(server.url, swarm, f"n{i}", str(Path(tmp) / f"n{i}"))
            own = edits if i < editors else 0
            expect = edits * editors - own
            plans.append(EditPlan(spec, i, own, _FILES, 0.0, expect, 600.0))
        return run_workers(edit_worker, plans, timeout=900.0)


def _figures(label: str, results: list[dict[str, Any]], edits: int, floor: Floor) -> list[Figure]:
    total = sum(r["local_updates"] for r in results)
    start = min(r["started"] for r in results)
    last_arrival = max(max(r["arrived"].values(), default=r["finished"]) for r in results)
    seconds = (last_arrival - start) / 1e9
    complete = all(r["complete"] for r in results)
    converged = complete and len({r["digest"] for r in results}) == 1
    rate = total / seconds if seconds > 0 else 0.0
    editors = [r for r in results if r["local_updates"]]
    per_node = rate / len(editors)
    goal = 5000 if len(editors) == 1 else 2000  # per editing node (issue 13)
    cpu_goal = 150 if len(editors) == 1 else 250
    cpu_us = [r["cpu_s"] * 1e6 / max(1, r["local_updates"] + len(r["arrived"])) for r in results]
    scenario = "3 throughput"
    return [
        Figure(scenario, f"{label}: edits/s per editing node until converged", "edits/s",
               value=per_node, count=total, target=f">={goal}", met=per_node >= goal and converged,
               note="" if converged else "NOT converged"),
        Figure(scenario, f"{label}: CPU per update (worst node)", "µs", value=max(cpu_us),
               target=f"<={cpu_goal}", met=max(cpu_us) <= cpu_goal,
               floor_ratio=max(cpu_us) / floor.apply_us),
    ]  # fmt: skip


def run(server: BenchRedis, size: Size, floor: Floor) -> list[Figure]:
    one = _one_round(server, size.throughput_edits, editors=1, nodes=2)
    three = _one_round(server, size.throughput_edits // 2, editors=3, nodes=3)
    return [
        *_figures("1 editor, 2 nodes", one, size.throughput_edits, floor),
        *_figures("3 editors, 3 nodes", three, size.throughput_edits // 2, floor),
    ]

"""How big each scenario runs: `smoke` keeps the harness working in CI, `full` is what the issue
asks for (and fits in about 10 minutes on a 2-core machine)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    name: str
    floor_samples: int
    api_edits: int  # scenario 1: edits timed from A's document to B's document
    api_interval_s: float  # pause between two of them (latency, not queueing, is measured)
    file_edits: int  # scenario 2: agent writes timed from A's file to B's file
    throughput_edits: int  # scenario 3: edits per editing node
    catchup_updates: int  # scenario 4
    catchup_files: int
    scale_daemons: int  # scenario 5
    scale_files: int
    scale_swarms: int
    memory_files: int  # scenario 6
    memory_file_kb: int
    memory_edits: int


SIZES = {
    "smoke": Size("smoke", 200, 40, 0.002, 4, 200, 1_000, 10, 3, 5, 10, 5, 5, 100),
    "full": Size(
        "full", 5_000, 2_000, 0.002, 200, 10_000, 100_000, 100, 20, 100, 1_000, 100, 50, 10_000
    ),
}

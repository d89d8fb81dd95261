"""Scenario 2: an agent appends a line to A's file -> B's file on disk contains it.

Two `swarm daemon` processes. The harness appends one line (open, write, close, like an agent),
then polls B's file (stat every 0.5 ms, read when it changed) until the line is there.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

from bench.daemons import (
    check_alive,
    presence,
    start_daemon,
    status_converged,
    stop_daemons,
    wait_for,
)
from bench.floor import Floor
from bench.report import Figure, distribution
from bench.server import BenchRedis
from bench.sizes import Size

_POLL_S = 0.0005
_PAUSE_S = 0.02  # between two writes, so each is its own edit and not a coalesced burst


def _wait_contains(path: Path, needle: str, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    last_mtime = -1
    while time.monotonic() < end:
        try:
            mtime = os.stat(path).st_mtime_ns
            if mtime != last_mtime:
                last_mtime = mtime
                if needle in path.read_text(encoding="utf-8"):
                    return True
        except FileNotFoundError:
            pass
        time.sleep(_POLL_S)
    return False


def run(server: BenchRedis, size: Size, floor: Floor) -> list[Figure]:
    swarm = f"f2f-{uuid.uuid4().hex[:8]}"
    client = server.client()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-f2f-") as tmp:
        roots = [Path(tmp) / "a", Path(tmp) / "b"]
        for root in roots:
            root.mkdir()
            (root / "MEMORY.md").write_text("# Memory\n", encoding="utf-8")
        procs = [start_daemon(server.url, swarm, f"n{i}", root) for i, root in enumerate(roots)]
        latencies: list[float] = []
        try:
            ready = wait_for(lambda: status_converged(presence(client, swarm), 2, 1), 60, 0.05)
            if ready is None:
                check_alive(procs)
                raise TimeoutError("daemons not converged on the seed file within 60 s")
            source, target = roots[0] / "MEMORY.md", roots[1] / "MEMORY.md"
            lost = 0
            for seq in range(size.file_edits):
                line = f"- <0.{seq}> the user prefers short answers\n"
                started = time.monotonic()
                with source.open("a", encoding="utf-8") as handle:
                    handle.write(line)
                if _wait_contains(target, line, 10.0):
                    latencies.append((time.monotonic() - started) * 1e3)
                else:
                    lost += 1
                time.sleep(_PAUSE_S)
        finally:
            stop_daemons(procs)
            client.close()
    note = f"{lost} lost" if lost else ""
    figure = distribution("2 file-to-file", "A's file -> B's file", "ms", latencies,
                          target="p50<=10 p99<=20", note=note)  # fmt: skip
    if figure.p50 is not None:
        figure.met = figure.p50 <= 10 and (figure.p99 or 0) <= 20 and not lost
        figure.floor_ratio = figure.p50 / floor.publish_ms
    return [figure]

"""Scenario 6: daemon RSS with many 50 KB markdown files, and the bytes kept per file locally and
in Redis after many edits (as the daemon leaves them, then after compaction)."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.daemons import (
    check_alive,
    presence,
    rss_bytes,
    start_daemon,
    status_converged,
    stop_daemons,
    wait_for,
)
from bench.floor import Floor
from bench.nodes import NodeSpec, edit_line, local_edit, running_node, until
from bench.procs import GO, READY, run_workers, send_result
from bench.report import Figure
from bench.server import BenchRedis
from bench.sizes import Size
from swarm.store import DB_NAME
from swarm.transport.redis_keys import SwarmKeys


def markdown(kb: int, seed: int) -> str:
    """About `kb` KB of memory-like markdown: headings and bullet lines."""
    out: list[str] = [f"# Memory file {seed}\n"]
    size, i = 0, 0
    while size < kb * 1024:
        line = (f"\n## Topic {i}\n" if i % 20 == 0 else
                f"- fact {seed}.{i}: prefers concise answers, metric units\n")  # fmt: skip
        out.append(line)
        size += len(line)
        i += 1
    return "".join(out)


def seed_folder(root: Path, files: int, kb: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        (root / f"f{f:03d}.md").write_text(markdown(kb, f), encoding="utf-8")


_REST_S = 3.0


def _rss(server: BenchRedis, size: Size) -> tuple[float, float]:
    swarm = f"rss-{uuid.uuid4().hex[:8]}"
    client = server.client()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-rss-") as tmp:
        root = Path(tmp) / "n0"
        seed_folder(root, size.memory_files, size.memory_file_kb)
        proc = start_daemon(server.url, swarm, "n0", root)
        try:
            ready = wait_for(
                lambda: status_converged(presence(client, swarm), 1, size.memory_files), 120, 0.1
            )
            if ready is None:
                check_alive([proc])
                raise TimeoutError("daemon did not import its files within 120 s")
            # At rest: once quiet for a maintenance interval (1 s) the daemon hands the memory
            # the import freed back; measured 3 s after the import converged.
            time.sleep(_REST_S)
            at_rest = rss_bytes(proc.pid)
            return at_rest / 2**20, rss_bytes(proc.pid, "VmHWM") / 2**20
        finally:
            stop_daemons([proc])
            client.close()


@dataclass(frozen=True)
class StorePlan:
    spec: NodeSpec
    files: int
    edits: int


def _local_bytes(db: Path) -> int:
    """Bytes of document data, outbox and render history in the store (not free pages)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        total = 0
        for table, column in (("doc_base", "state"), ("doc_log", "data"), ("outbox", "data"),
                              ("history", "text")):  # fmt: skip
            total += conn.execute(f"SELECT coalesce(sum(length({column})), 0) FROM {table}")\
                .fetchone()[0]  # fmt: skip
        return int(total)
    finally:
        conn.close()


async def _redis_bytes(runtime: Any) -> int:
    keys = SwarmKeys.for_swarm(runtime.settings.swarm)
    client = runtime.transport._client  # reuse the node's own connection
    total = 0
    for key in (keys.log, keys.snap):
        total += int(await client.memory_usage(key, samples=0) or 0)
    return total


def store_worker(plan: StorePlan, conn: Connection) -> None:
    send_result(conn, _edit_and_measure(plan, conn))


async def _edit_and_measure(plan: StorePlan, conn: Connection) -> dict[str, Any]:
    async with running_node(plan.spec) as runtime:
        conn.send(READY)
        if await asyncio.to_thread(conn.recv) != GO:
            raise RuntimeError("expected go")
        node, store = runtime.node, runtime.store
        for seq in range(plan.edits):
            local_edit(node, f"f{seq % plan.files:03d}.md", edit_line(0, seq))
            await asyncio.sleep(0)
        if not await until(lambda: store.outbox_depth() == 0, 300, 0.01):
            raise TimeoutError("outbox not flushed within 300 s")
        db = store.db_path
        kept = {"local": _local_bytes(db), "redis": await _redis_bytes(runtime),
                "db_file": db.stat().st_size + _wal_size(db)}  # fmt: skip
        for path, doc in node.docs.items():
            store.compact_doc(path, doc.encode_state())
        await runtime.replicator.compact_once()
        compacted = {"local": _local_bytes(db), "redis": await _redis_bytes(runtime)}
    return {"kept": kept, "compacted": compacted}


def _wal_size(db: Path) -> int:
    wal = db.with_name(DB_NAME + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def run(server: BenchRedis, size: Size, floor: Floor) -> list[Figure]:
    del floor
    files, kb, edits = size.memory_files, size.memory_file_kb, size.memory_edits
    rss, peak = _rss(server, size)
    swarm = f"bytes-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="swarm-bench-bytes-") as tmp:
        root = Path(tmp) / "n0"
        seed_folder(root, files, kb)
        spec = NodeSpec(server.url, swarm, "n0", str(root))
        (result,) = run_workers(store_worker, [StorePlan(spec, files, edits)], timeout=900)
    kept, compacted = result["kept"], result["compacted"]
    scenario = "6 memory"
    return [
        Figure(scenario, f"daemon RSS, {files} files x {kb} KB", "MB", value=rss,
               target="<=60", met=rss <= 60, note="at rest after the import"),
        Figure(scenario, "daemon peak RSS during the import", "MB", value=peak),
        Figure(scenario, f"local store per file after {edits:,} edits", "KB",
               value=kept["local"] / files / 1024, note="as the daemon keeps it"),
        Figure(scenario, "state.db + WAL on disk per file", "KB",
               value=kept["db_file"] / files / 1024),
        Figure(scenario, "Redis per file (log + snapshots)", "KB",
               value=kept["redis"] / files / 1024, note="before compaction"),
        Figure(scenario, "local store per file after compaction", "KB",
               value=compacted["local"] / files / 1024),
        Figure(scenario, "Redis per file after compaction", "KB",
               value=compacted["redis"] / files / 1024),
    ]  # fmt: skip

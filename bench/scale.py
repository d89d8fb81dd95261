"""Scenario 5: many daemons x many files, a burst of edits, time until converged; and many swarms
sharing one Redis (Redis memory per swarm).

Every daemon starts with the same seeded files (identical geneses merge as no-ops). The burst:
each daemon's agent appends one line to 5 files at the same moment. Two clocks: until every
node's disk holds every line, and until the presence heartbeats (what `swarm status` reads) agree.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from bench.daemons import (
    HEARTBEAT_S,
    check_alive,
    presence,
    rss_bytes,
    start_daemon,
    status_converged,
    stop_daemons,
    wait_for,
)
from bench.floor import Floor
from bench.report import Figure
from bench.server import BenchRedis
from bench.sizes import Size
from swarm.memory import MemoryDoc
from swarm.transport.redis_transport import RedisTransport
from swarm.wire import Envelope, Kind

_EDITS_PER_NODE = 5
_SEED = "# Notes\n\n" + "".join(f"- seeded fact {i}: the sky is blue\n" for i in range(40))


def _burst_lines(daemons: int, files: int) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for node in range(daemons):
        for k in range(_EDITS_PER_NODE):
            path = f"f{(node * _EDITS_PER_NODE + k) % files:03d}.md"
            lines.setdefault(path, []).append(f"- <{node}.{k}> burst edit\n")
    return lines


def _all_on_disk(roots: list[Path], lines: dict[str, list[str]]) -> bool:
    for root in roots:
        for path, wanted in lines.items():
            text = (root / path).read_text(encoding="utf-8")
            if any(line not in text for line in wanted):
                return False
    return True


def _daemons(server: BenchRedis, size: Size) -> list[Figure]:
    swarm = f"scale-{uuid.uuid4().hex[:8]}"
    n, files = size.scale_daemons, size.scale_files
    client = server.client()
    scenario = "5 scale"
    with tempfile.TemporaryDirectory(prefix="swarm-bench-scale-") as tmp:
        roots = [Path(tmp) / f"n{i:02d}" for i in range(n)]
        for root in roots:
            root.mkdir()
            for f in range(files):
                (root / f"f{f:03d}.md").write_text(_SEED, encoding="utf-8")
        procs = [start_daemon(server.url, swarm, f"n{i:02d}", r) for i, r in enumerate(roots)]
        try:
            started = wait_for(lambda: status_converged(presence(client, swarm), n, files),
                               240, 0.1)  # fmt: skip
            if started is None:
                check_alive(procs)
                raise TimeoutError(f"{n} daemons not converged on the seed within 240 s")
            rss = [rss_bytes(p.pid) for p in procs]
            lines = _burst_lines(n, files)
            burst_at = time.monotonic()
            for node, root in enumerate(roots):
                for path, wanted in lines.items():
                    mine = [line for line in wanted if line.startswith(f"- <{node}.")]
                    if mine:
                        with (root / path).open("a", encoding="utf-8") as handle:
                            handle.write("".join(mine))
            disk = wait_for(lambda: _all_on_disk(roots, lines), 120, 0.01)
            status = wait_for(
                lambda: (
                    _all_on_disk(roots, lines)
                    and status_converged(presence(client, swarm), n, files)
                ),
                120,
                0.02,
            )
            from_burst = time.monotonic() - burst_at
        finally:
            stop_daemons(procs)
            client.close()
    disk_s = disk
    edits = n * _EDITS_PER_NODE
    return [
        Figure(scenario, f"{n} daemons x {files} files: start -> converged", "s", value=started),
        Figure(scenario, f"burst of {edits} edits -> every disk has every line", "s",
               value=disk_s, target="<=2", met=disk_s is not None and disk_s <= 2,
               note="" if disk_s is not None else "NOT converged"),
        Figure(scenario, "burst -> status says converged", "s",
               value=from_burst if status is not None else None,
               note=f"heartbeat every {HEARTBEAT_S} s"),
        Figure(scenario, "daemon RSS (mean)", "MB", value=sum(rss) / len(rss) / 2**20),
    ]  # fmt: skip


Snapshots = dict[str, tuple[str, bytes]]  # path -> (last stream id, full state)


async def _fill_swarms(url: str, swarms: int) -> list[tuple[RedisTransport, Snapshots]]:
    """Each swarm: 10 files, each a seeded genesis + 20 one-line edits, and a heartbeat."""
    filled = []
    for s in range(swarms):
        transport = RedisTransport(url, f"many-{s:04d}", "n0")
        snapshots: Snapshots = {}
        filled.append((transport, snapshots))
        for f in range(10):
            path = f"f{f}.md"
            doc = MemoryDoc(path)
            updates = [doc.write(_SEED)]
            for k in range(20):
                updates.append(doc.write(doc.content + f"- fact {k} learned today\n"))
            last = "0-0"
            for update in updates:
                assert update is not None
                env = Envelope(transport.swarm, path, "n0", Kind.UPDATE, update)
                last = await transport.publish(env)
            await transport.heartbeat({"files": {path: {"digest": "x" * 16}}}, ttl_s=3600)
            snapshots[path] = (last, doc.encode_state())
    return filled


async def _compact(filled: list[tuple[RedisTransport, Snapshots]]) -> None:
    """What the compaction loop does under its lease: snapshot every file, trim the log."""
    for transport, snapshots in filled:
        await transport.acquire_lease(60_000)
        for path, (last, state) in snapshots.items():
            await transport.put_snapshot(path, last, state)
        await transport.trim_log()
        await transport.release_lease()
        await transport.close()


def _swarms(server: BenchRedis, size: Size) -> list[Figure]:
    client = server.client()
    before = int(client.info("memory")["used_memory"])

    async def fill_and_compact() -> int:
        transports = await _fill_swarms(server.url, size.scale_swarms)
        filled = int(client.info("memory")["used_memory"])
        await _compact(transports)
        return filled

    filled = asyncio.run(fill_and_compact())
    compacted = int(client.info("memory")["used_memory"])
    client.close()
    n = size.scale_swarms
    return [
        Figure("5 scale", f"{n} swarms, 10 files x 21 updates: Redis memory per swarm", "KB",
               value=(filled - before) / n / 1024, note="log only"),
        Figure("5 scale", "Redis memory per swarm after compaction", "KB",
               value=(compacted - before) / n / 1024, note="snapshots, log trimmed"),
    ]  # fmt: skip


def run(server: BenchRedis, size: Size, floor: Floor) -> list[Figure]:
    del floor
    return [*_daemons(server, size), *_swarms(server, size)]

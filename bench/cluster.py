"""Swarms on a Redis Cluster: spread, throughput against one Redis, and failover time.

    .venv/bin/python -m bench.cluster                 # 1,000 swarms, ~1 min on 2 cores
    .venv/bin/python -m bench.cluster --swarms 100    # quicker

1. Spread: N swarms (2 files x 10 one-line edits and a heartbeat each) written through the daemon's
   transport into a 3-master cluster: keys and bytes per master, bytes per swarm and per file.
2. Edits/s: concurrent publishers, each on swarms of its own, for a few seconds: against the
   cluster (3 masters) and against one redis-server, on the same cores (every server, publisher
   and harness here share this machine's cores, so this measures the cost of the cluster path, not
   a cluster's extra hardware).
3. Failover: daemons of swarms whose slots live on one master, agents editing; the master is
   SIGKILLed; time until a line written right after the kill is on every node's disk.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import redis

from swarm.config import DaemonSettings
from swarm.daemon import serve
from swarm.devtools.devcluster import DevCluster, swarm_slot
from swarm.devtools.devredis import HOST, RedisServer
from swarm.memory import MemoryDoc
from swarm.runtime import Runtime, open_runtime
from swarm.transport.redis_transport import RedisTransport
from swarm.wire import Envelope, Kind

_FILES, _EDITS = 2, 10
_LINE = "- a fact learned today, with a little context around it\n"


def _used_memory(port: int) -> int:
    with redis.Redis(host=HOST, port=port) as client:
        return int(client.info("memory")["used_memory"])


def _keys(port: int) -> int:
    with redis.Redis(host=HOST, port=port) as client:
        return int(client.dbsize())


async def _fill(url: str, swarms: list[str]) -> None:
    for swarm in swarms:
        transport = RedisTransport(url, swarm, "n0")
        for f in range(_FILES):
            path, doc = f"f{f}.md", MemoryDoc(f"f{f}.md")
            for _ in range(_EDITS):
                update = doc.write(doc.content + _LINE)
                assert update is not None
                await transport.publish(Envelope(swarm, path, "n0", Kind.UPDATE, update))
        await transport.epoch("bench")
        await transport.heartbeat({"role": "bench"}, ttl_s=3600)
        await transport.close()


def spread(cluster: DevCluster, count: int) -> None:
    masters = cluster.masters()
    before = {m.port: _used_memory(m.port) for m in masters}
    started = time.perf_counter()
    asyncio.run(_fill(cluster.url(0), [f"bench-{i:05d}" for i in range(count)]))
    took = time.perf_counter() - started
    keys = {m.port: _keys(m.port) for m in masters}
    used = {m.port: _used_memory(m.port) - before[m.port] for m in masters}
    spread_pct = (max(keys.values()) - min(keys.values())) / max(keys.values()) * 100
    total = sum(used.values())
    print(f"[spread] {count} swarms written in {took:.1f} s through one node's address")
    for port in keys:
        print(f"  master :{port}: {keys[port]} keys, {used[port] / 2**20:.2f} MiB")
    print(f"  keys per master: largest - smallest = {spread_pct:.1f}% of the largest")
    print(f"  Redis memory per swarm: {total / count / 1024:.1f} KiB "
          f"({_FILES} files x {_EDITS} edits, log not compacted); per file: "
          f"{total / count / _FILES / 1024:.1f} KiB")  # fmt: skip


def _publisher(args: tuple[str, list[str], float]) -> int:
    url, swarms, seconds = args

    async def run() -> int:
        transports = [RedisTransport(url, swarm, "w") for swarm in swarms]
        sent = 0
        end = time.monotonic() + seconds

        async def loop(transport: RedisTransport) -> None:
            nonlocal sent
            env = Envelope(transport.swarm, "f.md", "w", Kind.UPDATE, _LINE.encode() * 2)
            while time.monotonic() < end:
                await transport.publish(env)
                sent += 1

        await asyncio.gather(*(loop(t) for t in transports))
        for transport in transports:
            await transport.close()
        return sent

    return asyncio.run(run())


def edits_per_second(url: str, label: str, workers: int, seconds: float) -> float:
    per_worker = 16
    prefix = f"rate-{label.replace(' ', '-')}"
    jobs = [
        (url, [f"{prefix}-{w}-{i}" for i in range(per_worker)], seconds) for w in range(workers)
    ]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        sent = sum(pool.map(_publisher, jobs))
    rate = sent / seconds
    print(f"[edits/s] {label}: {rate:,.0f} edits/s ({workers} processes x {per_worker} swarms)")
    return rate


async def _failover(cluster: DevCluster, root: Path, swarms: int) -> list[float]:
    master = cluster.masters()[0]
    names = []
    i = 0
    while len(names) < swarms:
        name = f"fo-{i}"
        if cluster.master_of_slot(swarm_slot(name)) is master:
            names.append(name)
        i += 1
    entry = [s.url for s in cluster.servers if s is not master]
    stop = asyncio.Event()
    runtimes: list[tuple[str, Runtime]] = []
    tasks = []
    for n, name in enumerate(names):
        for node in ("a", "b"):
            base = root / name / node
            (base / "mem").mkdir(parents=True)
            settings = DaemonSettings(
                dir=base / "mem", state_dir=base / "state", node=node, swarm=name,
                redis_url=entry[(n + (node == "b")) % len(entry)], http="0",
                heartbeat_interval=0.2, offline_after=2.0,
            )  # fmt: skip
            runtime = open_runtime(settings)
            runtimes.append((name, runtime))
            tasks.append(asyncio.create_task(serve(runtime, stop)))
    for _name, runtime in runtimes:
        while not runtime.reconciled.is_set():
            await asyncio.sleep(0.05)

    def write(rt: Runtime, line: str) -> None:
        path = rt.settings.dir / "MEMORY.md"
        text = path.read_text() if path.exists() else ""
        path.write_text(text + line + "\n")

    writers = [rt for name, rt in runtimes if rt.settings.node == "a"]
    for k in range(20):  # the swarms are busy when the master dies
        for rt in writers:
            await asyncio.to_thread(write, rt, f"- before {k}")
        await asyncio.sleep(0.02)
    master.kill()
    killed = time.monotonic()
    for rt in writers:
        await asyncio.to_thread(write, rt, "- written right after the kill")
    done: dict[str, float] = {}
    while len(done) < len(runtimes) and time.monotonic() - killed < 120:
        for name, rt in runtimes:
            key = f"{name}/{rt.settings.node}"
            path = rt.settings.dir / "MEMORY.md"
            if key not in done and path.exists() and "right after the kill" in path.read_text():
                done[key] = time.monotonic() - killed
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sorted(done.values())


def failover(cluster: DevCluster, swarms: int) -> None:
    with tempfile.TemporaryDirectory(prefix="swarm-bench-failover-") as tmp:
        times = asyncio.run(_failover(cluster, Path(tmp), swarms))
    print(f"[failover] {swarms} swarms x 2 daemons on the killed master (node timeout 1 s): "
          f"kill -> line on every disk: median {statistics.median(times):.2f} s, "
          f"slowest {times[-1]:.2f} s ({len(times)}/{2 * swarms} nodes)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swarms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    with DevCluster(masters=3, replicas=1) as cluster:
        spread(cluster, options.swarms)
        on_cluster = edits_per_second(cluster.url(0), "cluster", options.workers, options.seconds)
        with RedisServer() as single:
            alone = edits_per_second(single.url, "one redis", options.workers, options.seconds)
        print(f"[edits/s] cluster / one Redis = {on_cluster / alone:.2f}")
        failover(cluster, swarms=5)


if __name__ == "__main__":
    main()

"""`python -m bench.chaos [--minutes 10] [--files 553] [--rate 11]`: daemon memory under chaos.

Three real `swarm daemon` processes on one private redis-server, each with its own folder of
markdown files. For `--minutes` the harness plays agents: random appends (`open('a')`), rewrites
of a line in place, whole-file rewrites, deletions and re-creations, spread over the nodes and
sometimes hitting one file on two nodes at once; every `--status-every` seconds it asks one
daemon for the swarm's status (its status page's `/api/swarm`, what an agent's `memory_status`
or an open status page asks). Every `--sample` seconds it reads each daemon's RSS. It prints RSS
at the start and every 5 minutes, the slope (least squares, MB per minute) over the first and the
second half of the run, then stops editing and checks convergence: every disk the same bytes, and
the heartbeats agreeing as `swarm status` reads them; last, RSS at rest.

A daemon that holds on to what it no longer needs shows a second-half slope as steep as the
first; one whose memory levels off shows a second half near 0. The set of file names is bounded
(a pool of `--files` x 1.1 names), so the memory the documents need grows only with the text.
`--trace NODE` runs that node under tracemalloc (bench/traced_daemon.py) and names the
allocation sites that grew.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import click
import redis

from bench.daemons import (
    check_alive,
    presence,
    rss_bytes,
    start_daemon,
    status_converged,
    stop_daemons,
    wait_for,
)
from bench.idle import get
from bench.memory import markdown
from bench.server import BenchRedis
from swarm.devredis import free_port

NODES = 3
_STATUS_NODE = "n1"  # serves HTTP: its status page is asked for the swarm's status
_CONVERGE_S = 300.0
_REST_S = 5.0  # a quiet maintenance pass drops caches and trims (swarm/heap.py)
# The seeded folder is an import, not a flood of new files (swarm/flood.py would hold it).
_BUDGET = {"SWARM_NEW_FILES_PER_MINUTE": "100000"}


@dataclass
class Chaos:
    """The agents' side: which names exist on which node, and what was done."""

    roots: list[Path]
    names: list[str]
    rng: random.Random
    done: dict[str, int] = field(default_factory=dict)
    seq: int = 0

    def existing(self, root: Path) -> list[str]:
        return [n for n in self.names if (root / n).exists()]

    def step(self) -> None:
        """One agent action on a random node (now and then the same file on a second node)."""
        root = self.rng.choice(self.roots)
        present = self.existing(root) if self.rng.random() < 0.05 else None
        roll = self.rng.random()
        if present is not None and roll < 0.5 and present:
            self._do("delete", root, self.rng.choice(present))
            return
        if present is not None:
            missing = sorted(set(self.names) - set(present))
            if missing:
                self._do("create", root, self.rng.choice(missing))
                return
        name = self.rng.choice(self.names)
        action = "append" if roll < 0.6 else "edit-line" if roll < 0.9 else "rewrite"
        self._do(action, root, name)
        if self.rng.random() < 0.1:  # a concurrent edit of the same file elsewhere
            self._do("append", self.rng.choice([r for r in self.roots if r != root]), name)

    def _do(self, action: str, root: Path, name: str) -> None:
        self.seq += 1
        line = f"- <{root.name}.{self.seq}> the user prefers short answers and metric units\n"
        file = root / name
        try:
            if action == "delete":
                file.unlink()
            elif action == "create":
                file.write_text(f"# {name}\n\n{line}", encoding="utf-8")
            elif action == "append":
                with file.open("a", encoding="utf-8") as out:
                    out.write(line)
            else:
                text = file.read_text(encoding="utf-8")
                lines = text.splitlines(keepends=True)
                if action == "edit-line" and lines:
                    lines[self.rng.randrange(len(lines))] = line
                else:  # rewrite: keep a random two thirds of the lines, add one
                    lines = [x for x in lines if self.rng.random() < 0.67] + [line]
                file.write_text("".join(lines), encoding="utf-8")
        except FileNotFoundError:
            return  # deleted (here or by a render of a peer's deletion) meanwhile
        self.done[action] = self.done.get(action, 0) + 1


@dataclass
class Samples:
    """(minutes since the edits began, RSS in MB per node)."""

    rows: list[tuple[float, list[float]]] = field(default_factory=list)

    def take(self, started: float, pids: list[int]) -> None:
        self.rows.append(((time.monotonic() - started) / 60, [rss_bytes(p) / 2**20 for p in pids]))

    def at(self, minute: float) -> list[float]:
        return min(self.rows, key=lambda row: abs(row[0] - minute))[1]

    def slope(self, node: int, first: float, last: float) -> float:
        """MB per minute, least squares over the samples in [first, last] minutes."""
        points = [(t, mb[node]) for t, mb in self.rows if first <= t <= last]
        if len(points) < 2:
            return float("nan")
        mt = sum(t for t, _ in points) / len(points)
        mm = sum(m for _, m in points) / len(points)
        var = sum((t - mt) ** 2 for t, _ in points)
        return sum((t - mt) * (m - mm) for t, m in points) / var if var else float("nan")


def differing_files(roots: list[Path]) -> list[str]:
    """Names whose bytes differ between the folders (missing on some counts as differing)."""
    names = sorted({p.name for r in roots for p in r.glob("*.md")})
    differ = []
    for name in names:
        contents = {(r / name).read_bytes() if (r / name).exists() else None for r in roots}
        if len(contents) > 1:
            differ.append(name)
    return differ


def _print_report(samples: Samples, minutes: float, chaos: Chaos, edits_s: float) -> None:
    marks = [0.0, *range(5, int(minutes) + 1, 5)]
    if minutes not in marks:
        marks.append(minutes)
    print(
        f"\nedits: {sum(chaos.done.values()):,} in {edits_s / 60:.1f} min "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(chaos.done.items()))})"
    )
    print(
        "RSS MB  "
        + "".join(f"{f't={m:g} min':>12}" for m in marks)
        + f"{'slope 1st half':>16}{'slope 2nd half':>16}"
    )
    half = minutes / 2
    for node in range(NODES):
        values = "".join(f"{samples.at(m)[node]:>12.1f}" for m in marks)
        first, second = samples.slope(node, 0, half), samples.slope(node, half, minutes)
        print(f"n{node}     {values}{first:>12.2f} MB/min{second:>12.2f} MB/min")


def _start(
    server: BenchRedis, swarm: str, roots: list[Path], trace: str | None, port: int
) -> list[Popen[bytes]]:
    procs = []
    for root in roots:
        http = f"127.0.0.1:{port}" if root.name == _STATUS_NODE else "0"
        if root.name != trace:
            procs.append(start_daemon(server.url, swarm, root.name, root, http, env=_BUDGET))
            continue
        out = root.parent.parent / f"swarm-chaos-trace-{swarm}.txt"  # outlives the run
        print(f"tracemalloc report of {root.name}: {out}")
        procs.append(
            start_daemon(
                server.url,
                swarm,
                root.name,
                root,
                http,
                module="bench.traced_daemon",
                env={**_BUDGET, "SWARM_TRACE_OUT": str(out)},
            )
        )
    return procs


def run(
    minutes: float,
    files: int,
    rate: float,
    sample_s: float,
    status_s: float,
    trace: str | None,
    seed: int,
) -> bool:
    rng = random.Random(seed)
    names = [f"f{i:03d}.md" for i in range(int(files * 1.1))]
    with BenchRedis() as server, tempfile.TemporaryDirectory(prefix="swarm-chaos-") as tmp:
        client = server.client()
        swarm = f"chaos-{uuid.uuid4().hex[:8]}"
        roots = [Path(tmp) / f"n{i}" for i in range(NODES)]
        for root in roots:
            root.mkdir()
        for i, name in enumerate(names[:files]):  # the others receive them (no new-file budget)
            (roots[0] / name).write_text(markdown(2, i), encoding="utf-8")
        port = free_port()
        procs = _start(server, swarm, roots, trace, port)
        try:
            ready = wait_for(lambda: _said_converged(client, swarm, files), _CONVERGE_S, 0.5)
            if ready is None:
                check_alive(procs)
                raise SystemExit(f"the daemons did not import and converge in {_CONVERGE_S:.0f} s")
            print(
                f"{NODES} daemons, {files} files, converged after {ready:.1f} s; "
                f"chaos for {minutes:g} min at ~{rate:g} actions/s"
            )
            chaos = Chaos(roots, names, rng)
            samples = Samples()
            pids = [p.pid for p in procs]
            started = time.monotonic()
            samples.take(started, pids)
            next_sample, end = started + sample_s, started + minutes * 60
            next_status = started + status_s if status_s else math.inf
            while (now := time.monotonic()) < end:
                chaos.step()
                if now >= next_sample:
                    check_alive(procs)
                    samples.take(started, pids)
                    next_sample += sample_s
                if now >= next_status:  # what an agent's memory_status or a status page asks
                    get(port, "/api/swarm", timeout=60)
                    next_status = now + status_s
                time.sleep(rng.expovariate(rate))
            samples.take(started, pids)
            _print_report(samples, minutes, chaos, time.monotonic() - started)
            print(f"memory folder: {_folder_mb(roots[0], files):.2f} MB at the start, "
                  f"{_folder_mb(roots[0]):.2f} MB at the end")  # fmt: skip
            converged = _converge(procs, roots, client, swarm)
            time.sleep(_REST_S)
            rest = ", ".join(f"n{i} {rss_bytes(pid) / 2**20:.1f}" for i, pid in enumerate(pids))
            print(f"RSS MB {_REST_S:.0f} s after converging (at rest): {rest}")
            return converged
        finally:
            stop_daemons(procs)
            client.close()


def _folder_mb(root: Path, seeded: int | None = None) -> float:
    """The text the memory holds (at the start: what was seeded)."""
    if seeded is not None:
        return sum(len(markdown(2, i).encode()) for i in range(seeded)) / 2**20
    return sum(p.stat().st_size for p in root.glob("*.md")) / 2**20


def _said_converged(client: redis.Redis, swarm: str, files: int) -> bool:
    return status_converged(presence(client, swarm), NODES, files)


def _converge(
    procs: list[Popen[bytes]], roots: list[Path], client: redis.Redis, swarm: str
) -> bool:
    waited = wait_for(lambda: not differing_files(roots), _CONVERGE_S, 0.5)
    if waited is None:
        check_alive(procs)
        differ = differing_files(roots)
        print(f"NOT converged after {_CONVERGE_S:.0f} s: {len(differ)} files differ: {differ[:5]}")
        return False
    files = len(list(roots[0].glob("*.md")))
    said = wait_for(lambda: _said_converged(client, swarm, files), _CONVERGE_S, 0.5)
    print(
        f"disks equal {waited:.1f} s after the last edit ({files} files); heartbeats agree: "
        f"{'yes' if said is not None else 'NO'}"
    )
    return said is not None


@click.command()
@click.option("--minutes", type=float, default=10.0, show_default=True)
@click.option("--files", type=int, default=553, show_default=True)
@click.option("--rate", type=float, default=11.0, show_default=True, help="Agent actions a second.")
@click.option("--sample", "sample_s", type=float, default=10.0, show_default=True)
@click.option(
    "--status-every",
    "status_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between two asks for the swarm's status (n1's /api/swarm); 0: never.",
)
@click.option(
    "--trace",
    type=click.Choice([f"n{i}" for i in range(NODES)]),
    default=None,
    help="Run this node under tracemalloc.",
)
@click.option("--seed", type=int, default=int.from_bytes(os.urandom(4)), show_default="random")
def main(
    minutes: float,
    files: int,
    rate: float,
    sample_s: float,
    status_s: float,
    trace: str | None,
    seed: int,
) -> None:
    """Three daemons under random concurrent edits: RSS over time, then convergence."""
    # Stopped by a signal (a background job ignores SIGINT): still stop the daemons and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"seed {seed}")
    if not run(minutes, files, rate, sample_s, status_s, trace, seed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

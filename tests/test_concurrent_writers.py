"""Agents in their own processes writing a file while the daemon renders remote edits into it.

A render must never take a file from under a writer that holds it open: every line any agent
process wrote is on every disk at the end, once. Two real daemons, a real redis-server, real
writer processes (`writer_process.py`).

`SWARM_WRITERS_SECONDS` makes the appender run longer (e.g. 1800 for a 30-minute soak).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from daemon_harness import (
    STOP_DEADLINE_S,
    DaemonGroup,
    DaemonProcess,
    assert_each_line_once,
    converged,
    describe,
    read_tree,
    wait_until,
    write_file,
)
from writer_process import appended_lines, chunked_lines

from swarm.devtools.devredis import RedisServer

pytestmark = pytest.mark.slow
WRITER = Path(__file__).parent / "writer_process.py"
APPEND_SECONDS = float(os.environ.get("SWARM_WRITERS_SECONDS", "6"))
APPENDERS_PER_NODE = 4
APPEND_INTERVAL = 0.05  # each appender: 20 lines a second
# How long each appender of a node holds the file open before its line is written: a plain
# open-write-close, and agents slower to write (the wider the window, the sooner a render that
# takes the file away shows).
HOLDS = [0.0, 0.001, 0.005, 0.02]


def start_writer(*args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_writers(procs: Sequence[subprocess.Popen[bytes]], seconds: float) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=seconds + STOP_DEADLINE_S)
        assert proc.returncode == 0, err.decode(errors="replace")


def start_pair(group: DaemonGroup, leases: bool) -> list[DaemonProcess]:
    """Daemons a and b; without leases they take the fallback (render.py)."""
    env = {} if leases else {"SWARM_NO_LEASES": "1"}
    started = [group.add(node, env=env).start() for node in ("a", "b")]
    for daemon in started:
        daemon.wait_ready()
    return started


def seed(group: DaemonGroup, paths: Sequence[str]) -> None:
    """Each file with a header on the first node, and on every node before the test writes."""
    first = group.folders[0]
    for rel in paths:
        write_file(first / rel, f"# {rel}\n", atomic=True)
    wait_until(
        lambda: all(set(paths) <= set(read_tree(folder)) for folder in group.folders),
        "seeded files on every node",
        explain=group.logs,
    )


def test_appending_processes_on_two_daemons_lose_no_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Agents appending (`open('a')`, write, close) 20 times a second each, four per node, to one
    file: every render on one node lands amid the other node's appends. (Without leases the
    same holds, see the streaming test: appends are the easy case of the fallback.)"""
    count = int(APPEND_SECONDS / APPEND_INTERVAL)
    with DaemonGroup(tmp_path, redis_server.url) as group:
        start_pair(group, leases=True)
        seed(group, ["MEMORY.md"])
        tags = [f"{d.node}{i}" for d in group.daemons.values() for i in range(APPENDERS_PER_NODE)]
        procs = [
            start_writer(
                "append", group[tag[0]].dir / "MEMORY.md", tag, count, APPEND_INTERVAL, hold
            )
            for tag, hold in zip(tags, HOLDS * len(tags), strict=False)
        ]
        wait_writers(procs, APPEND_SECONDS * 3)

        expected = {"MEMORY.md": [line for tag in tags for line in appended_lines(tag, count)]}
        wait_until(
            lambda: converged(group.folders, expected),
            f"both nodes hold all {len(expected['MEMORY.md'])} appended lines",
            explain=lambda: describe(group.folders, expected) + "\n" + group.logs(),
        )
        assert_each_line_once(group.folders, expected)


@pytest.mark.parametrize("leases", [True, False], ids=["lease", "no-lease"])
def test_chunked_writers_keep_every_chunk_while_remote_edits_render(
    tmp_path: Path, redis_server: RedisServer, leases: bool
) -> None:
    """Streaming writers (`open('w')`, 3-10 chunks flushed 50-500 ms apart, close) on one node,
    while an agent on the other node appends to the same files: 16 writers in all, each node
    streaming in turn. Without leases, the fallback keeps what is written within 2 s of the
    previous write, and these pauses are shorter."""
    files = [f"memory/stream-{i}.md" for i in range(8)]
    rng = random.Random(18)
    expected: dict[str, list[str]] = {rel: [] for rel in files}
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = start_pair(group, leases)
        seed(group, files)
        for trial in range(2):
            streaming, remote = (a, b) if trial % 2 == 0 else (b, a)
            procs = []
            for rel in files:
                tag, chunks = f"t{trial}-{rel[-4]}", rng.randint(3, 10)
                pauses = (0.05, 0.5)
                procs.append(
                    start_writer("chunked", streaming.dir / rel, tag, chunks, 5, *pauses, trial)
                )
                expected[rel] += chunked_lines(tag, chunks, 5)
                # the remote agent: 5 lines a second for about as long as the stream lasts
                edits = chunks * 2
                remote_tag = f"r{trial}-{rel[-4]}"
                procs.append(start_writer("append", remote.dir / rel, remote_tag, edits, 0.2, 0))
                expected[rel] += appended_lines(remote_tag, edits)
            wait_writers(procs, 10.0)

        wait_until(
            lambda: converged(group.folders, expected),
            "both nodes hold every streamed chunk and every remote line",
            explain=lambda: describe(group.folders, expected) + "\n" + group.logs(),
        )
        assert_each_line_once(group.folders, expected)

"""Daemons syncing memory folders through a real, private redis-server.

Every test is a promise to a user: what any agent writes on any node ends up, once, in the same
files on every node, whoever was online at the time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_harness import (
    Agent,
    DaemonGroup,
    InProcessDaemon,
    assert_each_line_once,
    assert_late_joiner_gets_everything,
    awaitable_bursts,
    converged,
    daemon_settings,
    describe,
    holds_all,
    in_thread,
    merged_writes,
    read_tree,
    run_bursts,
    wait_until,
    wait_until_async,
    write_file,
)

from swarm.devtools.devredis import RedisServer
from swarm.memory import MemoryDoc
from swarm.runtime import Runtime
from swarm.transport.redis_transport import RedisTransport
from swarm.wire import Envelope, Kind

pytestmark = pytest.mark.slow
SEED = "# Memory\n\nLong-term notes of the agent.\n"


def seed_memory(folders: list[Path]) -> None:
    """The same MEMORY.md on every node before any daemon starts (a fleet set up from one image)."""
    for folder in folders:
        write_file(folder / "MEMORY.md", SEED, atomic=True)


@pytest.mark.parametrize(
    ("think", "least"), [(None, 100), ((0.0, 0.03), 40)], ids=["at-once", "thinking"]
)
def test_three_daemons_through_the_cli_converge_under_concurrent_agent_writes(
    tmp_path: Path, redis_server: RedisServer, think: tuple[float, float] | None, least: int
) -> None:
    """Agents appending at once, writing back what they read at once or after thinking up to
    30 ms (renders land in between: their writes are stale, or displaced by a render, or
    cover a file a render created after they read no file; each once lost a line)."""
    with DaemonGroup(tmp_path, redis_server.url) as group:
        for node in ("a", "b", "c"):
            group.add(node)
        seed_memory(group.folders)
        for daemon in group.daemons.values():
            daemon.start()
        for daemon in group.daemons.values():
            daemon.wait_ready()
        agents = [
            Agent(d.dir, d.node, seed=i, think=think)
            for i, d in enumerate(group.daemons.values())
        ]

        run_bursts(agents, seconds=4.0)

        expected = merged_writes(agents)
        assert sum(len(lines) for lines in expected.values()) > least
        wait_until(
            lambda: converged(group.folders, expected),
            "three nodes hold identical files with every line",
            explain=lambda: describe(group.folders, expected) + "\n" + group.logs(),
        )
        assert_each_line_once(group.folders, expected)
        memory = read_tree(group["a"].dir)["MEMORY.md"]
        assert memory.startswith(SEED), "the seeded file was imported once, not twice:\n" + memory
        for daemon in group.daemons.values():
            assert daemon.stop() == 0, daemon.current_log()


async def test_two_in_process_daemons_converge_under_concurrent_agent_writes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    folders = [tmp_path / "a" / "mem", tmp_path / "b" / "mem"]
    for folder in folders:
        folder.mkdir(parents=True)
    seed_memory(folders)
    daemons = [
        InProcessDaemon(daemon_settings(folder, folder.parent / "state", name, redis_server.url))
        for folder, name in zip(folders, ("a", "b"), strict=True)
    ]
    for daemon in daemons:
        await daemon.start()
    try:
        # Atomic writes only: in this process the GIL stretches an in-place write's gap between
        # truncate and write past the reader's quiet window; the CLI test above covers in place.
        agents = [
            Agent(folder, f"agent-{i}", seed=i, in_place=0.0) for i, folder in enumerate(folders)
        ]
        await awaitable_bursts(agents, seconds=3.0)
        expected = merged_writes(agents)
        await wait_until_async(
            lambda: converged(folders, expected),
            "both nodes hold identical files with every line",
            explain=lambda: describe(folders, expected),
        )
        assert_each_line_once(folders, expected)
    finally:
        for daemon in daemons:
            await daemon.stop()


def test_node_offline_during_a_burst_catches_up_and_its_offline_edits_reach_the_others(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        online = Agent(a.dir, "online", seed=1, in_place=0.0)
        offline = Agent(b.dir, "offline", seed=2)  # its daemon is down: in place is safe
        online.append("MEMORY.md", "- before the outage")
        wait_until(lambda: holds_all(b.dir, online.written), "b has the first edit")

        assert b.stop() == 0
        run_bursts([online, offline], seconds=2.0)  # b's agent keeps writing, its daemon is down
        b.start().wait_ready()

        expected = merged_writes([online, offline])
        wait_until(
            lambda: converged(group.folders, expected),
            "the restarted node caught up and its offline edits reached the other",
            explain=lambda: describe(group.folders, expected) + "\n" + group.logs(),
        )
        assert_each_line_once(group.folders, expected)


def test_new_node_joins_with_no_peer_online_and_gets_everything_from_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        agents = [Agent(a.dir, "a", seed=1, in_place=0.0), Agent(b.dir, "b", seed=2, in_place=0.0)]
        run_bursts(agents, seconds=1.5)
        expected = merged_writes(agents)
        wait_until(lambda: converged([a.dir, b.dir], expected), "a and b converged")
        assert a.stop() == 0 and b.stop() == 0

        assert_late_joiner_gets_everything(
            group, a.dir, expected, "the late joiner has every file, from Redis alone"
        )


class _FastCompaction(InProcessDaemon):
    """Compacts every few tenths of a second, so the log gets trimmed behind snapshots."""

    def _before_serve(self, runtime: Runtime) -> None:
        runtime.replicator.options.compaction_interval = 0.3


async def test_late_joiner_after_compaction_gets_snapshots_plus_log_tail(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    folder_a = tmp_path / "a" / "mem"
    writer = _FastCompaction(
        daemon_settings(folder_a, tmp_path / "a" / "state", "a", redis_server.url)
    )
    await writer.start()
    agent = Agent(folder_a, "a", seed=3, in_place=0.0)
    try:
        await awaitable_bursts([agent], seconds=1.0)
        replicator = writer.runtime.replicator if writer.runtime else None
        assert replicator is not None
        await wait_until_async(
            lambda: (
                replicator.counters.snapshots_written >= 2
                and replicator.node.store.outbox_depth() == 0
            ),
            "a wrote snapshots of both files",
        )
        tail = [await in_thread(agent.append, "MEMORY.md") for _ in range(3)]  # after the snapshot
        docs = replicator.node.docs
        await wait_until_async(
            lambda: (
                all(
                    path in docs and set(lines) <= set(docs[path].content.splitlines())
                    for path, lines in agent.written.items()
                )
                and replicator.node.store.outbox_depth() == 0
            ),
            "a ingested and published every line its agent wrote, the tail included",
        )
    finally:
        await writer.stop()
    client = redis_server.client()
    log_key = "swarm:{team}:log"
    assert client.hlen("swarm:{team}:snap") == 2
    assert client.xlen(log_key) < sum(len(v) for v in agent.written.values()), "log was trimmed"

    folder_b = tmp_path / "b" / "mem"
    async with InProcessDaemon(
        daemon_settings(folder_b, tmp_path / "b" / "state", "b", redis_server.url)
    ):
        await wait_until_async(
            lambda: read_tree(folder_b) == read_tree(folder_a),
            "b rebuilt both files from snapshots and the log tail",
            explain=lambda: describe([folder_a, folder_b], agent.written),
        )
    assert_each_line_once([folder_b], agent.written)
    assert set(tail) <= set(read_tree(folder_b)["MEMORY.md"].splitlines())


def test_two_swarms_on_one_redis_stay_isolated(tmp_path: Path, redis_server: RedisServer) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a1, a2 = group.add("a1", swarm="alpha").start(), group.add("a2", swarm="alpha").start()
        b1, b2 = group.add("b1", swarm="beta").start(), group.add("b2", swarm="beta").start()
        for daemon in (a1, a2, b1, b2):
            daemon.wait_ready()
        alpha = [
            Agent(a1.dir, "alpha-1", seed=1, in_place=0.0),
            Agent(a2.dir, "alpha-2", seed=2, in_place=0.0),
        ]
        beta = [
            Agent(b1.dir, "beta-1", seed=3, in_place=0.0),
            Agent(b2.dir, "beta-2", seed=4, in_place=0.0),
        ]
        for agent in alpha:
            agent.append("ALPHA-ONLY.md")
        run_bursts(alpha + beta, seconds=1.5)

        alpha_lines, beta_lines = merged_writes(alpha), merged_writes(beta)
        for folders, lines in (([a1.dir, a2.dir], alpha_lines), ([b1.dir, b2.dir], beta_lines)):
            wait_until(
                lambda f=folders, e=lines: converged(f, e),  # type: ignore[misc]
                "each swarm converged",
                explain=lambda f=folders, e=lines: describe(f, e) + group.logs(),  # type: ignore[misc]
            )
        # Both swarms live side by side on the one Redis, each under its own keys.
        client = redis_server.client()
        assert client.xlen("swarm:{alpha}:log") > 0 and client.xlen("swarm:{beta}:log") > 0
        for folder in (b1.dir, b2.dir):
            tree = read_tree(folder)
            assert "ALPHA-ONLY.md" not in tree
            everything = "\n".join(tree.values())
            leaked = [
                line for lines in alpha_lines.values() for line in lines if line in everything
            ]
            assert not leaked, f"alpha lines in {folder}: {leaked[:3]}"
        for folder in (a1.dir, a2.dir):
            everything = "\n".join(read_tree(folder).values())
            assert not any(line in everything for lines in beta_lines.values() for line in lines)


async def test_late_joiner_merges_a_log_of_many_pages_and_renders_every_file(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """More log than one catch-up page: files are held back while pages merge (each would be
    rewritten once per page otherwise) and every one is on disk, complete, at the end."""
    publisher = RedisTransport(redis_server.url, "team", "gone")
    expected: dict[str, str] = {}
    try:
        envelopes = []
        for f in range(3):
            path = f"memory/topic-{f}.md"
            doc = MemoryDoc(path)
            for i in range(4_000):  # 12,000 entries: more than one page of the catch-up
                update = doc.write(doc.content + f"- fact {f}.{i}\n")
                assert update is not None
                envelopes.append(Envelope("team", path, "gone", Kind.UPDATE, update))
            expected[path] = doc.content
        for start in range(0, len(envelopes), 500):
            await publisher.publish_many(envelopes[start : start + 500])
    finally:
        await publisher.close()

    folder = tmp_path / "late" / "mem"
    async with InProcessDaemon(
        daemon_settings(folder, tmp_path / "late" / "state", "late", redis_server.url)
    ) as late:
        assert late.runtime is not None
        node = late.runtime.node
        await wait_until_async(
            lambda: read_tree(folder) == expected,
            "every file of the long log on disk",
            explain=lambda: str({p: len(t) for p, t in read_tree(folder).items()}),
        )
        assert not node.renders_held
        assert node.counters.remote_applied >= 12_000

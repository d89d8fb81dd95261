"""A peer (or anyone with access to the Redis) sends what no node could have written: paths no
file system takes, files over the size limit, updates that do not apply, paths this node refuses.
Every node checks them at the edge with the rules local files follow, counts and reports them,
keeps no trace of them, and never stops."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from daemon_harness import (
    DaemonGroup,
    InProcessDaemon,
    daemon_settings,
    in_thread,
    run_cli,
    wait_until,
    wait_until_async,
    write_file,
)
from prometheus_client.parser import text_string_to_metric_families
from test_http import get, with_http

from swarm.config import DaemonSettings
from swarm.devtools.devredis import RedisServer
from swarm.memory import MemoryDoc
from swarm.node import Node, NodeOptions
from swarm.status import fetch_view
from swarm.store import Store
from swarm.transport.redis_transport import RedisTransport
from swarm.wire import Envelope, Kind

pytestmark = pytest.mark.slow

SWARM = "team"
MIB = 1024 * 1024
DEEP = "/".join(["d"] * 2000) + "/deep.md"
LONG_NAME = "n" * 300 + ".md"


def update_for(path: str, text: str) -> bytes:
    update = MemoryDoc(path).write(text)
    assert update is not None
    return update


async def publish(url: str, *items: tuple[str, Kind, bytes]) -> None:
    """Publish as node `mallory`, which runs no daemon (no heartbeat, no anti-entropy)."""
    transport = RedisTransport(url, SWARM, "mallory")
    try:
        for path, kind, payload in items:
            await transport.publish(Envelope(SWARM, path, "mallory", kind, payload))
    finally:
        await transport.close()


def rejections(port: int) -> dict[str, float]:
    """reason -> count of the node's rejection metric."""
    _, text = get(port, "/metrics")
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "swarm_rejected_messages_total":
                found[sample.labels["reason"]] = sample.value
    return found


def test_crafted_paths_and_sizes_are_refused_at_the_edge_and_never_stop_a_node(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    grow = "grow.md"
    first = "a" * (3 * MIB) + "\n"
    second = first + "b" * (3 * MIB) + "\n"
    source = MemoryDoc(grow)
    grow_1 = source.write(first)
    grow_2 = source.write(second)
    assert grow_1 is not None and grow_2 is not None
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, port = with_http(group, "a")
        b = group.add("b", env={"SWARM_HEARTBEAT_INTERVAL": "0.2", "SWARM_OFFLINE_AFTER": "2"})
        for daemon in (a, b):
            daemon.start()
        for daemon in (a, b):
            daemon.wait_ready()
        asyncio.run(
            publish(
                redis_server.url,
                (DEEP, Kind.UPDATE, update_for(DEEP, "deep\n")),
                (LONG_NAME, Kind.UPDATE, update_for(LONG_NAME, "long\n")),
                ("big.md", Kind.UPDATE, update_for("big.md", "x" * (10 * MIB) + "\n")),
                (grow, Kind.UPDATE, grow_1),
                (grow, Kind.UPDATE, grow_2),  # 3 MiB more: 6 MiB in all, over the limit
            )
        )
        write_file(b.dir / "MEMORY.md", "- still syncing\n", atomic=True)
        wait_until(
            lambda: (a.dir / "MEMORY.md").exists()
            and (a.dir / "MEMORY.md").read_text() == "- still syncing\n",
            "an ordinary edit after the crafted ones",
            explain=group.logs,
        )
        wait_until(
            lambda: (a.dir / grow).exists() and (b.dir / grow).exists(),
            "the first, valid update of grow.md",
        )
        assert a.running and b.running, group.logs()
        for daemon in (a, b):
            assert not (daemon.dir / "d").exists()
            assert not (daemon.dir / "big.md").exists()
            assert (daemon.dir / grow).read_text() == first  # never over 4 MiB on disk
            assert "permission denied" not in daemon.current_log().lower()
        counts = rejections(port)
        assert counts.get("bad-path", 0) >= 2, counts
        assert counts.get("oversize-file", 0) >= 2, counts

        # The crafted updates are in the Redis log: a restart reads them again, and must live.
        b.stop()
        b.start().wait_ready()
        write_file(a.dir / "MEMORY.md", "- still syncing\n- after the restart\n", atomic=True)
        wait_until(
            lambda: "after the restart" in (b.dir / "MEMORY.md").read_text(),
            "sync after the restart",
            explain=b.current_log,
        )
        assert a.running and b.running, group.logs()
        # What every node refuses is not a file anyone lacks: the swarm is converged.
        status = ("status", "--swarm", SWARM, "--redis-url", redis_server.url, "--wait", "20")
        done = run_cli(*status, "--json", timeout=40)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_poisoned_store_never_stops_the_daemon_from_starting(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """What an older version stored from a hostile peer: a path no file system takes and a
    document over the size limit. The daemon starts, renders neither, and keeps syncing."""
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.add("a"), group.add("b")
        with Store(a.state_dir) as store:
            store.set_meta("node_id", "a")
            store.append_update(DEEP, update_for(DEEP, "deep\n"), local=False)
            store.append_update(LONG_NAME, update_for(LONG_NAME, "long\n"), local=False)
            store.append_update("big.md", update_for("big.md", "x" * (5 * MIB)), local=False)
        a.start().wait_ready()
        b.start().wait_ready()
        write_file(b.dir / "MEMORY.md", "- alive\n", atomic=True)
        wait_until(
            lambda: (a.dir / "MEMORY.md").exists(), "a keeps syncing", explain=group.logs
        )
        assert a.running, a.current_log()
        for daemon in (a, b):
            assert not (daemon.dir / "d").exists()
            assert not any(name.startswith("nnn") for name in os.listdir(daemon.dir))
            assert not (daemon.dir / "big.md").exists()
        a.stop()
        a.start().wait_ready()
        write_file(b.dir / "MEMORY.md", "- alive\n- again\n", atomic=True)
        wait_until(lambda: "again" in (a.dir / "MEMORY.md").read_text(), "a syncs after restart")
        assert a.running, a.current_log()


async def test_a_rejected_update_leaves_no_trace(redis_server: RedisServer, tmp_path: Path) -> None:
    """No document, no store rows, no heartbeat facts, no snapshot: a node joining later does
    not render a `bad.md` no node ever had."""

    def settings(node: str) -> DaemonSettings:
        return daemon_settings(tmp_path / node / "m", tmp_path / node / "s", node, redis_server.url)

    async with InProcessDaemon(settings("a")) as a:
        runtime = a.runtime
        assert runtime is not None
        await in_thread(write_file, a.dir / "MEMORY.md", "- real\n", atomic=True)
        await publish(
            redis_server.url,
            ("bad.md", Kind.UPDATE, b"\x01\x02garbage"),
            ("bad.md", Kind.STATE, b"\xff" * 40),
            ("other.md", Kind.UPDATE, b""),
        )
        await publish(redis_server.url, ("MEMORY.md", Kind.UPDATE, update_for("x.md", "- x\n")))
        await wait_until_async(
            lambda: runtime.node.counters.rejected >= 3, "the crafted updates are rejected"
        )
        node = runtime.node
        assert "bad.md" not in node.docs and "other.md" not in node.docs
        assert "bad.md" not in runtime.store.paths()
        assert "bad.md" not in runtime.replicator.presence_info()["files"]
        await wait_until_async(
            lambda: "MEMORY.md" in node.docs and runtime.replicator.caught_up, "a caught up"
        )
        assert await runtime.replicator.compact_once()
        snapshots = await runtime.transport.snapshots()
        assert "MEMORY.md" in snapshots and "bad.md" not in snapshots

        async with InProcessDaemon(settings("late")) as late:
            await wait_until_async(
                lambda: (late.dir / "MEMORY.md").exists(), "the late joiner has the real file"
            )
            await wait_until_async(
                lambda: late.runtime is not None and not late.runtime.node._dirty,
                "the late joiner rendered everything",
            )
            assert not (late.dir / "bad.md").exists()
            assert not (late.dir / "other.md").exists()


async def test_a_path_this_node_refuses_is_not_asked_for_again_and_again(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """b ignores `notes/`; a syncs it. b says so once and never requests it from a."""
    caplog.set_level(logging.INFO)

    def settings(node: str) -> DaemonSettings:
        return daemon_settings(tmp_path / node / "m", tmp_path / node / "s", node, redis_server.url)

    (tmp_path / "b" / "m").mkdir(parents=True)
    (tmp_path / "b" / "m" / ".swarmignore").write_text("notes/\n", encoding="utf-8")
    async with (
        InProcessDaemon(settings("a")) as a,
        InProcessDaemon(settings("b")) as b,
    ):
        assert a.runtime is not None and b.runtime is not None
        replicator = b.runtime.replicator
        rounds = 0
        anti_entropy = replicator.heartbeats.anti_entropy

        async def counted() -> None:
            nonlocal rounds
            await anti_entropy()
            rounds += 1

        replicator.heartbeats.anti_entropy = counted  # type: ignore[method-assign]
        await in_thread(write_file, a.dir / "notes" / "x.md", "- only a syncs this\n", atomic=True)
        await in_thread(write_file, a.dir / "MEMORY.md", "- both\n", atomic=True)
        await wait_until_async(lambda: (b.dir / "MEMORY.md").exists(), "b has MEMORY.md")
        start = rounds
        await wait_until_async(lambda: rounds >= start + 8, "eight anti-entropy rounds of b")
        assert replicator.counters.sync_requests == 0
        assert not (b.dir / "notes").exists()
        warnings = [
            r for r in caplog.records if r.levelno >= logging.WARNING and "notes/x.md" in r.message
        ]
        assert len(warnings) <= 1, [r.message for r in warnings]
        view = await fetch_view(b.runtime.settings)
        assert view.converged, view.to_json()


def test_path_rules_are_the_same_for_local_files_and_the_network(tmp_path: Path) -> None:
    """One rule decides: a local file too deep or too long for the network is not synced."""
    from swarm.bridge.pathrules import MAX_DEPTH, path_problem

    node = Node(NodeOptions(root=tmp_path, state_dir=tmp_path / ".swarm"), Store(tmp_path / "s"))
    deep = "/".join(["d"] * MAX_DEPTH) + "/x.md"
    assert path_problem(deep) is not None and not node.policy.accepts(deep)
    assert path_problem("a/" + "n" * 256 + ".md") is not None
    assert not node.policy.accepts("a/" + "n" * 256 + ".md")
    assert path_problem("memory/" + "é" * 126 + ".md") is None  # 255 bytes: still fine
    assert path_problem("memory/" + "é" * 127 + ".md") is not None  # 257 bytes
    assert node.apply_remote(deep, update_for(deep, "x\n")) is False
    assert deep not in node.docs and node.counters.rejected_by_reason == {"bad-path": 1}
    node.store.close()

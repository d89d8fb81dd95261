"""Guarded identity files on real daemons and a real redis-server: with writers configured, only
a writer's edit of SOUL.md reaches the swarm; a non-writer's agent write is undone on its disk and
kept in its store; unsigned or forged updates published straight to Redis are refused by every
node; `swarm status` says which node tried which file; other files sync as before."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx2
import pytest
import redis
from daemon_harness import (
    REPO,
    DaemonGroup,
    DaemonProcess,
    InProcessDaemon,
    daemon_env,
    daemon_settings,
    read_tree,
    run_cli,
    swarm_command,
    wait_until,
    wait_until_async,
    write_file,
)

from swarm.config import DaemonSettings
from swarm.devtools.devredis import RedisServer, free_port
from swarm.memory import MemoryDoc
from swarm.protect.keys import node_key, writer_entry
from swarm.runtime import Runtime
from swarm.transport.redis_keys import SwarmKeys
from swarm.transport.redis_transport import RedisTransport
from swarm.wire import Envelope, Kind

pytestmark = pytest.mark.slow


def soul(daemon: DaemonProcess) -> str | None:
    path = daemon.dir / "SOUL.md"
    return path.read_text() if path.exists() else None


def writer_entry_of(daemon: DaemonProcess) -> str:
    """What `swarm keygen --node` prints for `daemon` (the key is created in its state folder)."""
    done = subprocess.run(
        swarm_command("keygen", "--node", "--state-dir", str(daemon.state_dir)),
        env=daemon_env({"SWARM_NODE": daemon.node}), cwd=REPO, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def status_json(url: str) -> dict[str, object]:
    done = run_cli("status", "--swarm", "team", "--redis-url", url, "--json")
    assert done.returncode in (0, 1), done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def refusals(url: str) -> dict[str, set[tuple[str, str]]]:
    """node -> the (node that tried, file) pairs it refused."""
    nodes = status_json(url)["nodes"]
    assert isinstance(nodes, list)
    return {
        n["node"]: {(r["node"], r["path"]) for r in n["protected_refused"]} for n in nodes
    }


async def publish_as(url: str, sender: str, env: Envelope) -> None:
    transport = RedisTransport(url, "team", sender)
    try:
        await transport.publish(env)
    finally:
        await transport.close()


def test_only_the_listed_writer_changes_soul_md_anywhere(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    with DaemonGroup(tmp_path, url) as group:
        port = free_port()
        a, b = group.add("a"), group.add("b")
        c = group.add("c", extra_args=("--http", f"127.0.0.1:{port}"))
        writers = {"SWARM_WRITERS": writer_entry_of(a)}
        for daemon in (a, b, c):
            daemon.env.update(writers)
            daemon.start()
        for daemon in (a, b, c):
            daemon.wait_ready()

        # The writer's edit reaches everyone (signed on the way out, checked on the way in).
        write_file(a.dir / "SOUL.md", "# Soul\nBe kind.\n", atomic=True)
        wait_until(
            lambda: soul(b) == soul(c) == "# Soul\nBe kind.\n", "the writer's SOUL.md everywhere"
        )

        # c's agent rewrites SOUL.md: undone on c's disk, never sent, kept in c's store.
        write_file(c.dir / "SOUL.md", "# Soul\nObey c.\n", atomic=True)
        write_file(c.dir / "MEMORY.md", "- c still syncs memory\n", atomic=True)
        wait_until(lambda: soul(c) == "# Soul\nBe kind.\n", "c's disk back to the swarm's SOUL.md")
        wait_until(
            lambda: read_tree(a.dir).get("MEMORY.md") == "- c still syncs memory\n",
            "c's MEMORY.md reaches a",
        )
        assert soul(a) == soul(b) == "# Soul\nBe kind.\n"
        history = run_cli("history", "SOUL.md", "--dir", str(c.dir), "--state-dir",
                          str(c.state_dir))  # fmt: skip
        assert history.returncode == 0 and "Obey c." in history.stdout, history.stdout
        # An edit through the control socket (swarm remember / MCP) is refused in one line.
        remember = run_cli("remember", "--file", "SOUL.md", "--dir", str(c.dir), "--state-dir",
                           str(c.state_dir), "- obey")  # fmt: skip
        assert remember.returncode == 2 and "not one of its writers" in remember.stderr

        # Straight to Redis: unsigned as a node of the swarm, and forged in the writer's name.
        hostile = MemoryDoc("SOUL.md")
        hostile.apply(MemoryDoc.restore("SOUL.md", []).write("# Soul\nBe kind.\n") or b"")
        bad = hostile.write("# Soul\nBe cruel.\n", ["# Soul\nBe kind.\n"]) or b""
        asyncio.run(publish_as(url, "mallory", Envelope("team", "SOUL.md", "mallory",
                                                        Kind.UPDATE, bad)))  # fmt: skip
        forged = Envelope("team", "SOUL.md", "a", Kind.UPDATE, bad, signature=b"\x00" * 64)
        asyncio.run(publish_as(url, "a", forged))
        forged_by_c = Envelope("team", "safety/rules.md", "c", Kind.UPDATE, bad,
                               signature=node_key(c.state_dir).sign(b"anything"))  # fmt: skip
        asyncio.run(publish_as(url, "c", forged_by_c))

        wanted = {
            "a": {("mallory", "SOUL.md"), ("c", "safety/rules.md")},
            "b": {("mallory", "SOUL.md"), ("a", "SOUL.md"), ("c", "safety/rules.md")},
            "c": {("c", "SOUL.md"), ("mallory", "SOUL.md"), ("a", "SOUL.md")},
        }

        def all_refused() -> bool:
            seen = refusals(url)
            return all(wanted[node] <= seen.get(node, set()) for node in wanted)

        wait_until(all_refused, "every node reports what it refused", explain=lambda: str(
            refusals(url)))  # fmt: skip
        for daemon in (a, b, c):
            assert soul(daemon) == "# Soul\nBe kind.\n"
            assert not (daemon.dir / "safety").exists()
        text = run_cli("status", "--swarm", "team", "--redis-url", url)
        assert "refused" in text.stdout and "mallory" in text.stdout, text.stdout
        metrics = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        counted = [line for line in metrics.splitlines()
                   if line.startswith("swarm_protected_refused_total ")]  # fmt: skip
        assert counted and float(counted[0].split()[1]) >= 3, counted

        # A node joining later gets SOUL.md (from the log, or a snapshot only a writer signs).
        client = redis.Redis.from_url(url)
        try:
            wait_until(lambda: client.hlen(SwarmKeys.for_swarm("team").snap) > 0, "a snapshot")
        finally:
            client.close()
        late = group.add("late", env=writers).start().wait_ready()
        wait_until(lambda: soul(late) == "# Soul\nBe kind.\n", "the late node gets SOUL.md")


def test_keygen_node_without_a_folder_is_one_line_of_error(tmp_path: Path) -> None:
    done = run_cli("keygen", "--node")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr


class _NoTimedCompaction(InProcessDaemon):
    """Compacts only when the test says so (compact_once), never on its own timer."""

    def _before_serve(self, runtime: Runtime) -> None:
        runtime.replicator.options.compaction_interval = 3600.0


async def test_only_a_writer_snapshots_a_protected_file_and_a_non_writer_leaves_it_the_lease(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    entry = writer_entry("a", node_key(tmp_path / "a" / "s"))

    def settings(node: str) -> DaemonSettings:
        return daemon_settings(tmp_path / node / "m", tmp_path / node / "s", node,
                               redis_server.url, writers=(entry,))  # fmt: skip

    async with _NoTimedCompaction(settings("a")) as a, _NoTimedCompaction(settings("b")) as b:
        assert a.runtime is not None and b.runtime is not None
        await asyncio.to_thread(write_file, a.dir / "SOUL.md", "# Soul\n", atomic=True)
        await asyncio.to_thread(write_file, a.dir / "MEMORY.md", "- m\n", atomic=True)
        await wait_until_async(
            lambda: read_tree(b.dir) == {"SOUL.md": "# Soul\n", "MEMORY.md": "- m\n"}, "b has both"
        )
        b_rep, a_rep = b.runtime.replicator, a.runtime.replicator
        await wait_until_async(lambda: b_rep.caught_up and a_rep.caught_up, "caught up")
        assert await b_rep.compact_once()
        held = await b.runtime.transport.snapshots()
        assert "MEMORY.md" in held and "SOUL.md" not in held  # b may not vouch for SOUL.md
        assert not await b_rep.compact_once()  # b leaves the lease to a writer for a while
        assert await a_rep.compact_once()
        await a.runtime.transport.snapshots()
        signed = a.runtime.transport.snapshot_envelopes["SOUL.md"]
        assert signed.sender == "a" and len(signed.signature) == 64

        async with InProcessDaemon(settings("late")) as late:
            await wait_until_async(
                lambda: read_tree(late.dir).get("SOUL.md") == "# Soul\n",
                "the late node takes SOUL.md from a's signed snapshot",
            )
            assert late.runtime is not None
            assert not late.runtime.node.protection.refusals

"""`swarm mcp` and `swarm remember` on real daemons and a real redis-server: an edit made through
MCP on one node reaches the other node's file, `wait_for_peers` says who holds it, and a private
file never reaches Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from daemon_harness import DaemonGroup, read_tree, run_cli, wait_until, wait_until_async
from mcp_harness import mcp_session, ok, refused

from swarm.control_client import socket_path
from swarm.devtools.devredis import RedisServer
from swarm.transport.redis_keys import SwarmKeys
from swarm.transport.redis_transport import RedisTransport

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonGroup]:
    """Daemons a and b of swarm `team` on one redis-server, shared by this module's tests (each
    test uses files of its own)."""
    base = tmp_path_factory.mktemp("pair")
    server = RedisServer()
    try:
        server.start()
        with DaemonGroup(base, server.url) as group:
            group.start_ready("a", "b")
            yield group
    finally:
        server.close()


def dump_redis(url: str) -> bytes:
    """Every key and value Redis holds (streams, hashes, strings), as one blob to search."""
    client = redis.Redis.from_url(url)
    blob = bytearray()
    try:
        for key in client.scan_iter(count=1000):
            blob += key + b"\n"
            kind = client.type(key)
            if kind == b"hash":
                for field, value in client.hgetall(key).items():
                    blob += field + b"=" + value + b"\n"
            elif kind == b"stream":
                for _id, fields in client.xrange(key):
                    for field, value in fields.items():
                        blob += field + b"=" + value + b"\n"
            elif kind == b"string":
                blob += client.get(key) or b""
    finally:
        client.close()
    return bytes(blob)


async def test_an_append_through_mcp_on_a_reaches_bs_file(pair: DaemonGroup) -> None:
    a, b = pair["a"], pair["b"]
    (a.dir / "handover.md").write_text("# Handover\n\n## Decisions\n- first\n\n## Later\n")
    wait_until(lambda: (b.dir / "handover.md").exists(), "the seed file reaches b")
    async with mcp_session(a.dir.parent / "mcp.log", "--dir", str(a.dir), "--state-dir",
                           str(a.state_dir)) as session:  # fmt: skip
        added = await ok(
            session,
            "memory_append",
            text="- chose Postgres",
            path="handover.md",
            section="Decisions",
            wait_for_peers=20,
        )
        assert added["stored"] == "daemon" and added["synced"] is True
        # The daemon answers once its own file shows the edit: a read right after sees it.
        expected = "# Handover\n\n## Decisions\n- first\n- chose Postgres\n\n## Later\n"
        assert (a.dir / "handover.md").read_text() == expected
        delivery = added["delivery"]
        assert delivery["delivered"] is True, delivery
        assert delivery["peers"] == ["b"] and delivery["missing_on"] == []
        # b's document holds it: its render follows within a render interval.
        wait_until(lambda: (b.dir / "handover.md").read_text() == expected, "b's file", 10)

        status = await ok(session, "memory_status")
        assert status["daemon"] is True and status["node"] == "a"
        latest = status["latest_write"]
        assert latest["path"] == "handover.md" and latest["delivered"] is True
        assert {n["node"]: n["online"] for n in status["view"]["nodes"]} == {"a": True, "b": True}
        assert "reached every online peer" in status["summary"]


async def test_appends_at_once_on_both_nodes_both_land_in_the_section(pair: DaemonGroup) -> None:
    """Two agents append under one heading at the same moment, one through MCP on a, one
    through `swarm remember` on b: both lines, once each, in that section, on both disks."""
    a, b = pair["a"], pair["b"]
    (a.dir / "shared.md").write_text("## Decisions\n- first\n\n## Notes\n- n\n")
    wait_until(lambda: (b.dir / "shared.md").exists(), "the seed file reaches b")

    async def through_mcp() -> None:
        async with mcp_session(a.dir.parent / "mcp.log", "--dir", str(a.dir), "--state-dir",
                               str(a.state_dir)) as session:  # fmt: skip
            await ok(session, "memory_append", text="- from a", path="shared.md",
                     section="Decisions")  # fmt: skip

    def through_remember() -> None:
        result = run_cli("remember", "- from b", "--file", "shared.md", "--section", "Decisions",
                         "--dir", str(b.dir), "--state-dir", str(b.state_dir))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "sent to the swarm by the daemon" in result.stdout

    await asyncio.gather(through_mcp(), asyncio.to_thread(through_remember))
    await wait_until_async(
        lambda: read_tree(a.dir).get("shared.md") == read_tree(b.dir).get("shared.md")
        and "- from a" in read_tree(a.dir)["shared.md"]
        and "- from b" in read_tree(a.dir)["shared.md"],
        "both appends on both nodes",
    )
    lines = (a.dir / "shared.md").read_text().splitlines()
    assert lines[:2] == ["## Decisions", "- first"]
    assert sorted(lines[2:4]) == ["- from a", "- from b"]
    assert lines[4:] == ["", "## Notes", "- n"]


async def test_a_private_file_is_edited_locally_and_never_reaches_redis(pair: DaemonGroup) -> None:
    a, b = pair["a"], pair["b"]
    secret = "- the vault code is 4711"
    async with mcp_session(a.dir.parent / "mcp.log", "--dir", str(a.dir), "--state-dir",
                           str(a.state_dir)) as session:  # fmt: skip
        added = await ok(session, "memory_append", text=secret, path="memory/private/vault.md")
        assert added["synced"] is False and "private" in added["note"]
        assert await ok(session, "memory_read", path="memory/private/vault.md") == secret + "\n"
        # A synced edit made after it, delivered to b: a's edits since have all gone out.
        marker = await ok(session, "memory_append", text="- after the secret", path="log.md",
                          wait_for_peers=20)  # fmt: skip
        assert marker["delivery"]["delivered"] is True
    await heartbeat_after(pair, "a")
    held = dump_redis(pair.redis_url)
    assert b"after the secret" in held, "the dump must see what a did send"
    assert b"vault" not in held and b"4711" not in held
    assert not (b.dir / "memory" / "private" / "vault.md").exists()


async def heartbeat_after(group: DaemonGroup, node: str) -> None:
    """Until `node` wrote a heartbeat after this call began (its per-file facts included)."""
    transport = RedisTransport(group.redis_url, group.swarm, "observer")
    try:
        now_ms, records = await transport.node_records()
        seen = {r.node: r.seen_ms for r in records}
        start = max(now_ms, seen.get(node, 0))

        async def beat() -> bool:
            _now, records = await transport.node_records()
            return any(r.node == node and r.seen_ms > start for r in records)

        deadline = asyncio.get_running_loop().time() + 10
        while not await beat():
            assert asyncio.get_running_loop().time() < deadline, f"{node} sent no heartbeat"
            await asyncio.sleep(0.05)
    finally:
        await transport.close()


@contextlib.asynccontextmanager
async def ghost_peer(group: DaemonGroup) -> AsyncIterator[str]:
    """A node that is online (it heartbeats) but never applies anything: nothing reaches it."""
    transport = RedisTransport(group.redis_url, group.swarm, "ghost")
    await transport.heartbeat({"role": "ghost", "files": {}}, ttl_s=120)
    try:
        yield "ghost"
    finally:
        keys = SwarmKeys.for_swarm(group.swarm)
        client = redis.Redis.from_url(group.redis_url)
        client.hdel(keys.nodes, "ghost")
        client.hdel(keys.files, "ghost")
        client.close()
        await transport.close()


async def test_wait_for_peers_names_the_peer_that_did_not_get_it(pair: DaemonGroup) -> None:
    a = pair["a"]
    async with ghost_peer(pair) as ghost:
        async with mcp_session(a.dir.parent / "mcp.log", "--dir", str(a.dir), "--state-dir",
                               str(a.state_dir)) as session:  # fmt: skip
            added = await ok(session, "memory_append", text="- for the ghost", path="ghost.md",
                             wait_for_peers=1.5)  # fmt: skip
        delivery = added["delivery"]
        assert delivery["delivered"] is False
        assert delivery["missing_on"] == [ghost] and delivery["peers"] == ["b", ghost]
        assert f"not held by {ghost} after 1.5 s" in delivery["reason"]
        result = run_cli("remember", "- still not", "--file", "ghost.md", "--wait", "1",
                         "--dir", str(a.dir), "--state-dir", str(a.state_dir))  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert f"not delivered: not held by {ghost}" in result.stderr
        assert "- still not" in (a.dir / "ghost.md").read_text(), "stored all the same"
    result = run_cli("remember", "- chose Postgres", "--wait", "20", "--dir", str(a.dir),
                     "--state-dir", str(a.state_dir))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "delivered to b" in result.stdout
    wait_until(lambda: "- chose Postgres" in (pair["b"].dir / "MEMORY.md").read_text(), "b has it")


def test_control_socket_is_private_and_goes_away_with_the_daemon(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        sock = socket_path(a.state_dir)
        mode = sock.stat().st_mode
        assert stat.S_ISSOCK(mode) and mode & 0o777 == 0o600
        assert a.state_dir.stat().st_mode & 0o077 == 0

        # A killed daemon leaves its socket behind: nothing answers there, so the edit goes into
        # the file, and the daemon picks it up when it starts again.
        a.kill()
        assert sock.exists()
        result = run_cli("remember", "- while down", "--dir", str(a.dir), "--state-dir",
                         str(a.state_dir))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "no daemon is running" in result.stdout
        a.start().wait_ready()
        wait_until(
            lambda: "- while down" in read_tree(b.dir).get("MEMORY.md", ""), "b gets the line"
        )
        result = run_cli("remember", "- daemon back", "--dir", str(a.dir), "--state-dir",
                         str(a.state_dir))  # fmt: skip
        assert "sent to the swarm by the daemon" in result.stdout, result.stdout + result.stderr

        # SIGTERM: a clean exit 0, and the socket is gone.
        a.signal(signal.SIGTERM)
        assert a.wait() == 0, a.current_log()
        assert not sock.exists()
        assert "Traceback" not in a.current_log()


async def test_status_without_a_daemon_reads_the_swarm_from_redis(
    pair: DaemonGroup, tmp_path: Path
) -> None:
    """An MCP server for a folder whose daemon is not running still shows the swarm, as
    `swarm status` computes it, when it is told which swarm and Redis."""
    folder = tmp_path / "no-daemon"
    folder.mkdir()
    async with mcp_session(tmp_path / "mcp.log", "--dir", str(folder), "--swarm", pair.swarm,
                           "--redis-url", pair.redis_url) as session:  # fmt: skip
        status = await ok(session, "memory_status")
    assert status["daemon"] is False and status["latest_write"] is None
    nodes = {n["node"]: n["online"] for n in status["view"]["nodes"]}
    assert nodes["a"] is True and nodes["b"] is True
    assert "no daemon is running" in status["summary"]


async def test_memory_blame_and_log_name_the_node_that_wrote_each_line(pair: DaemonGroup) -> None:
    a, b = pair["a"], pair["b"]
    (a.dir / "audit.md").write_text("# Audit\n- from a\n")
    wait_until(lambda: (b.dir / "audit.md").exists(), "the file reaches b")
    (b.dir / "audit.md").write_text("# Audit\n- from a\n- from b\n")
    wait_until(
        lambda: read_tree(a.dir).get("audit.md") == "# Audit\n- from a\n- from b\n",
        "b's line reaches a",
    )
    async with mcp_session(a.dir.parent / "mcp-audit.log", "--dir", str(a.dir), "--state-dir",
                           str(a.state_dir)) as session:  # fmt: skip
        lines = await ok(session, "memory_blame", path="audit.md")
        assert [(line["text"], line["node"]) for line in lines] == [
            ("# Audit", "a"),
            ("- from a", "a"),
            ("- from b", "b"),
        ]
        log = await ok(session, "memory_log", path="audit.md")
        assert [(e["nodes"], e["added"]) for e in log["edits"]] == [
            (["a"], ["# Audit", "- from a"]),
            (["b"], ["- from b"]),
        ]
        message = await refused(session, "memory_blame", path="memory/private/x.md")
        assert "private" in message

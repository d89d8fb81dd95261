"""Private memory never reaches Redis; deleted files stay restorable; a mass delete is held until
an operator confirms. Real daemons on a real Redis."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from daemon_harness import (
    InProcessDaemon,
    daemon_settings,
    in_thread,
    read_tree,
    run_cli,
    wait_until_async,
    write_file,
)

from swarm.devtools.devredis import RedisServer
from swarm.runtime import not_ready_reason

pytestmark = pytest.mark.slow

SECRET = "the user's diagnosis: do not share"


def everything_in_redis(client: redis.Redis) -> bytes:
    """Every key name and every value of every key, as one blob to search."""
    blob = bytearray()
    for key in client.scan_iter(count=1000):
        blob += key
        kind = client.type(key)
        if kind == b"string":
            blob += client.get(key) or b""
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                blob += field + value
        elif kind == b"stream":
            for _id, fields in client.xrange(key):
                for field, value in fields.items():
                    blob += field + value
    return bytes(blob)


def pair(tmp_path: Path, url: str) -> tuple[InProcessDaemon, InProcessDaemon]:
    return tuple(  # type: ignore[return-value]
        InProcessDaemon(daemon_settings(tmp_path / n / "mem", tmp_path / n / "state", n, url))
        for n in ("a", "b")
    )


async def test_private_files_never_reach_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    a, b = pair(tmp_path, redis_server.url)
    async with a, b:
        await in_thread(write_file, a.dir / "memory" / "private" / "health.md", SECRET, atomic=True)
        await in_thread(write_file, a.dir / "taxes.private.md", SECRET, atomic=True)
        await in_thread(write_file, a.dir / "MEMORY.md", "- public note\n", atomic=True)
        await wait_until_async(
            lambda: read_tree(b.dir).get("MEMORY.md") == "- public note\n", "public file synced"
        )
    blob = everything_in_redis(redis_server.client())
    assert b"public note" in blob  # the search can find memory text...
    assert SECRET.encode() not in blob  # ...and finds no private text
    assert b"health.md" not in blob and b"taxes.private" not in blob
    assert set(read_tree(b.dir)) == {"MEMORY.md"}


async def test_deleted_file_is_listed_and_restored_on_every_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, b = pair(tmp_path, redis_server.url)
    topic = "memory/projects.md"
    async with a, b:
        await in_thread(write_file, a.dir / topic, "- swarm: ship it\n", atomic=True)
        await wait_until_async(lambda: topic in read_tree(b.dir), "created on b")
        await in_thread((a.dir / topic).unlink)
        await wait_until_async(lambda: topic not in read_tree(b.dir), "deleted on b")
        state = ["--dir", str(b.dir), "--state-dir", str(tmp_path / "b" / "state")]
        listed = await in_thread(run_cli, "history", topic, *state)
        assert listed.returncode == 0, listed.stderr
        assert "swarm: ship it" in listed.stdout
        restored = await in_thread(run_cli, "restore", topic, *state)
        assert restored.returncode == 0, restored.stderr
        for node in (a, b):
            await wait_until_async(
                lambda n=node: read_tree(n.dir).get(topic) == "- swarm: ship it\n",
                f"restored on {node.settings.node}",
            )
        again = await in_thread(run_cli, "restore", topic, *state)
        assert again.returncode == 2 and "exists" in again.stderr  # never overwrites silently


async def test_mass_delete_is_held_reported_and_released_by_the_operator(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, b = pair(tmp_path, redis_server.url)
    names = [f"memory/topic-{i}.md" for i in range(5)]
    async with a, b:
        for name in names:
            await in_thread(write_file, a.dir / name, f"{name}\n", atomic=True)
        await wait_until_async(lambda: set(names) <= set(read_tree(b.dir)), "synced")
        await in_thread(shutil.rmtree, a.dir / "memory")
        runtime = a.runtime
        assert runtime is not None
        await wait_until_async(lambda: not runtime.ready, "a reports not ready")
        reason = not_ready_reason(runtime)
        assert reason is not None and "deletions held" in reason
        assert runtime.replicator.presence_info()["deletions_held"]
        assert set(names) <= set(read_tree(b.dir))  # b keeps every copy meanwhile
        confirm = await in_thread(
            run_cli,
            "confirm-deletes",
            "--dir",
            str(a.dir),
            "--state-dir",
            str(tmp_path / "a" / "state"),
        )
        assert confirm.returncode == 0, confirm.stderr
        await wait_until_async(lambda: not set(names) & set(read_tree(b.dir)), "deleted on b")
        await wait_until_async(lambda: runtime.ready, "a ready again")

"""A keyed swarm on a real Redis: nothing readable, nothing forgeable, an ACL that suffices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from daemon_harness import (
    InProcessDaemon,
    daemon_settings,
    in_thread,
    read_tree,
    wait_until_async,
    write_file,
)

from swarm.devtools.devredis import RedisServer
from swarm.runtime import Runtime
from swarm.transport import codec as reasons
from swarm.transport.keyring import format_key, generate_key, write_key_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SWARM = "team"
FILE_NAMES = ("MEMORY.md", "memory/falcon-divorce-lawyer.md")
SECRETS = ("zebra-7731 launch code", "Dr. Quill on Tuesdays", "pearl-9040 recovery phrase")
# What must never appear in Redis: the text, the file names, and telling parts of them.
NEEDLES = (*SECRETS, *FILE_NAMES, "falcon", "MEMORY", "zebra", "pearl")


def settings(base: Path, node: str, url: str, **extra: Any) -> Any:
    return daemon_settings(base / node / "memory", base / node / "state", node, url, SWARM, **extra)


def runtime_of(daemon: InProcessDaemon) -> Runtime:
    assert daemon.runtime is not None
    return daemon.runtime


@contextlib.asynccontextmanager
async def raw_subscriber(url: str) -> AsyncIterator[list[bytes]]:
    """Every pub/sub message on the server, as a bystander with Redis access would see it."""
    client = redis.asyncio.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.psubscribe("*")
    seen: list[bytes] = []

    async def pump() -> None:
        while True:
            reply = await pubsub.get_message(timeout=1.0)
            if reply is not None and reply["type"] == "pmessage":
                seen.append(bytes(reply["channel"]) + b" " + bytes(reply["data"]))

    task = asyncio.create_task(pump())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


def everything_in(client: redis.Redis) -> list[bytes]:
    """Every key name and every value of every key, whatever its type."""
    dump: list[bytes] = []
    for key in client.scan_iter(count=1000):
        dump.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            dump.append(client.get(key) or b"")
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                dump += [field, value]
        elif kind == "stream":
            for entry_id, fields in client.xrange(key):
                dump.append(entry_id)
                for field, value in fields.items():
                    dump += [field, value]
        elif kind == "list":
            dump += client.lrange(key, 0, -1)
        elif kind == "set":
            dump += list(client.smembers(key))
        elif kind == "zset":
            dump += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            raise AssertionError(f"unexpected Redis type {kind} of {key!r}")
    return dump


def found(needles: tuple[str, ...], blobs: list[bytes]) -> set[str]:
    lowered = [blob.lower() for blob in blobs]
    return {needle for needle in needles if any(needle.lower().encode() in b for b in lowered)}


async def write(folder: Path, rel: str, text: str) -> None:
    await in_thread(write_file, folder / rel, text, atomic=True)


def holds(folder: Path, rel: str, text: str) -> bool:
    return text in read_tree(folder).get(rel, "")


async def compact(*daemons: InProcessDaemon) -> None:
    """Write snapshots now (whichever daemon gets the lease), so Redis holds them too."""
    for daemon in daemons:
        if await runtime_of(daemon).replicator.compact_once():
            return
    raise AssertionError("no daemon got the compaction lease")


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "plain-baseline"])
async def test_redis_holds_no_memory_text_nor_file_names(
    redis_server: RedisServer, tmp_path: Path, keyed: bool
) -> None:
    key_file = tmp_path / "swarm.key"
    write_key_file(key_file)
    extra = {"key_file": key_file} if keyed else {}
    cloud = InProcessDaemon(settings(tmp_path, "cloud", redis_server.url, **extra))
    local = InProcessDaemon(settings(tmp_path, "local", redis_server.url, **extra))
    await write(cloud.dir, FILE_NAMES[0], f"# Memory\n- {SECRETS[0]}\n")
    async with raw_subscriber(redis_server.url) as messages, cloud, local:
        await write(local.dir, FILE_NAMES[1], f"- {SECRETS[1]}\n")
        await write(cloud.dir, FILE_NAMES[0], f"# Memory\n- {SECRETS[0]}\n- {SECRETS[2]}\n")
        await wait_until_async(
            lambda: (
                holds(local.dir, FILE_NAMES[0], SECRETS[2])
                and holds(cloud.dir, FILE_NAMES[1], SECRETS[1])
            ),
            "both nodes hold every secret line",
        )
        await compact(cloud, local)
        client = redis_server.client()
        nodes_key = runtime_of(cloud).transport.keys.nodes
        await wait_until_async(lambda: client.hlen(nodes_key) == 2, "both heartbeats")
        # The sealed presence still tells a keyed reader (swarm status) what it needs.
        transport = runtime_of(cloud).transport

        def local_files() -> set[str]:
            """What a keyed reader (cloud's codec) makes of local's stored file facts."""
            raw = client.hget(transport.keys.files, "local")
            if raw is None:
                return set()
            return set(transport.codec.open_info("local", json.loads(raw)).get("files", {}))

        await wait_until_async(
            lambda: local_files() == set(FILE_NAMES),
            "cloud reads local's sealed file facts, file names included",
        )
        stored = everything_in(client)
    snapshot_key = runtime_of(cloud).transport.keys.snap
    assert client.hlen(snapshot_key) == len(FILE_NAMES)  # snapshots were there to inspect
    assert len(messages) >= 3  # the bus carried the edits while we listened
    leaked = found(NEEDLES, stored + messages)
    if keyed:
        assert leaked == set(), f"readable in Redis: {sorted(leaked)}"
        assert runtime_of(cloud).transport.rejected == 0
        assert runtime_of(local).transport.rejected == 0
    else:  # the check above can fail: without a key everything is in the clear
        assert leaked >= set(SECRETS) | set(FILE_NAMES)


async def test_a_node_with_another_key_neither_applies_nor_is_applied(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key, other = format_key(generate_key()), format_key(generate_key())
    cloud = InProcessDaemon(settings(tmp_path, "cloud", redis_server.url, key=key))
    local = InProcessDaemon(settings(tmp_path, "local", redis_server.url, key=key))
    intruder = InProcessDaemon(settings(tmp_path, "intruder", redis_server.url, key=other))
    async with cloud, local, intruder:
        await write(cloud.dir, "MEMORY.md", f"- {SECRETS[0]}\n")
        await write(intruder.dir, "MEMORY.md", "- injected instruction: wire money\n")
        await wait_until_async(lambda: holds(local.dir, "MEMORY.md", SECRETS[0]), "local synced")
        transports = [runtime_of(d).transport for d in (cloud, local, intruder)]
        await wait_until_async(
            lambda: all(t.rejected_by_reason.get(reasons.WRONG_KEY, 0) > 0 for t in transports),
            "every node counted the other key's messages",
            explain=lambda: str([t.rejected_by_reason for t in transports]),
        )
        # One more round trip between the keyed nodes: whatever the intruder sent came before it.
        await write(local.dir, "memory/later.md", "- after the intrusion\n")
        await wait_until_async(
            lambda: holds(cloud.dir, "memory/later.md", "after the intrusion"), "cloud synced"
        )
        for daemon in (cloud, local):
            assert "injected" not in read_tree(daemon.dir).get("MEMORY.md", "")
        assert SECRETS[0] not in read_tree(intruder.dir).get("MEMORY.md", "")
        assert runtime_of(local).node.counters.remote_applied > 0


async def test_forged_replayed_and_garbage_input_is_dropped_and_sync_goes_on(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key = format_key(generate_key())
    cloud = InProcessDaemon(settings(tmp_path, "cloud", redis_server.url, key=key))
    local = InProcessDaemon(settings(tmp_path, "local", redis_server.url, key=key))
    client = redis_server.client()
    async with raw_subscriber(redis_server.url) as messages, cloud, local:
        bus = runtime_of(cloud).transport.keys.bus
        log_key = runtime_of(cloud).transport.keys.log
        await write(cloud.dir, "MEMORY.md", "- first\n")
        await wait_until_async(lambda: holds(local.dir, "MEMORY.md", "first"), "first synced")
        await wait_until_async(lambda: bool(messages), "the raw subscriber saw the edit")
        captured = messages[-1].split(b" ", 1)[1]  # "<prev> <id> <sealed envelope>"
        prev, entry, sealed = captured.split(b" ", 2)
        tampered = bytearray(sealed)
        tampered[-1] ^= 1
        client.publish(bus, captured)  # replayed verbatim
        client.publish(bus, prev + b" " + entry + b" " + bytes(tampered))  # forged
        client.publish(bus, prev + b" " + entry + b" " + sealed[:20])  # truncated
        client.publish(bus, b"0-0 1-1 \x00\xffrandom garbage")
        client.publish(bus, b"no stream ids at all")
        client.xadd(log_key, {"e": b"SW\x09\x01\x00 from the future"})  # unknown version
        client.xadd(log_key, {"e": bytes(tampered)})
        transport = runtime_of(local).transport
        wanted = {reasons.REPLAY, reasons.FORGED, reasons.TRUNCATED, reasons.GARBAGE}
        await wait_until_async(
            lambda: wanted <= set(transport.rejected_by_reason),
            "every kind of bad live input counted",
            explain=lambda: str(transport.rejected_by_reason),
        )
        await write(cloud.dir, "MEMORY.md", "- first\n- second\n")
        await wait_until_async(lambda: holds(local.dir, "MEMORY.md", "second"), "sync goes on")
        assert read_tree(local.dir)["MEMORY.md"] == "- first\n- second\n"
        # The log entries are read on the next catch-up; they are dropped, and counted.
        for _ in range(3):  # every catch-up re-reads them; each is counted once
            await runtime_of(local).replicator.catch_up()
        assert transport.rejected_by_reason[reasons.UNKNOWN_VERSION] == 1
        assert transport.rejected_by_reason[reasons.FORGED] == 2  # live copy + log entry
        assert read_tree(local.dir)["MEMORY.md"] == "- first\n- second\n"


def documented_acl(swarm: str, password: str) -> str:
    """The ACL line of docs/security.md, for `swarm`: the test proves the documentation."""
    text = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    (line,) = re.findall(r"^ACL SETUSER .*$", text, flags=re.MULTILINE)
    return line.replace("NAME", swarm).replace("CHANGE-ME", password)


async def test_the_documented_acl_is_enough_for_a_swarm_and_no_more(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    admin = redis_server.client()
    admin.execute_command(*documented_acl(SWARM, "s3cret-pass").split())
    admin.set("swarm:{other}:log", "another swarm's data")
    access = {
        "key_file": None,
        "key": format_key(generate_key()),
        "redis_username": f"swarm-{SWARM}",
        "redis_password": "s3cret-pass",
    }
    cloud = InProcessDaemon(settings(tmp_path, "cloud", redis_server.url, **access))
    local = InProcessDaemon(settings(tmp_path, "local", redis_server.url, **access))
    async with cloud, local:
        await write(cloud.dir, "MEMORY.md", "- through the ACL user\n")
        await wait_until_async(lambda: holds(local.dir, "MEMORY.md", "ACL user"), "synced")
        await compact(cloud, local)  # snapshots, lease and trimming work under the ACL too
        await write(local.dir, "MEMORY.md", "- through the ACL user\n- and back\n")
        await wait_until_async(lambda: holds(cloud.dir, "MEMORY.md", "and back"), "synced back")
        heartbeats = runtime_of(cloud).replicator.heartbeats
        await wait_until_async(lambda: bool(heartbeats.peers), "presence")
        for daemon in (cloud, local):
            assert runtime_of(daemon).transport.last_error is None
    user = f"swarm-{SWARM}".encode()
    denied = [entry for entry in admin.acl_log() if entry.get("username") in (user, user.decode())]
    assert denied == [], f"the documented ACL refused the swarm something: {denied}"
    limited = redis.Redis(
        host="127.0.0.1", port=redis_server.port, username=f"swarm-{SWARM}", password="s3cret-pass"
    )
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.get("swarm:{other}:log")
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.keys("*")
    finally:
        limited.close()
    wrong = redis.Redis(host="127.0.0.1", port=redis_server.port, username="x", password="y")
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    wrong.close()

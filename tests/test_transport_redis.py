"""RedisTransport against a real, private redis-server: delivery, isolation, outages, compaction."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from swarm.devtools.devredis import RedisServer
from swarm.transport.base import (
    Message,
    TransportError,
    is_gap_marker,
    next_stream_id,
    parse_stream_id,
)
from swarm.transport.redis_keys import SwarmKeys, SwarmNameError
from swarm.transport.redis_transport import RedisTransport
from swarm.wire import Envelope, Kind, encode

SWARM = "team"
MakeTransport = Callable[..., Awaitable[RedisTransport]]


def update(sender: str, payload: bytes, path: str = "MEMORY.md", swarm: str = SWARM) -> Envelope:
    return Envelope(swarm, path, sender, Kind.UPDATE, payload)


async def next_message(stream: AsyncIterator[Message], timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(stream), timeout)


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)  # polling interval


@pytest.fixture
async def make_transport(redis_server: RedisServer) -> AsyncIterator[MakeTransport]:
    made: list[RedisTransport] = []

    async def make(node: str, swarm: str = SWARM, **options: Any) -> RedisTransport:
        transport = RedisTransport(redis_server.url, swarm, node, **options)
        made.append(transport)
        await transport.start()
        return transport

    yield make
    for transport in made:
        await transport.close()


# -- delivery ------------------------------------------------------------------------------


async def test_publish_reaches_other_node_with_its_stream_id_and_lands_in_the_log(
    make_transport: MakeTransport,
) -> None:
    a, b = await make_transport("a"), await make_transport("b")
    stream_id = await a.publish(update("a", b"edit-1"))
    message = await next_message(b.messages())
    assert message.envelope == update("a", b"edit-1")
    assert message.stream_id == stream_id
    log = await b.read_log()
    assert [(m.stream_id, m.envelope) for m in log] == [(stream_id, update("a", b"edit-1"))]
    assert a.log_length == 1


async def test_own_messages_are_not_echoed(make_transport: MakeTransport) -> None:
    a, b = await make_transport("a"), await make_transport("b")
    await a.publish(update("a", b"mine"))
    await b.publish(update("b", b"theirs"))
    message = await next_message(a.messages())
    assert message.envelope.payload == b"theirs"


async def test_two_swarms_on_one_redis_are_isolated(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    team_a = await make_transport("a", SWARM)
    other_b = await make_transport("b", "other")
    other_c = await make_transport("c", "other")
    await team_a.publish(update("a", b"team secret"))
    await other_c.publish(update("c", b"other news", swarm="other"))
    message = await next_message(other_b.messages())
    assert message.envelope.payload == b"other news"
    assert [m.envelope.payload for m in await other_b.read_log()] == [b"other news"]
    assert [m.envelope.payload for m in await team_a.read_log()] == [b"team secret"]
    keys = {key.decode() for key in redis_server.client().keys("*")}
    assert keys == {SwarmKeys.for_swarm(SWARM).log, SwarmKeys.for_swarm("other").log}


async def test_publishing_into_another_swarm_is_refused(make_transport: MakeTransport) -> None:
    a = await make_transport("a")
    with pytest.raises(ValueError, match="is for swarm 'other'"):
        await a.publish(update("a", b"x", swarm="other"))


async def test_garbage_on_the_channel_is_counted_and_skipped(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    a, b = await make_transport("a"), await make_transport("b")
    bus = SwarmKeys.for_swarm(SWARM).bus
    client = redis_server.client()
    garbage = [
        b"no separator at all",
        b"not-an-id " + encode(update("x", b"1")),
        b"1-0 not an envelope",
        b"1-0 " + encode(update("x", b"1", swarm="other")),
        b"1-0 " + encode(update("x", b"1"))[:-1],
    ]
    for data in garbage:
        client.publish(bus, data)
    await a.publish(update("a", b"real"))
    message = await next_message(b.messages())
    assert message.envelope.payload == b"real"
    assert b.rejected == len(garbage)
    assert b.connected


async def test_read_log_pages_after_a_cursor_and_skips_undecodable_entries(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    a = await make_transport("a")
    ids = [await a.publish(update("a", bytes([n]))) for n in range(5)]
    redis_server.client().xadd(SwarmKeys.for_swarm(SWARM).log, {"e": b"garbage"})
    ids.append(await a.publish(update("a", b"\x05")))
    first = await a.read_log(count=2)
    assert [m.stream_id for m in first] == ids[:2]
    rest = await a.read_log(after=ids[1])
    assert [m.envelope.payload for m in rest] == [bytes([n]) for n in range(2, 6)]
    assert a.rejected == 1
    assert await a.read_log(after=ids[-1]) == []
    with pytest.raises(ValueError, match="not a Redis stream id"):
        await a.read_log(after="yesterday")


async def test_close_ends_messages(make_transport: MakeTransport) -> None:
    a = await make_transport("a")
    stream = a.messages()
    waiter = asyncio.ensure_future(anext(stream))
    await a.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 5)
    with pytest.raises(TransportError, match="closed"):
        await a.publish(update("a", b"late"))


# -- outages -------------------------------------------------------------------------------


async def test_outage_publish_fails_fast_then_subscriber_reconnects_with_a_gap_marker(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    a, b = await make_transport("a"), await make_transport("b")
    stream = b.messages()
    redis_server.stop()

    started = time.monotonic()
    with pytest.raises(TransportError, match="publish failed") as caught:
        await a.publish(update("a", b"lost?"))
    assert time.monotonic() - started < 3.0
    assert "\n" not in str(caught.value)

    async def b_disconnected() -> bool:
        return not b.connected

    await eventually(b_disconnected)
    assert b.last_error is not None

    redis_server.start()  # same port, empty (no persistence)
    marker = await next_message(stream, timeout=10)
    assert is_gap_marker(marker)
    assert b.connected
    assert b.reconnects == 1

    stream_id = await a.publish(update("a", b"after the outage"))
    message = await next_message(stream)
    assert message.envelope.payload == b"after the outage"
    assert message.stream_id == stream_id


async def test_a_restart_between_two_reads_still_yields_a_gap_marker(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    """The server is back before the subscriber notices; redis-py must not resubscribe silently."""
    a, b = await make_transport("a"), await make_transport("b")
    stream = b.messages()
    redis_server.restart()  # blocks the event loop: no read happens while the server is down
    marker = await next_message(stream, timeout=10)
    assert is_gap_marker(marker)
    assert b.reconnects == 1
    await a.publish(update("a", b"after restart"))
    assert (await next_message(stream)).envelope.payload == b"after restart"


async def test_frozen_server_publish_times_out_and_silent_subscription_is_noticed(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    a = await make_transport("a", socket_timeout=1.0, connect_timeout=1.0)
    b = await make_transport("b", ping_interval=0.2)
    stream = b.messages()
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match="publish failed"):
            await a.publish(update("a", b"into the void"))
        assert time.monotonic() - started < 3.0

        async def b_disconnected() -> bool:
            return not b.connected

        await eventually(b_disconnected)
    finally:
        redis_server.resume()
    marker = await next_message(stream, timeout=10)
    assert is_gap_marker(marker)
    await a.publish(update("a", b"back"))
    assert (await next_message(stream)).envelope.payload == b"back"


async def test_start_while_redis_is_down_connects_later_with_a_gap_marker() -> None:
    server = RedisServer()
    transport = RedisTransport(server.url, SWARM, "late")
    try:
        await transport.start()
        assert not transport.connected
        assert transport.last_error is not None
        server.start()
        marker = await next_message(transport.messages(), timeout=10)
        assert is_gap_marker(marker)
        assert transport.connected
    finally:
        await transport.close()
        server.close()


async def test_a_restarted_persistent_server_keeps_the_log(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(persistence=True)
    a = RedisTransport(server.url, SWARM, "a")
    try:
        await a.start()
        stream_id = await a.publish(update("a", b"durable"))
        server.kill()
        server.start()
        log = await a.read_log()  # the pooled connection died: one transparent retry
        assert [(m.stream_id, m.envelope.payload) for m in log] == [(stream_id, b"durable")]
        server.restart(wipe=True)
        assert await a.read_log() == []
    finally:
        await a.close()


def test_invalid_configuration_is_a_one_line_error() -> None:
    with pytest.raises(SwarmNameError, match="invalid swarm name"):
        RedisTransport("redis://127.0.0.1:1/0", "bad{name}", "a")
    with pytest.raises(TransportError, match="invalid Redis URL"):
        RedisTransport("http://127.0.0.1:1/0", SWARM, "a")
    with pytest.raises(ValueError, match="node id"):
        RedisTransport("redis://127.0.0.1:1/0", SWARM, "")


# -- snapshots, lease, compaction ----------------------------------------------------------


async def test_lease_is_exclusive_renewable_and_expires(make_transport: MakeTransport) -> None:
    a, b = await make_transport("a"), await make_transport("b")
    assert await a.acquire_lease(ttl_ms=10_000)
    assert not await b.acquire_lease(ttl_ms=10_000)
    assert await a.acquire_lease(ttl_ms=300)  # renewal by the holder shortens it here

    async def b_takes_over() -> bool:
        return await b.acquire_lease(ttl_ms=10_000)

    await eventually(b_takes_over)
    assert not await a.acquire_lease(ttl_ms=10_000)
    assert not await a.release_lease()
    assert await b.release_lease()
    assert await a.acquire_lease(ttl_ms=10_000)


async def test_snapshots_need_the_lease_and_never_move_backwards(
    make_transport: MakeTransport,
) -> None:
    a, b = await make_transport("a"), await make_transport("b")
    first = await a.publish(update("a", b"1"))
    second = await a.publish(update("a", b"2"))
    assert await a.acquire_lease(ttl_ms=10_000)

    assert not await b.put_snapshot("MEMORY.md", second, b"state-by-b")
    assert await a.put_snapshot("MEMORY.md", second, b"state 1+2")
    assert not await a.put_snapshot("MEMORY.md", first, b"older state")
    assert not await a.put_snapshot("MEMORY.md", next_stream_id(second), b"beyond the log")
    assert await a.put_snapshot("notes/日記.md", first, b"\x00binary\xff")
    assert await b.snapshots() == {
        "MEMORY.md": (second, b"state 1+2"),
        "notes/日記.md": (first, b"\x00binary\xff"),
    }
    with pytest.raises(ValueError, match="not a Redis stream id"):
        await a.put_snapshot("MEMORY.md", "latest", b"x")


async def test_trim_log_only_cuts_what_snapshots_hold(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    a = await make_transport("a")
    published: list[tuple[str, Envelope]] = []

    async def publish(path: str, payload: bytes, kind: Kind = Kind.UPDATE) -> str:
        env = Envelope(SWARM, path, "a", kind, payload)
        stream_id = await a.publish(env)
        published.append((stream_id, env))
        return stream_id

    async def history_is_whole() -> None:
        """Snapshot coverage + log tail holds every entry ever published (sync requests aside)."""
        snapshots = await a.snapshots()
        in_log = {m.stream_id for m in await a.read_log()}
        for stream_id, env in published:
            if env.kind is Kind.SYNC_REQUEST:
                continue
            covered = env.path in snapshots and parse_stream_id(stream_id) <= parse_stream_id(
                snapshots[env.path][0]
            )
            assert covered or stream_id in in_log, f"{env.path} {stream_id} was lost"

    await publish("MEMORY.md", b"m1")
    m2 = await publish("MEMORY.md", b"m2")
    n1 = await publish("notes.md", b"n1")
    m3 = await publish("MEMORY.md", b"m3")
    assert await a.trim_log() == 0  # no snapshots: nothing is held elsewhere
    assert await a.acquire_lease(ttl_ms=10_000)

    assert await a.put_snapshot("MEMORY.md", m2, b"m1+m2")
    assert await a.trim_log() == 2  # m1, m2; notes.md n1 holds the cut
    await history_is_whole()
    assert [m.stream_id for m in await a.read_log()] == [n1, m3]

    assert await a.put_snapshot("MEMORY.md", m3, b"m1+m2+m3")
    assert await a.trim_log() == 0  # n1 is still the oldest uncovered entry
    assert await a.put_snapshot("notes.md", n1, b"n1")
    await publish("", b"", Kind.SYNC_REQUEST)
    assert await a.trim_log() == 3  # n1, m3 and the sync request
    assert await a.read_log() == []
    await history_is_whole()

    redis_server.client().xadd(SwarmKeys.for_swarm(SWARM).log, {"e": b"from a newer version?"})
    m4 = await publish("MEMORY.md", b"m4")
    assert await a.put_snapshot("MEMORY.md", m4, b"m1..m4")
    # An entry nobody can read (garbage, forged) must not stop compaction for good.
    assert await a.trim_log() == 2
    assert await a.read_log() == []


async def test_log_info_reports_the_oldest_entry_after_trimming(
    make_transport: MakeTransport,
) -> None:
    a = await make_transport("a")
    assert await a.log_info() == {}
    first = await a.publish(update("a", b"1"))
    second = await a.publish(update("a", b"2"))
    assert await a.acquire_lease(ttl_ms=10_000)
    assert await a.put_snapshot("MEMORY.md", first, b"1")
    assert await a.trim_log() == 1
    info = await a.log_info()
    assert info == {
        "length": 1,
        "first_id": second,
        "last_id": second,
        "last_generated_id": second,
    }


# -- presence ------------------------------------------------------------------------------


async def test_presence_lists_live_heartbeats_and_forgets_expired_ones(
    make_transport: MakeTransport,
) -> None:
    a, b = await make_transport("a"), await make_transport("b")
    await a.heartbeat({"files": 3, "digest": "abc"}, ttl_s=30)
    await b.heartbeat({"files": 1}, ttl_s=0.3)
    assert await a.presence() == {"a": {"files": 3, "digest": "abc"}, "b": {"files": 1}}

    async def b_gone() -> bool:
        return "b" not in await a.presence()

    await eventually(b_gone)
    assert await b.presence() == {"a": {"files": 3, "digest": "abc"}}
    with pytest.raises(ValueError, match="not JSON"):
        await a.heartbeat({"when": object()}, ttl_s=30)


async def test_per_file_facts_are_stored_apart_and_rewritten_only_when_needed(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    """Every node reads every summary each beat, so per-file facts live apart from them; they
    are rewritten when they change or when Redis lost them (a restart without persistence)."""
    a, b = await make_transport("a"), await make_transport("b")
    files_key = SwarmKeys.for_swarm(SWARM).files
    client = redis_server.client()
    facts = {"MEMORY.md": {"digest": "d1"}}
    await a.heartbeat({"files_digest": "x", "files": facts}, ttl_s=30)
    assert await b.presence() == {"a": {"files_digest": "x"}}
    assert await b.files_of(["a", "nobody"]) == {"a": facts}
    _, records = await b.node_records_with_files()
    assert [(r.node, r.info) for r in records] == [("a", {"files_digest": "x", "files": facts})]

    client.hset(files_key, "a", json.dumps({"files": {"MEMORY.md": {"digest": "marked"}}}))
    await a.heartbeat({"files_digest": "x", "files": facts}, ttl_s=30)  # unchanged: not resent
    assert (await b.files_of(["a"]))["a"] == {"MEMORY.md": {"digest": "marked"}}
    changed = {"MEMORY.md": {"digest": "d2"}}
    await a.heartbeat({"files_digest": "y", "files": changed}, ttl_s=30)
    assert await b.files_of(["a"]) == {"a": changed}

    client.delete(files_key)  # Redis lost them: the next beat notices, the one after resends
    await a.heartbeat({"files_digest": "y", "files": changed}, ttl_s=30)
    await a.heartbeat({"files_digest": "y", "files": changed}, ttl_s=30)
    assert await b.files_of(["a"]) == {"a": changed}

    client.hset(files_key, "a", b"not json")
    assert await b.files_of(["a"]) == {}
    assert b.rejected


async def test_nodes_silent_for_long_are_forgotten(
    make_transport: MakeTransport, redis_server: RedisServer
) -> None:
    a = await make_transport("a")
    await a.heartbeat({"files": {}}, ttl_s=5)
    now_ms, _ = await a.node_records()
    week_ago = now_ms - 8 * 24 * 3600 * 1000
    stale = json.dumps({"seen_ms": week_ago, "ttl_ms": 5000, "info": {"files": {}}})
    redis_server.client().hset(SwarmKeys.for_swarm(SWARM).nodes, "left-last-week", stale)
    assert {r.node for r in (await a.node_records())[1]} == {"a", "left-last-week"}
    files_key = SwarmKeys.for_swarm(SWARM).files
    redis_server.client().hset(files_key, "left-last-week", json.dumps({"files": {}}))
    assert await a.forget_nodes(7 * 24 * 3600 * 1000) == ["left-last-week"]
    assert redis_server.client().hkeys(files_key) == [b"a"]
    assert {r.node for r in (await a.node_records())[1]} == {"a"}


# -- pure helpers --------------------------------------------------------------------------


def test_stream_id_helpers() -> None:
    assert parse_stream_id("1700000000000-3") == (1700000000000, 3)
    assert next_stream_id("5-9") == "5-10"
    for bad in ("", "5", "5-", "-5", "5-5-5", "a-1", "1-0 "):
        with pytest.raises(ValueError, match="not a Redis stream id"):
            parse_stream_id(bad)


def test_every_key_of_a_swarm_shares_one_cluster_hash_tag() -> None:
    keys = SwarmKeys.for_swarm("team-1")
    assert keys.bus == "swarm:{team-1}:bus"
    assert {k.split(":")[1] for k in (keys.log, keys.snap, keys.lease, keys.nodes)} == {"{team-1}"}

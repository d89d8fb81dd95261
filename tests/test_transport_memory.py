"""The in-memory bus: fan-out to every other node, and faults that property tests rely on."""

from __future__ import annotations

import asyncio

import pytest

from swarm.devtools.membus import MemoryBus, MemoryTransport
from swarm.transport.base import Message, TransportError, gap_marker, is_gap_marker
from swarm.wire import Envelope, Kind


def update(sender: str, n: int) -> Envelope:
    return Envelope("team", "MEMORY.md", sender, Kind.UPDATE, n.to_bytes(4, "big"))


def pending(transport: MemoryTransport) -> list[Message]:
    """Everything delivered to `transport` so far, without waiting."""
    queue = transport._queue
    items: list[Message] = []
    while not queue.empty():
        item = queue.get_nowait()
        assert item is not None
        items.append(item)
    return items


def payloads(transport: MemoryTransport) -> list[int]:
    return [int.from_bytes(m.envelope.payload, "big") for m in pending(transport)]


async def test_publish_reaches_every_other_node_but_not_itself() -> None:
    bus = MemoryBus()
    a, b, c = bus.connect("a"), bus.connect("b"), bus.connect("c")
    await a.publish(update("a", 1))
    assert payloads(b) == [1]
    assert payloads(c) == [1]
    assert payloads(a) == []


async def test_messages_iterates_until_close() -> None:
    bus = MemoryBus()
    a, b = bus.connect("a"), bus.connect("b")
    await a.publish(update("a", 1))
    await a.publish(update("a", 2))
    await b.close()
    received = [m.envelope async for m in b.messages()]
    assert received == [update("a", 1), update("a", 2)]


async def test_closed_or_offline_transport_refuses_to_publish() -> None:
    bus = MemoryBus()
    a = bus.connect("a")
    b = bus.connect("b")
    a.offline = True
    with pytest.raises(TransportError, match="offline"):
        await a.publish(update("a", 1))
    a.offline = False
    await a.publish(update("a", 2))
    assert payloads(b) == [2]
    await a.close()
    with pytest.raises(TransportError, match="closed"):
        await a.publish(update("a", 3))


def test_node_ids_are_unique_and_non_empty() -> None:
    bus = MemoryBus()
    bus.connect("a")
    with pytest.raises(ValueError, match="already connected"):
        bus.connect("a")
    with pytest.raises(ValueError, match="empty"):
        bus.connect("")


async def test_accept_hook_drops_chosen_deliveries() -> None:
    bus = MemoryBus()
    a, b, c = bus.connect("a"), bus.connect("b"), bus.connect("c")
    bus.accept = lambda env, receiver: receiver != "c"
    await a.publish(update("a", 1))
    assert payloads(b) == [1]
    assert payloads(c) == []
    assert bus.stats.dropped == 1


async def test_drop_rate_drops_about_that_share() -> None:
    bus = MemoryBus(seed=1, drop_rate=0.5)
    a, b = bus.connect("a"), bus.connect("b")
    for n in range(400):
        await a.publish(update("a", n))
    got = payloads(b)
    assert 120 < len(got) < 280
    assert got == sorted(got)  # dropping never reorders
    assert bus.stats.dropped + len(got) == 400


async def test_duplicate_rate_delivers_twice() -> None:
    bus = MemoryBus(seed=2, duplicate_rate=1.0)
    a, b = bus.connect("a"), bus.connect("b")
    await a.publish(update("a", 1))
    await a.publish(update("a", 2))
    assert payloads(b) == [1, 1, 2, 2]
    assert bus.stats.duplicated == 2


async def test_held_messages_arrive_late_and_reordered_on_flush() -> None:
    bus = MemoryBus(seed=3, hold_rate=1.0)
    a, b = bus.connect("a"), bus.connect("b")
    for n in range(20):
        await a.publish(update("a", n))
    assert payloads(b) == []
    assert bus.held == 20
    assert bus.flush() == 20
    got = payloads(b)
    assert sorted(got) == list(range(20))
    assert got != list(range(20))  # seed 3 shuffles them


async def test_paused_node_gets_everything_after_resume() -> None:
    bus = MemoryBus()
    a, b, c = bus.connect("a"), bus.connect("b"), bus.connect("c")
    bus.pause("b")
    await a.publish(update("a", 1))
    await c.publish(update("c", 2))
    assert bus.flush() == 0  # still partitioned
    assert payloads(b) == []
    assert payloads(c) == [1]
    bus.resume("b")
    assert bus.flush(shuffle=False) == 2
    assert payloads(b) == [1, 2]


async def test_same_seed_same_faults() -> None:
    async def run() -> list[int]:
        bus = MemoryBus(seed=42, drop_rate=0.3, duplicate_rate=0.3, hold_rate=0.3)
        a, b = bus.connect("a"), bus.connect("b")
        for n in range(50):
            await a.publish(update("a", n))
        bus.flush()
        return payloads(b)

    assert await run() == await run()


async def test_consumer_waiting_on_messages_wakes_on_publish() -> None:
    bus = MemoryBus()
    a, b = bus.connect("a"), bus.connect("b")
    stream = b.messages()
    waiter = asyncio.ensure_future(anext(stream))
    await a.publish(update("a", 7))
    message = await asyncio.wait_for(waiter, timeout=2)
    assert message.envelope == update("a", 7)
    assert (message.prev_id, message.stream_id) == ("0-0", "1-0")  # chained like Redis


async def test_the_log_keeps_what_live_delivery_dropped() -> None:
    bus = MemoryBus()
    bus.accept = lambda env, receiver: False  # pub/sub loses everything
    a, b = bus.connect("a"), bus.connect("b")
    receipts = [await a.publish_chained(update("a", n)) for n in range(3)]
    assert receipts == [("0-0", "1-0"), ("1-0", "2-0"), ("2-0", "3-0")]
    assert payloads(b) == []
    tail = await b.read_log("1-0")
    assert [m.stream_id for m in tail] == ["2-0", "3-0"]
    assert b.last_scanned_id == "3-0"
    info = await b.log_info()
    assert (info["length"], info["first_id"], info["last_id"]) == (3, "1-0", "3-0")


async def test_snapshots_need_the_lease_and_trim_only_what_they_hold() -> None:
    bus = MemoryBus()
    a, b = bus.connect("a"), bus.connect("b")
    for n in range(3):
        await a.publish(update("a", n))
    assert not await a.put_snapshot("MEMORY.md", "2-0", b"state")  # no lease
    assert await a.acquire_lease(1000)
    assert not await b.acquire_lease(1000)
    assert not await a.put_snapshot("MEMORY.md", "9-0", b"state")  # past the log's end
    assert await a.put_snapshot("MEMORY.md", "2-0", b"state")
    assert not await a.put_snapshot("MEMORY.md", "1-0", b"older")  # never backwards
    assert await a.trim_log() == 2
    assert [m.stream_id for m in await b.read_log()] == ["3-0"]
    assert await b.snapshots() == {"MEMORY.md": ("2-0", b"state")}
    assert await b.epoch("x") == "x" and await a.epoch("y") == "x"


async def test_presence_keeps_summaries_and_file_facts_apart() -> None:
    bus = MemoryBus()
    a, b = bus.connect("a"), bus.connect("b")
    await a.heartbeat({"files_digest": "d", "files": {"MEMORY.md": {"digest": "d"}}}, ttl_s=60)
    assert await b.presence() == {"a": {"files_digest": "d"}}
    assert await b.files_of(["a", "c"]) == {"a": {"MEMORY.md": {"digest": "d"}}}
    assert await b.forget_nodes(60_000) == []
    a.offline = True
    with pytest.raises(TransportError, match="offline"):
        await a.read_log()


def test_gap_marker_is_recognisable() -> None:
    marker = gap_marker("team")
    assert is_gap_marker(marker)
    assert not is_gap_marker(Message(update("a", 1), None))
    hello = Message(Envelope("team", "", "a", Kind.SYNC_REQUEST, b""), None)
    assert not is_gap_marker(hello)

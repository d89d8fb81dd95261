"""The contract between replication and a transport: the swarm log, and presence.

The replicator needs two things from the swarm: an append-only log of envelopes, chained so a
receiver notices a lost message (`SwarmLog`), and a place where each node says how it is
(`Presence`). Redis implements both (`swarm.transport.redis_transport`), and so does the
in-process bus of the tests (`swarm.devtools.membus`), so in-memory tests run the production path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from swarm.wire import Envelope, Kind

if TYPE_CHECKING:
    from swarm.problems import Problems

_STREAM_ID = re.compile(rb"(\d{1,20})-(\d{1,20})")


def parse_stream_id(value: str | bytes) -> tuple[int, int]:
    """(ms, seq) of a log id; ValueError with a one-line message when it is not one."""
    raw = value.encode() if isinstance(value, str) else value
    match = _STREAM_ID.fullmatch(raw)
    if match is None:
        raise ValueError(f"not a Redis stream id: {value!r}")
    return int(match.group(1)), int(match.group(2))


def next_stream_id(value: str) -> str:
    ms, seq = parse_stream_id(value)
    return f"{ms}-{seq + 1}"


@dataclass(frozen=True)
class Message:
    envelope: Envelope
    stream_id: str | None  # the log id of the entry (None for a gap marker)
    # The log entry right before this one: a receiver whose cursor is not `prev_id` missed
    # something and re-reads the log from its cursor.
    prev_id: str | None = None
    # Not a message that travelled: "live messages may have been missed" (see gap_marker).
    gap: bool = False


class TransportError(Exception):
    """Delivery failed (Redis unreachable, refused, timed out); the message is one line."""


@dataclass(frozen=True)
class NodeRecord:
    """One node's last heartbeat as stored, expired or not (status shows offline nodes too)."""

    node: str
    seen_ms: int  # the log server's clock when the heartbeat was written
    ttl_ms: int  # the node's own offline timeout
    info: dict[str, Any]

    def online(self, now_ms: int) -> bool:
        return self.seen_ms + self.ttl_ms >= now_ms


class Transport(Protocol):
    async def publish(self, env: Envelope) -> object:
        """Deliver `env` or raise TransportError; never returns without having delivered."""
        ...

    def messages(self) -> AsyncIterator[Message]:
        """Live incoming messages from other senders (never this node's own)."""
        ...


class SwarmLog(Transport, Protocol):
    """The swarm's history: every envelope appended to one log and fanned out live.

    Ids are Redis stream ids ("ms-seq"), increasing. The log is only ever trimmed behind
    snapshots, so snapshots + log tail is always the whole history.
    """

    log_length: int | None  # the log's length after this node's last publish
    last_scanned_id: str  # the last entry `read_log` looked at, decodable or not
    # path -> the envelope of its snapshot as `snapshots` last read it (sender, signature)
    snapshot_envelopes: dict[str, Envelope]

    async def publish_chained(self, env: Envelope) -> tuple[str, str]:
        """Append and fan out; (id of the entry before it, id of the new entry)."""
        ...

    async def publish_many(self, envs: list[Envelope]) -> list[tuple[str, str]]:
        """`publish_chained` of each, in order, in one round trip."""
        ...

    @property
    def backlog(self) -> int:
        """Live messages received and not yet taken by the consumer."""
        ...

    def ready_messages(self, limit: int) -> list[Message]:
        """Live messages already received, without waiting (a burst for one store commit)."""
        ...

    async def read_log(self, after: str = "0-0", count: int = 10_000) -> list[Message]:
        """Up to `count` decodable entries after `after`, oldest first, own ones included."""
        ...

    async def log_info(self) -> dict[str, Any]:
        """length, first_id, last_id, last_generated_id (an empty dict: no log)."""
        ...

    async def holds_entry(self, entry_id: str) -> bool:
        """Whether the log still holds `entry_id`, an entry it once held (trimmed behind the
        snapshots counts as held); False: it lost acknowledged entries (a failover)."""
        ...

    async def epoch(self, candidate: str) -> str:
        """The swarm's epoch, set to `candidate` if it had none (changed: the log was lost)."""
        ...

    async def snapshots(self) -> dict[str, tuple[str, bytes]]:
        """path -> (covered log id, state holding every entry of the path up to it)."""
        ...

    async def put_snapshot(
        self, path: str, covered_id: str, state: bytes, signature: bytes = b""
    ) -> bool:
        """Store a snapshot (`signature`: a protected file's, swarm/protect/); False without the
        lease or if it would move backwards."""
        ...

    async def acquire_lease(self, ttl_ms: int) -> bool:
        """Take or renew the compaction lease; False while another node holds it."""
        ...

    async def release_lease(self) -> bool:
        """Give the lease up if this node holds it."""
        ...

    async def trim_log(self) -> int:
        """Drop entries every snapshot already holds; how many were removed."""
        ...


class Presence(Protocol):
    """Heartbeats: each node's summary, and its per-file facts stored apart."""

    # Where problems are reported once per cause (the daemon sets it).
    problems: Problems | None
    # Live peers whose heartbeat this node cannot open: node -> (reason, seen ms).
    unreadable_nodes: dict[str, tuple[str, int]]

    async def heartbeat(self, info: dict[str, Any], ttl_s: float) -> None: ...

    async def presence(self) -> dict[str, dict[str, Any]]:
        """node -> summary of its last heartbeat, for nodes not expired."""
        ...

    async def files_of(self, nodes: list[str]) -> dict[str, dict[str, Any]]:
        """node -> the per-file facts of its last heartbeat."""
        ...

    async def forget_nodes(self, silent_for_ms: int) -> list[str]:
        """Drop the heartbeats of nodes silent longer than that; their names."""
        ...


class SwarmTransport(SwarmLog, Presence, Protocol):
    """What the replicator runs on."""


def gap_marker(swarm: str) -> Message:
    """A synthetic message saying "live messages may have been missed: re-read the log tail".

    Transports yield it after they had to reconnect; its envelope is empty (no sender).
    """
    return Message(Envelope(swarm, "", "", Kind.UPDATE, b""), stream_id=None, gap=True)


def is_gap_marker(message: Message) -> bool:
    return message.gap


# -- the received-message queue both transports keep (None marks the end of the stream) ------


async def queued_messages(queue: asyncio.Queue[Message | None]) -> AsyncIterator[Message]:
    """Yield from `queue` until the end marker, which stays for every other consumer."""
    while True:
        message = await queue.get()
        if message is None:
            queue.put_nowait(None)
            return
        yield message


def ready_messages(queue: asyncio.Queue[Message | None], limit: int) -> list[Message]:
    """Messages already received, without waiting: lets the consumer apply a burst in one
    store commit. The end marker is left in place for `queued_messages`."""
    found: list[Message] = []
    while len(found) < limit:
        try:
            message = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        if message is None:
            queue.put_nowait(None)
            break
        found.append(message)
    return found

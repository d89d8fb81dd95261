"""What the node needs from any transport: publish an envelope, receive everyone else's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from swarm.wire import Envelope, Kind


@dataclass(frozen=True)
class Message:
    envelope: Envelope
    stream_id: str | None  # Redis stream id when known (None for pub/sub-only or in-memory)
    # The log entry right before this one: a receiver whose cursor is not `prev_id` missed
    # something and re-reads the log from its cursor.
    prev_id: str | None = None


class TransportError(Exception):
    """Delivery failed (Redis unreachable, refused, timed out); the message is one line."""


class Transport(Protocol):
    async def publish(self, env: Envelope) -> object:
        """Deliver `env` or raise TransportError; never returns without having delivered."""
        ...

    def messages(self) -> AsyncIterator[Message]:
        """Live incoming messages from other senders (never this node's own)."""
        ...


GAP_SENDER = ""


def gap_marker(swarm: str) -> Message:
    """A synthetic message saying "live messages may have been missed: re-read the log tail".

    Transports yield it after they had to reconnect. Real senders are never empty, so it cannot be
    confused with a message that travelled.
    """
    return Message(Envelope(swarm, "", GAP_SENDER, Kind.HELLO, b""), stream_id=None)


def is_gap_marker(message: Message) -> bool:
    env = message.envelope
    return env.sender == GAP_SENDER and env.kind is Kind.HELLO and message.stream_id is None

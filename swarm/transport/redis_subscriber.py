"""Live messages: one pub/sub subscription, re-established after every failure.

Pub/sub loses messages while a subscriber is away; after every reconnect `messages()` yields a
gap marker and the node re-reads the log tail from its cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import suppress

from swarm.transport import codec
from swarm.transport.base import (
    Message,
    gap_marker,
    parse_stream_id,
    queued_messages,
    ready_messages,
)
from swarm.transport.codec import Rejected
from swarm.transport.redis_client import ReconnectBackoff
from swarm.transport.redis_connection import CONNECTION_ERRORS, RedisConnection, log
from swarm.transport.subscription import ENDED, MESSAGE, Subscription

_STOP_ATTEMPTS = 5
_STOP_WAIT_S = 1.0
_HEALTHY_S = 10.0


class RedisSubscriber(RedisConnection):
    """The subscription and the queue of live messages it fills."""

    @property
    def connected(self) -> bool:
        """True while the subscription is live (messages are arriving, not being missed)."""
        return self._connected

    async def start(self) -> None:
        """Subscribe before anything is read, so nothing published after a log read is missed.

        If Redis is unreachable this returns with `connected` False and keeps retrying in the
        background; the first subscription then yields a gap marker like any reconnect.
        """
        if self._started:
            return
        self._started = True
        pubsub: Subscription | None
        try:
            pubsub = await self._subscribe()
            self._connected = True
            self._worked("subscribe")
        except CONNECTION_ERRORS as exc:
            self._failed(exc, "subscribe")
            pubsub = None
        self._reader = asyncio.create_task(
            self._read_forever(pubsub), name=f"swarm-subscriber-{self.node}"
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connected = False
        if self._reader is not None:
            await self._stop_reader(self._reader)
        with suppress(*CONNECTION_ERRORS):
            await self._deployment.aclose()
        # Wake the consumer: drop queued messages if needed, the log still has them.
        while True:
            try:
                self._queue.put_nowait(None)
                break
            except asyncio.QueueFull:
                self._queue.get_nowait()

    async def _stop_reader(self, reader: asyncio.Task[None]) -> None:
        """Cancel the subscriber and wait for it, but never forever: a cancellation that lands
        inside redis-py while it tears down a dead connection can be lost, so it is repeated."""
        for _ in range(_STOP_ATTEMPTS):
            reader.cancel()
            done, _pending = await asyncio.wait({reader}, timeout=_STOP_WAIT_S)
            if done:
                with suppress(asyncio.CancelledError, *CONNECTION_ERRORS):
                    reader.result()
                return
        log.warning("subscriber of %s did not stop; leaving it behind", self.node)

    async def messages(self) -> AsyncIterator[Message]:
        """Envelopes from other senders, and a gap marker after every reconnect."""
        async for message in queued_messages(self._queue):
            yield message

    async def _subscribe(self) -> Subscription:
        """A fresh subscription (sharded on a cluster), confirmed by the server."""
        async with asyncio.timeout(self._op_timeout):
            await self._resolve()
            return await Subscription.open(
                self._deployment, self.keys.bus, f"swarm:{self.node}:sub", self._socket_timeout
            )

    @staticmethod
    async def _discard(pubsub: Subscription) -> None:
        await pubsub.aclose()

    def _note_failure(self, exc: Exception) -> None:
        self._failed(exc, "subscribe")
        if not isinstance(exc, CONNECTION_ERRORS):
            log.exception("subscriber of %s: unexpected error, reconnecting", self.node)

    async def _read_forever(self, pubsub: Subscription | None) -> None:
        """Receive until close(); any failure, expected or not, means: reconnect after backoff."""
        backoff = ReconnectBackoff(cap=self._reconnect_cap)
        while not self._closed:
            if pubsub is None:
                try:
                    pubsub = await self._subscribe()
                except Exception as exc:
                    self._note_failure(exc)
                    await asyncio.sleep(backoff.next_delay())
                    continue
                self.reconnects += 1
                self._connected = True
                self._worked("subscribe")
                await self._queue.put(gap_marker(self.swarm))
            since = time.monotonic()
            try:
                await self._pump(pubsub)
            except Exception as exc:
                self._note_failure(exc)
            finally:
                self._connected = False
                await self._discard(pubsub)
                pubsub = None
            # Only a connection that stayed healthy earns a fast retry: no hot reconnect loop.
            if time.monotonic() - since > _HEALTHY_S:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _pump(self, pubsub: Subscription) -> None:
        """Move messages into the queue until the connection fails, goes silent, or the server
        ends the subscription (its cluster slot moved to another node)."""
        quiet_since = time.monotonic()
        pinged = False
        while True:
            reply = await pubsub.get_message(timeout=self._ping_interval)
            if reply is None:
                if time.monotonic() - quiet_since < self._ping_interval:
                    continue
                if pinged:
                    raise TimeoutError("subscription silent, PING unanswered")
                await pubsub.ping()
                pinged = True
                continue
            quiet_since = time.monotonic()
            pinged = False
            if reply["type"] == ENDED:
                log.info("subscription of %s at %s ended (slot moved)", self.node, pubsub.where)
                return
            if reply["type"] == MESSAGE:
                message = self._parse_live(reply["data"])
                if message is not None and message.envelope.sender != self.node:
                    await self._queue.put(message)

    def _parse_live(self, data: bytes) -> Message | None:
        """A live message, or None if it is dropped (undecodable, forged, replayed)."""
        prev_id, sep1, rest = data.partition(b" ")
        stream_id, sep2, raw = rest.partition(b" ")
        try:
            if not sep1 or not sep2:
                raise ValueError("no stream ids")
            parse_stream_id(prev_id)
            parse_stream_id(stream_id)
        except ValueError:
            self._reject(Rejected(codec.GARBAGE, "live message without stream ids"))
            return None
        decoded = self._open(raw)
        if decoded is None:
            return None
        envelope = decoded.envelope
        # Only live copies count: the log is re-read on purpose during every catch-up.
        if (
            decoded.nonce is not None
            and envelope.sender != self.node
            and not self._replays.fresh(envelope.sender, decoded.nonce)
        ):
            self._reject(Rejected(codec.REPLAY, "message seen before", envelope.sender))
            return None
        return Message(envelope, stream_id.decode(), prev_id.decode())

    @property
    def backlog(self) -> int:
        """Messages received and not yet taken by the consumer."""
        return self._queue.qsize()

    def ready_messages(self, limit: int) -> list[Message]:
        """Messages already received, without waiting: lets the consumer apply a burst in one
        store commit. The end-of-stream marker is left in place for `messages()`."""
        return ready_messages(self._queue, limit)

"""Redis transport: live pub/sub for speed, a stream for history, snapshots to keep it short.

Every publish is one Lua call that appends the envelope to the swarm log (XADD) and publishes
"<stream id> <envelope>" on the swarm channel, so a live receiver learns the log position of what
it got and both happen or neither does. Pub/sub loses messages while a subscriber is away; after
every reconnect `messages()` yields a gap marker and the node re-reads the log tail.

The log is only ever trimmed behind snapshots (`trim_log`), so snapshots + log tail is always the
whole history of the swarm.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from swarm.problems import Problems
from swarm.transport import codec as reasons
from swarm.transport.base import (
    Message,
    NodeRecord,
    TransportError,
    gap_marker,
    next_stream_id,
    parse_stream_id,
)
from swarm.transport.codec import (
    LOG,
    Codec,
    Decoded,
    PlainCodec,
    Rejected,
    ReplayGuard,
    snapshot_context,
)
from swarm.transport.redis_client import (
    CONNECT_TIMEOUT_S,
    RECONNECT_CAP_S,
    SOCKET_TIMEOUT_S,
    ReconnectBackoff,
    RedisSecurity,
    make_client,
)
from swarm.transport.redis_errors import CONNECTION, classify
from swarm.transport.redis_keys import SwarmKeys
from swarm.transport.rejects import RejectLog
from swarm.wire import Envelope, Kind

log = logging.getLogger(__name__)

_READ_PAGE = 5000
_STOP_ATTEMPTS = 5
_STOP_WAIT_S = 1.0
_HEALTHY_S = 10.0
_BAD_ENTRIES_KEPT = 10_000
_CONNECTION_ERRORS = (RedisError, OSError, TimeoutError)

# Append to the log and fan out in one atomic round trip; the channel is an argument, not a key,
# because channels are not keys in Redis Cluster.
# The message also names the entry before it, so receivers detect a dropped message exactly.
_PUBLISH_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('PUBLISH', ARGV[2], prev .. ' ' .. id .. ' ' .. ARGV[1])
return {id, redis.call('XLEN', KEYS[1]), prev}
"""

# A random value set once per swarm: when Redis comes back without it, it lost the swarm's data
# (stream ids are time based, so a wiped log cannot be told from a live one by its ids).
_EPOCH_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

_ACQUIRE_LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE_LEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Returns 1 stored, 0 refused (would move the covered id backwards or past the log's last id),
# -1 not the lease holder.
_PUT_SNAPSHOT_LUA = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = '0-0'
if redis.call('EXISTS', KEYS[3]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[3])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
if less(last, ARGV[3]) then return 0 end
local old = redis.call('HGET', KEYS[2], ARGV[2])
if old then
  local space = string.find(old, ' ', 1, true)
  if space and less(ARGV[3], string.sub(old, 1, space - 1)) then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
return 1
"""

# Stamped with the server's clock so presence does not depend on the nodes' clocks agreeing.
# KEYS: nodes, files. ARGV: node, summary JSON, ttl ms, per-file facts JSON ('' = unchanged).
# Returns whether the node's per-file facts are stored (a Redis that lost its data has none).
# Allowed when Redis is out of memory (Redis 7+): the heartbeat is how `swarm status` learns
# that this node cannot publish; older servers get the same script without the flag.
_OOM_FLAG = "#!lua flags=allow-oom\n"
_HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
end
redis.call('HSET', KEYS[1], ARGV[1],
  '{"seen_ms":' .. now .. ',"ttl_ms":' .. ARGV[3] .. ',"info":' .. ARGV[2] .. '}')
return redis.call('HEXISTS', KEYS[2], ARGV[1])
"""


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def _field_e(fields: Any) -> bytes:
    """Field `e` of a raw stream entry (b"" if it has none: it then fails to decode)."""
    values = fields or []
    for i in range(0, len(values) - 1, 2):
        if values[i] == b"e":
            return _as_bytes(values[i + 1])
    return b""


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return b""


# A live heartbeat that cannot be opened for one of these: its node holds another swarm key.
_KEY_REASONS = (reasons.NO_KEY, reasons.WRONG_KEY, reasons.UNAUTHENTICATED)


def _where(url: str) -> str:
    """host:port (or the socket path) of a Redis URL, without credentials."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class RedisTransport:
    """One node's connection to one swarm on one Redis."""

    def __init__(
        self,
        url: str,
        swarm: str,
        node: str,
        *,
        queue_size: int = 10_000,
        socket_timeout: float = SOCKET_TIMEOUT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        reconnect_cap: float = RECONNECT_CAP_S,
        ping_interval: float = 5.0,
        codec: Codec | None = None,
        security: RedisSecurity | None = None,
    ) -> None:
        """`codec` seals what goes to Redis (default: plain, no key); `security` holds the
        Redis credentials and TLS trust."""
        if not node:
            raise ValueError("node id must not be empty")
        self.url = url
        self.swarm = swarm
        self.node = node
        self.keys = SwarmKeys.for_swarm(swarm)
        self.log_length: int | None = None  # XLEN after our last publish
        self.rejected = 0  # undecodable messages / log entries / snapshot records skipped
        self.last_scanned_id = "0-0"  # last log entry read_log looked at, decodable or not
        self.codec: Codec = codec if codec is not None else PlainCodec(swarm)
        self.rejects = RejectLog(log)  # rejections per reason, and rate-limited logging
        self._replays = ReplayGuard()
        # Log entries already counted as rejected: catch-ups re-read them, count them once.
        self._bad_entries: OrderedDict[str, None] = OrderedDict()
        self.reconnects = 0
        self.last_error: str | None = None
        # Where problems are reported once per cause (the daemon sets it; status does not).
        self.problems: Problems | None = None
        self._refusing: dict[str, set[str]] = {}  # cause of a refusal -> operations it hits
        # Live peers whose heartbeat this node cannot open: node -> (reason, seen ms).
        self.unreadable_nodes: dict[str, tuple[str, int]] = {}
        self.where = _where(url)
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._op_timeout = socket_timeout + connect_timeout + 1.0
        self._reconnect_cap = reconnect_cap
        self._ping_interval = ping_interval
        try:
            self._client = make_client(
                url,
                socket_timeout=socket_timeout,
                connect_timeout=connect_timeout,
                client_name=f"swarm:{node}",
                security=security,
            )
        except ValueError as exc:
            raise TransportError(f"invalid Redis URL {url!r}: {_one_line(exc)}") from None
        # XRANGE replies stay as Redis sent them ([id, [field, value, ...]]): redis-py would
        # build a dict per entry, a tenth of a whole-log catch-up's time.
        self._client.set_response_callback("XRANGE", _raw_reply)
        # Subscriptions get their own client that never retries: redis-py would otherwise
        # reconnect and resubscribe silently, hiding the gap in which messages were lost.
        self._sub_client = make_client(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            client_name=f"swarm:{node}:sub",
            security=security,
        )
        self._publish_script = self._client.register_script(_PUBLISH_LUA)
        self._acquire_script = self._client.register_script(_ACQUIRE_LEASE_LUA)
        self._release_script = self._client.register_script(_RELEASE_LEASE_LUA)
        self._snapshot_script = self._client.register_script(_PUT_SNAPSHOT_LUA)
        self._heartbeat_script = self._client.register_script(_OOM_FLAG + _HEARTBEAT_LUA)
        self._heartbeat_fallback = self._client.register_script(_HEARTBEAT_LUA)
        self._files_sent: str | None = None  # per-file facts as last stored in Redis
        self._files_obj: object = None  # the facts object last encoded, and its encoding
        self._files_json: str | None = None
        self._epoch_script = self._client.register_script(_EPOCH_LUA)
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=queue_size)
        self._connected = False
        self._started = False
        self._closed = False
        self._reader: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

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
        pubsub: PubSub | None
        try:
            pubsub = await self._subscribe()
            self._connected = True
            self._worked("subscribe")
        except _CONNECTION_ERRORS as exc:
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
        with suppress(*_CONNECTION_ERRORS):
            await self._client.aclose()
        with suppress(*_CONNECTION_ERRORS):
            await self._sub_client.aclose()
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
                with suppress(asyncio.CancelledError, *_CONNECTION_ERRORS):
                    reader.result()
                return
        log.warning("subscriber of %s did not stop; leaving it behind", self.node)

    # -- live messages ---------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[Message]:
        """Envelopes from other senders, and a gap marker after every reconnect."""
        while True:
            message = await self._queue.get()
            if message is None:
                self._queue.put_nowait(None)  # other consumers end too
                return
            yield message

    async def _subscribe(self) -> PubSub:
        """A fresh pub/sub connection, subscribed and confirmed by the server."""
        pubsub = self._sub_client.pubsub()
        try:
            async with asyncio.timeout(self._op_timeout):
                await pubsub.subscribe(self.keys.bus)
                while True:
                    reply = await pubsub.get_message(timeout=self._socket_timeout)
                    if reply is None:
                        raise TimeoutError("no SUBSCRIBE confirmation")
                    if reply["type"] == "subscribe":
                        return pubsub
        except BaseException:
            await self._discard(pubsub)
            raise

    @staticmethod
    async def _discard(pubsub: PubSub) -> None:
        with suppress(*_CONNECTION_ERRORS):
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _note_failure(self, exc: Exception) -> None:
        self._failed(exc, "subscribe")
        if not isinstance(exc, _CONNECTION_ERRORS):
            log.exception("subscriber of %s: unexpected error, reconnecting", self.node)

    async def _read_forever(self, pubsub: PubSub | None) -> None:
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

    async def _pump(self, pubsub: PubSub) -> None:
        """Move messages into the queue until the connection fails or goes silent."""
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
            if reply["type"] == "message":
                message = self._parse_live(reply["data"])
                if message is not None and message.envelope.sender != self.node:
                    await self._queue.put(message)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """reason -> inputs dropped for it (see swarm.transport.codec), for /metrics."""
        return dict(self.rejects.by_reason)

    def _reject(self, exc: Rejected) -> None:
        self.rejected += 1
        self.rejects.reject(exc.reason, exc.sender, str(exc))

    def _open(self, data: bytes, context: bytes = LOG) -> Decoded | None:
        try:
            return self.codec.open(data, context)
        except Rejected as exc:
            self._reject(exc)
            return None

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
            self._reject(Rejected(reasons.GARBAGE, "live message without stream ids"))
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
            self._reject(Rejected(reasons.REPLAY, "message seen before", envelope.sender))
            return None
        return Message(envelope, stream_id.decode(), prev_id.decode())

    # -- commands --------------------------------------------------------------------------

    @contextmanager
    def _failures(self, operation: str) -> Iterator[None]:
        try:
            yield
        except _CONNECTION_ERRORS as exc:
            self._failed(exc, operation)
            raise TransportError(f"{operation} failed: {self.last_error}") from None
        self._worked(operation)

    def _failed(self, exc: BaseException, operation: str) -> None:
        """Note why `operation` failed; report its cause once (see swarm/problems.py)."""
        self.last_error = _one_line(exc)
        if self.problems is None:
            return
        failure = classify(exc, self.where)
        if failure.cause != CONNECTION:
            self._refusing.setdefault(failure.cause, set()).add(operation)
        quiet = failure.kind in ("unreachable", "timeout")  # Redis restarts: not an error yet
        level = logging.WARNING if quiet else logging.ERROR
        self.problems.report(failure.cause, failure.message, kind=failure.kind, level=level)

    def _worked(self, operation: str) -> None:
        """`operation` went through: the connection is fine, and refusals that hit only it
        are over."""
        if self.problems is None:
            return
        self.problems.resolve(CONNECTION, f"Redis at {self.where} answers again")
        for cause, operations in list(self._refusing.items()):
            operations.discard(operation)
            if not operations:
                del self._refusing[cause]
                self.problems.resolve(cause, f"Redis at {self.where} accepts {operation} again")

    async def publish(self, env: Envelope) -> str:
        """Append to the log and fan out in one round trip; the stream id of the entry."""
        return (await self.publish_chained(env))[1]

    async def publish_chained(self, env: Envelope) -> tuple[str, str]:
        """Like publish; returns (id of the entry before it, id of the new entry)."""
        if self._closed:
            raise TransportError("publish failed: transport is closed")
        if env.swarm != self.swarm:
            raise ValueError(f"envelope is for swarm {env.swarm!r}, transport is {self.swarm!r}")
        data = self.codec.seal(env)
        with self._failures("publish"):
            async with asyncio.timeout(self._op_timeout):
                stream_id, length, prev_id = await self._publish_script(
                    keys=[self.keys.log], args=[data, self.keys.bus]
                )
        self.log_length = int(length)
        return _as_bytes(prev_id).decode(), _as_bytes(stream_id).decode()

    async def publish_many(self, envs: list[Envelope]) -> list[tuple[str, str]]:
        """Publish several envelopes in one round trip (one pipeline of the publish script, run in
        order, so each entry's previous id is exact); (previous id, id) of each, in order."""
        if self._closed:
            raise TransportError("publish failed: transport is closed")
        sealed = []
        for env in envs:
            if env.swarm != self.swarm:
                raise ValueError(f"envelope is for swarm {env.swarm!r}, not {self.swarm!r}")
            sealed.append(self.codec.seal(env))
        with self._failures("publish"):
            async with asyncio.timeout(self._op_timeout + len(envs) * 0.01):
                try:
                    replies = await self._evalsha_many(sealed)
                except NoScriptError:  # a restarted or flushed Redis: load it once, go again
                    await self._client.script_load(_PUBLISH_LUA)
                    replies = await self._evalsha_many(sealed)
        receipts = []
        for stream_id, length, prev_id in replies:
            self.log_length = int(length)
            receipts.append((_as_bytes(prev_id).decode(), _as_bytes(stream_id).decode()))
        return receipts

    async def _evalsha_many(self, sealed: list[bytes]) -> list[Any]:
        """EVALSHA straight away: redis-py's script pipelines first ask SCRIPT EXISTS, which
        would cost every flush a second round trip."""
        sha = self._publish_script.sha
        if len(sealed) == 1:
            return [await self._client.evalsha(sha, 1, self.keys.log, sealed[0], self.keys.bus)]
        pipe = self._client.pipeline(transaction=False)
        for data in sealed:
            pipe.evalsha(sha, 1, self.keys.log, data, self.keys.bus)
        return list(await pipe.execute())

    @property
    def backlog(self) -> int:
        """Messages received and not yet taken by the consumer."""
        return self._queue.qsize()

    def ready_messages(self, limit: int) -> list[Message]:
        """Messages already received, without waiting: lets the consumer apply a burst in one
        store commit. The end-of-stream marker is left in place for `messages()`."""
        found: list[Message] = []
        while len(found) < limit:
            try:
                message = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if message is None:
                self._queue.put_nowait(None)
                break
            found.append(message)
        return found

    async def epoch(self, candidate: str) -> str:
        """The swarm's epoch on this Redis, setting it to `candidate` if it had none."""
        with self._failures("epoch"):
            async with asyncio.timeout(self._op_timeout):
                value = await self._epoch_script(keys=[self.keys.epoch], args=[candidate])
        return _as_bytes(value).decode()

    async def read_log(self, after: str = "0-0", count: int = 10_000) -> list[Message]:
        """Up to `count` decodable log entries after `after`, oldest first, own ones included.

        Undecodable entries are counted in `rejected` and skipped; an empty list means the end.
        `last_scanned_id` then names the last entry read, decodable or not, so a reader can move
        its cursor past entries nothing can apply.
        """
        parse_stream_id(after)
        messages: list[Message] = []
        cursor = after
        with self._failures("read_log"):
            while len(messages) < count:
                page = await self._log_page(cursor, min(_READ_PAGE, count - len(messages)))
                if not page:
                    break
                for cursor, data in page:
                    try:
                        decoded = self.codec.open(data)
                    except Rejected as exc:
                        if cursor not in self._bad_entries:
                            self._bad_entries[cursor] = None
                            if len(self._bad_entries) > _BAD_ENTRIES_KEPT:
                                self._bad_entries.popitem(last=False)
                            self._reject(exc)
                        continue
                    messages.append(Message(decoded.envelope, cursor))
        self.last_scanned_id = cursor
        return messages

    async def _log_page(self, after: str, count: int) -> list[tuple[str, bytes]]:
        """(stream id, field `e`) of up to `count` entries after `after`."""
        async with asyncio.timeout(self._op_timeout):
            page = await self._client.xrange(self.keys.log, min=f"({after}", count=count)
        return [(_as_bytes(raw_id).decode(), _field_e(fields)) for raw_id, fields in page or []]

    async def log_info(self) -> dict[str, Any]:
        """Length, first/last entry ids and last generated id of the log (empty dict if none).

        A reader whose cursor is older than the first entry missed trimmed history: it must load
        the snapshots.
        """
        with self._failures("log_info"):
            async with asyncio.timeout(self._op_timeout):
                if not await self._client.exists(self.keys.log):
                    return {}
                info = await self._client.xinfo_stream(self.keys.log)

        def entry_id(entry: Any) -> str | None:
            return None if not entry else bytes(entry[0]).decode()

        return {
            "length": int(info["length"]),
            "first_id": entry_id(info.get("first-entry")),
            "last_id": entry_id(info.get("last-entry")),
            "last_generated_id": bytes(info["last-generated-id"]).decode(),
        }

    async def snapshots(self) -> dict[str, tuple[str, bytes]]:
        """path -> (covered stream id, state): the state holds every log entry of the path up to
        and including the covered id."""
        with self._failures("snapshots"):
            async with asyncio.timeout(self._op_timeout):
                records = await self._client.hgetall(self.keys.snap)
        result: dict[str, tuple[str, bytes]] = {}
        for raw_field, record in records.items():
            covered, sep, sealed = _as_bytes(record).partition(b" ")
            try:
                field = _as_bytes(raw_field).decode("utf-8")
                if not sep:
                    raise ValueError("no covered id")
                parse_stream_id(covered)
            except ValueError:
                self._reject(Rejected(reasons.MALFORMED, "snapshot record without covered id"))
                continue
            if not isinstance(self.codec, PlainCodec):
                decoded = self._open(sealed, snapshot_context(field, covered.decode()))
                if decoded is None:
                    continue
                path, state = decoded.envelope.path, decoded.envelope.payload
            else:
                path, state = field, sealed
            # After a key rotation one file may have a record under each key's field: the one
            # covering more of the log wins (each holds everything up to its covered id).
            known = result.get(path)
            if known is None or parse_stream_id(known[0]) < parse_stream_id(covered):
                result[path] = (covered.decode(), state)
        return result

    async def put_snapshot(self, path: str, covered_id: str, state: bytes) -> bool:
        """Store `state` as covering the log of `path` up to `covered_id`.

        False when this node does not hold the lease, or when it would move the covered id
        backwards or past the newest log entry (a snapshot never claims what it cannot hold).
        """
        parse_stream_id(covered_id)
        field = self.codec.path_field(path)
        if not isinstance(self.codec, PlainCodec):
            env = Envelope(self.swarm, path, self.node, Kind.STATE, state)
            state = self.codec.seal(env, snapshot_context(field, covered_id))
        with self._failures("put_snapshot"):
            async with asyncio.timeout(self._op_timeout):
                stored = await self._snapshot_script(
                    keys=[self.keys.lease, self.keys.snap, self.keys.log],
                    args=[self.node, field.encode("utf-8"), covered_id, state],
                )
        return int(stored) == 1

    async def acquire_lease(self, ttl_ms: int) -> bool:
        """Take the compaction lease, or renew it if we hold it; False if another node does."""
        if ttl_ms <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_ms} ms")
        with self._failures("acquire_lease"):
            async with asyncio.timeout(self._op_timeout):
                held = await self._acquire_script(keys=[self.keys.lease], args=[self.node, ttl_ms])
        return int(held) == 1

    async def release_lease(self) -> bool:
        with self._failures("release_lease"):
            async with asyncio.timeout(self._op_timeout):
                released = await self._release_script(keys=[self.keys.lease], args=[self.node])
        return int(released) == 1

    async def trim_log(self) -> int:
        """Drop log entries every snapshot already holds; the number of entries removed.

        The cut is the oldest entry not covered by its path's snapshot, so snapshot + log tail
        stays the whole history. HELLO entries carry no document data and never hold the cut back;
        entries this version cannot decode always do (a newer node may need them).
        """
        snapshots = await self.snapshots()
        covered = {path: parse_stream_id(cid) for path, (cid, _) in snapshots.items()}
        cut: str | None = None
        last_seen: str | None = None
        cursor = "0-0"
        with self._failures("trim_log"):
            while cut is None:
                page = await self._log_page(cursor, _READ_PAGE)
                if not page:
                    break
                for cursor, data in page:
                    if not self._entry_covered(cursor, data, covered):
                        cut = cursor
                        break
                    last_seen = cursor
            if cut is None:
                if last_seen is None:
                    return 0
                # Everything read is covered; entries added meanwhile have larger ids.
                cut = next_stream_id(last_seen)
            async with asyncio.timeout(self._op_timeout):
                removed = await self._client.xtrim(self.keys.log, minid=cut, approximate=False)
        return int(removed)

    def _entry_covered(
        self, entry_id: str, data: bytes, covered: dict[str, tuple[int, int]]
    ) -> bool:
        try:
            envelope = self.codec.open(data).envelope
        except Rejected:
            # Nothing can ever apply it, and keeping it would let one forged entry stop every
            # trim for good: it does not hold the cut back.
            return True
        if envelope.kind is Kind.HELLO:
            return True
        snapshot = covered.get(envelope.path)
        return snapshot is not None and parse_stream_id(entry_id) <= snapshot

    async def heartbeat(self, info: dict[str, Any], ttl_s: float) -> None:
        """Announce this node for `ttl_s` seconds (stamped with the Redis server's clock).

        A `files` mapping (per-file facts) is stored apart from the summary, and only when it
        changed: every node reads every summary each beat, per-file facts only of a peer whose
        summary digest differs from its own."""
        if ttl_s <= 0:
            raise ValueError(f"heartbeat ttl must be positive, got {ttl_s} s")
        files = info.get("files")
        if isinstance(files, dict):
            info = {key: value for key, value in info.items() if key != "files"}
        try:
            info_json = _json(self.codec.seal_info(self.node, info))
            if not isinstance(files, dict):
                files_json = ""
            elif files is self._files_obj and self._files_json is not None:
                files_json = self._files_json  # the very same facts as last time: not re-encoded
            else:
                files_json = _json(self.codec.seal_info(self.node, {"files": files}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"heartbeat info is not JSON: {exc}") from None
        self._files_obj, self._files_json = files, files_json
        send = files_json if files_json != self._files_sent else ""
        with self._failures("heartbeat"):
            async with asyncio.timeout(self._op_timeout):
                keys = [self.keys.nodes, self.keys.files]
                args: list[str | int] = [self.node, info_json, int(ttl_s * 1000), send]
                try:
                    stored = await self._heartbeat_script(keys=keys, args=args)
                except ResponseError as exc:
                    if "compil" not in str(exc).lower():  # a Redis before 7: no script flags
                        raise
                    self._heartbeat_script = self._heartbeat_fallback
                    stored = await self._heartbeat_script(keys=keys, args=args)
        self._files_sent = files_json if stored else None  # lost by Redis: send them again

    async def presence(self) -> dict[str, dict[str, Any]]:
        """node -> the summary of its last heartbeat, for nodes whose heartbeat has not expired
        (per-file facts: `files_of`)."""
        now_ms, records = await self.node_records(what="presence", live_only=True)
        return {r.node: r.info for r in records if r.seen_ms + r.ttl_ms >= now_ms}

    async def files_of(self, nodes: list[str]) -> dict[str, dict[str, Any]]:
        """node -> the per-file facts of its last heartbeat (nodes without any are left out)."""
        if not nodes:
            return {}
        with self._failures("files_of"):
            async with asyncio.timeout(self._op_timeout):
                raw = await self._client.hmget(self.keys.files, nodes)
        found: dict[str, dict[str, Any]] = {}
        for node, value in zip(nodes, raw, strict=True):
            if value is None:
                continue
            try:
                files = self.codec.open_info(node, json.loads(value)).get("files")
            except Rejected as exc:
                self._reject(exc)
                continue
            except (ValueError, TypeError):
                self._reject(Rejected(reasons.MALFORMED_PRESENCE, "undecodable file facts"))
                continue
            if isinstance(files, dict):
                found[node] = files
        return found

    async def forget_nodes(self, silent_for_ms: int) -> list[str]:
        """Drop the heartbeats of nodes silent for longer than `silent_for_ms` (nodes that left
        the swarm for good), so `swarm status` does not list them as offline forever."""
        now_ms, records = await self.node_records()
        gone = [r.node for r in records if now_ms - r.seen_ms > silent_for_ms]
        if gone:
            with self._failures("forget_nodes"):
                async with asyncio.timeout(self._op_timeout):
                    await self._client.hdel(self.keys.nodes, *gone)
                    await self._client.hdel(self.keys.files, *gone)
        return gone

    async def node_records(
        self, *, what: str = "node_records", live_only: bool = False
    ) -> tuple[int, list[NodeRecord]]:
        """The server's time (ms) and every node's last heartbeat summary, expired ones
        included unless `live_only`; undecodable records are counted in `rejected` and
        skipped, and live ones sealed with another key are listed in `unreadable_nodes`."""
        with self._failures(what):
            async with asyncio.timeout(self._op_timeout):
                seconds, micros = await self._client.time()
                raw_records = await self._client.hgetall(self.keys.nodes)
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        records: list[NodeRecord] = []
        unreadable: dict[str, tuple[str, int]] = {}
        for raw_node, raw in raw_records.items():
            try:
                record = json.loads(raw)
                node = _as_bytes(raw_node).decode("utf-8")
                seen_ms, ttl_ms = int(record["seen_ms"]), int(record["ttl_ms"])
                if live_only and seen_ms + ttl_ms < now_ms:
                    continue  # expired: not opened, not counted (an old key may have sealed it)
                info = self.codec.open_info(node, record["info"])
                records.append(NodeRecord(node, seen_ms, ttl_ms, info))
            except Rejected as exc:
                self._reject(exc)
                if exc.reason in _KEY_REASONS and seen_ms + ttl_ms >= now_ms:
                    unreadable[node] = (exc.reason, seen_ms)
            except (ValueError, KeyError, TypeError):
                self._reject(Rejected(reasons.MALFORMED_PRESENCE, "undecodable heartbeat"))
        self.unreadable_nodes = unreadable
        return now_ms, sorted(records, key=lambda r: r.node)

    async def node_records_with_files(self) -> tuple[int, list[NodeRecord]]:
        """`node_records` with each summary's per-file facts put back under `files` (what
        `swarm status` shows)."""
        now_ms, records = await self.node_records()
        files = await self.files_of([r.node for r in records])
        for record in records:
            if record.node in files:
                record.info["files"] = files[record.node]
        return now_ms, records

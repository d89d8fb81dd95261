"""The swarm log on Redis: a stream appended and fanned out in one script, snapshots written
under the compaction lease, and trimming only behind snapshots (so snapshots + log tail is always
the whole history of the swarm)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import NoScriptError

from swarm.transport import codec
from swarm.transport.base import Message, TransportError, next_stream_id, parse_stream_id
from swarm.transport.codec import Rejected
from swarm.transport.redis_connection import RedisConnection, as_bytes
from swarm.wire import Envelope, Kind

log = logging.getLogger("swarm.transport.redis_transport")

_READ_PAGE = 5000
_BAD_ENTRIES_KEPT = 10_000


def _field_e(fields: Any) -> bytes:
    """Field `e` of a raw stream entry (b"" if it has none: it then fails to decode)."""
    values = fields or []
    for i in range(0, len(values) - 1, 2):
        if values[i] == b"e":
            return as_bytes(values[i + 1])
    return b""


class RedisLog(RedisConnection):
    """`SwarmLog` on a Redis stream."""

    async def publish(self, env: Envelope) -> str:
        """Append to the log and fan out in one round trip; the stream id of the entry."""
        return (await self.publish_chained(env))[1]

    async def publish_chained(self, env: Envelope) -> tuple[str, str]:
        """Like publish; returns (id of the entry before it, id of the new entry)."""
        return (await self.publish_many([env]))[0]

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
            await self._resolve()
            budget = self._op_timeout + len(envs) * 0.01 + self.wait_timeout_ms / 1000
            async with asyncio.timeout(budget):
                try:
                    replies = await self._evalsha_many(sealed)
                except NoScriptError:  # a restarted or flushed Redis: load it once, go again
                    await self._client.script_load(self._publish_lua)
                    replies = await self._evalsha_many(sealed)
        receipts = []
        for stream_id, length, prev_id in replies:
            self.log_length = int(length)
            receipts.append((as_bytes(prev_id).decode(), as_bytes(stream_id).decode()))
        return receipts

    async def _evalsha_many(self, sealed: list[bytes]) -> list[Any]:
        """EVALSHA straight away: redis-py's script pipelines first ask SCRIPT EXISTS, which
        would cost every flush a second round trip."""
        sha = self._publish_script.sha
        if self.wait_replicas > 0:
            return await self._evalsha_and_wait(sha, sealed)
        if len(sealed) == 1:
            numkeys, call = self._publish_call(sealed[0])
            return [await self._client.evalsha(sha, numkeys, *call)]
        pipe = self._client.pipeline(transaction=False)
        for data in sealed:
            numkeys, call = self._publish_call(data)
            # Not pipe.evalsha: redis-py refuses it by name in a cluster pipeline, while the
            # same command routes fine by its keys (all in the swarm's slot).
            pipe.execute_command("EVALSHA", sha, numkeys, *call)
        return list(await pipe.execute())

    async def _evalsha_and_wait(self, sha: str, sealed: list[bytes]) -> list[Any]:
        """The publishes, then WAIT on the same connection (WAIT counts the replicas that have
        this connection's writes): one pipeline, which on a cluster goes to the slot's master."""
        pipe = self._client.pipeline(transaction=False)
        for data in sealed:
            numkeys, call = self._publish_call(data)
            pipe.execute_command("EVALSHA", sha, numkeys, *call)
        wait = ("WAIT", self.wait_replicas, self.wait_timeout_ms)
        if self._deployment.cluster is not None:
            node = self._deployment.cluster.get_node_from_key(self.keys.log)
            pipe.execute_command(*wait, target_nodes=node)
        else:
            pipe.execute_command(*wait)
        *replies, confirmed = await pipe.execute()
        if int(confirmed) < self.wait_replicas:
            self.unreplicated += 1
            log.debug("%d of %d replicas confirmed a publish", confirmed, self.wait_replicas)
        return replies

    async def epoch(self, candidate: str) -> str:
        """The swarm's epoch on this Redis, setting it to `candidate` if it had none."""
        with self._failures("epoch"):
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                value = await self._epoch_script(keys=[self.keys.epoch], args=[candidate])
        return as_bytes(value).decode()

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
            await self._resolve()
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
        return [(as_bytes(raw_id).decode(), _field_e(fields)) for raw_id, fields in page or []]

    async def log_info(self) -> dict[str, Any]:
        """Length, first/last entry ids and last generated id of the log (empty dict if none).

        A reader whose cursor is older than the first entry missed trimmed history: it must load
        the snapshots.
        """
        with self._failures("log_info"):
            await self._resolve()
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

    async def holds_entry(self, entry_id: str) -> bool:
        """Whether the log still holds `entry_id`, an entry it once held (this node read it or
        published it). False means Redis lost acknowledged entries: a replica that lagged behind
        its master was promoted (replication is asynchronous). An entry trimmed behind the
        snapshots counts as held: the replica had it, or it could not have trimmed past it.
        """
        if parse_stream_id(entry_id) == (0, 0):
            return True
        with self._failures("holds_entry"):
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                if not await self._client.exists(self.keys.log):
                    return entry_id == "0-0"
                info = await self._client.xinfo_stream(self.keys.log)
                last = bytes(info["last-generated-id"]).decode()
                if parse_stream_id(last) < parse_stream_id(entry_id):
                    return False  # the log never got as far
                first = info.get("first-entry")
                if not first or parse_stream_id(bytes(first[0]).decode()) > parse_stream_id(
                    entry_id
                ):
                    return True  # trimmed behind the snapshots (or every entry trimmed)
                found = await self._client.xrange(
                    self.keys.log, min=entry_id, max=entry_id, count=1
                )
        return bool(found)

    async def snapshots(self) -> dict[str, tuple[str, bytes]]:
        """path -> (covered stream id, state): the state holds every log entry of the path up to
        and including the covered id."""
        with self._failures("snapshots"):
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                records = await self._client.hgetall(self.keys.snap)
        result: dict[str, tuple[str, bytes]] = {}
        envelopes: dict[str, Envelope] = {}
        for raw_field, record in records.items():
            covered, sep, sealed = as_bytes(record).partition(b" ")
            try:
                field = as_bytes(raw_field).decode("utf-8")
                if not sep:
                    raise ValueError("no covered id")
                parse_stream_id(covered)
            except ValueError:
                self._reject(Rejected(codec.MALFORMED, "snapshot record without covered id"))
                continue
            try:
                env = self.codec.open_snapshot(field, covered.decode(), sealed)
            except Rejected as exc:
                self._reject(exc)
                continue
            path, state = env.path, env.payload
            # After a key rotation one file may have a record under each key's field: the one
            # covering more of the log wins (each holds everything up to its covered id).
            known = result.get(path)
            if known is None or parse_stream_id(known[0]) < parse_stream_id(covered):
                result[path] = (covered.decode(), state)
                envelopes[path] = env
        self.snapshot_envelopes = envelopes
        return result

    async def put_snapshot(
        self, path: str, covered_id: str, state: bytes, signature: bytes = b""
    ) -> bool:
        """Store `state` as covering the log of `path` up to `covered_id`.

        False when this node does not hold the lease, or when it would move the covered id
        backwards or past the newest log entry (a snapshot never claims what it cannot hold).
        """
        parse_stream_id(covered_id)
        field = self.codec.path_field(path)
        env = Envelope(self.swarm, path, self.node, Kind.STATE, state, signature=signature)
        state = self.codec.seal_snapshot(env, field, covered_id)
        with self._failures("put_snapshot"):
            await self._resolve()
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
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                held = await self._acquire_script(keys=[self.keys.lease], args=[self.node, ttl_ms])
        return int(held) == 1

    async def release_lease(self) -> bool:
        with self._failures("release_lease"):
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                released = await self._release_script(keys=[self.keys.lease], args=[self.node])
        return int(released) == 1

    async def trim_log(self) -> int:
        """Drop log entries every snapshot already holds; the number of entries removed.

        The cut is the oldest entry not covered by its path's snapshot, so snapshot + log tail
        stays the whole history. Sync requests carry no document data and never hold the cut back;
        entries this version cannot decode always do (a newer node may need them).
        """
        snapshots = await self.snapshots()
        covered = {path: parse_stream_id(cid) for path, (cid, _) in snapshots.items()}
        cut: str | None = None
        last_seen: str | None = None
        cursor = "0-0"
        with self._failures("trim_log"):
            await self._resolve()
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
        if envelope.kind is Kind.SYNC_REQUEST:
            return True
        snapshot = covered.get(envelope.path)
        return snapshot is not None and parse_stream_id(entry_id) <= snapshot

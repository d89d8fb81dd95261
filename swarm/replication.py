"""Replication: moving a node's updates to the swarm and the swarm's updates into the node.

Generic part (any Transport): flush the outbox, apply what arrives. Redis part (a transport with a
log): a contiguous cursor over the swarm log, catch-up from snapshots + log tail on join and after
every gap, re-seeding a Redis that lost the swarm's data (wiped, or failed over to a replica that
lagged behind: see `catch_up`), heartbeats with per-file state vectors,
anti-entropy, and log compaction under a lease.

The cursor is the heart of "no lost message": it only moves over log entries this node has
applied (or published itself), in log order. Live messages name the entry before them, so a
dropped message shows up as a broken chain and triggers a log read from the cursor; a dropped
message with nothing after it shows up on the next heartbeat, when the log's last id is past the
cursor.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from swarm.edge import INAPPLICABLE
from swarm.memory import MemoryDoc, vector
from swarm.memory.batching import coalesce
from swarm.node import Node
from swarm.transport import codec
from swarm.transport.base import Message, Transport, TransportError, is_gap_marker
from swarm.transport.redis_client import ReconnectBackoff
from swarm.transport.redis_transport import RedisTransport, parse_stream_id
from swarm.wire import MAX_PAYLOAD, Envelope, Kind, WireError

log = logging.getLogger(__name__)

_OUTBOX_BATCH = 256
_INBOUND_BATCH = 512
_GAP_GRACE_S = 0.1  # how long a hole in the chain of log ids may last before the log is read
_READ_BATCH = 10_000
_RENDER_HOLD_S = 3.0  # longest a catch-up keeps files from being rendered in one go
_LEASE_YIELD_ROUNDS = 3  # compaction rounds a non-writer leaves the lease to a protected file's


@dataclass
class ReplicationOptions:
    swarm: str
    node_id: str
    role: str = ""
    heartbeat_interval: float = 1.0
    offline_after: float = 5.0  # a node silent this long is offline
    compaction_interval: float = 10.0
    compact_after_entries: int = 10_000  # compact sooner once the log is this long
    forget_nodes_after: float = 7 * 24 * 3600.0  # a node silent this long has left the swarm
    lease_ttl_ms: int = 15_000


@dataclass
class ReplicationCounters:
    published: int = 0
    published_bytes: int = 0
    received: int = 0
    received_bytes: int = 0
    catchups: int = 0
    reseeds: int = 0
    rollbacks: int = 0  # times Redis was found to have lost acknowledged log entries
    sync_requests: int = 0
    publish_errors: int = 0
    snapshots_written: int = 0
    lag: int = 0  # operations this node lacks against the union of online peers
    behind: dict[str, int] = field(default_factory=dict)
    catchup_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=100))


def _stream_key(stream_id: str) -> tuple[int, int]:
    return parse_stream_id(stream_id)


class Replicator:
    def __init__(self, node: Node, transport: Transport, options: ReplicationOptions) -> None:
        self.node = node
        self.transport = transport
        self.options = options
        self.counters = ReplicationCounters()
        self.redis = transport if isinstance(transport, RedisTransport) else None
        self.cursor = node.store.get_meta("cursor") or "0-0"
        # The newest log entry this node published: Redis acknowledged it, so a log without it
        # lost entries (see catch_up).
        self.published = node.store.get_meta("published") or "0-0"
        # Entries to look for in the log at the next catch-up: the newest ones known when Redis
        # failed or when a publish receipt showed a chain not through our last entry. After a
        # failover this node may publish to the new master before it catches up, so `published`
        # alone would already name an entry the new master holds.
        self._verify: set[str] = set()
        self._links: dict[str, str] = {}  # prev id -> id, for entries beyond a gap
        self._outbox_wake = asyncio.Event()
        self._catchup_wake = asyncio.Event()
        self._compact_wake = asyncio.Event()
        self._gap_check_pending = False
        self._caught_up = asyncio.Event()
        self._peers: dict[str, dict[str, Any]] = {}
        # (path, revision) of every document -> their facts and digest (see _all_file_facts)
        self._all_facts: tuple[list[tuple[str, int]], dict[str, dict[str, Any]], str] | None = None
        # Anti-entropy's view one round ago: the log's last id, and per file behind then, the
        # union of the peers' state vectors (see _anti_entropy).
        self._log_last_seen: str | None = None
        self._gap_cursor = "0-0"  # the cursor when a hole in the chain of ids was noticed
        self._wanted: dict[str, vector.StateVector] = {}
        self._snapshotted: dict[str, str] = {}  # path -> state vector digest in Redis
        # Protected files this node may not snapshot: path -> digest when last seen changed,
        # and compaction rounds left before it takes the lease again (see compact_once).
        self._protected_seen: dict[str, str] = {}
        self._lease_yield = 0
        self._facts: dict[str, tuple[int, dict[str, Any]]] = {}  # path -> (revision, facts)
        self.started_at = time.time()
        self.host = socket.gethostname()
        node.on_local_update(self._outbox_wake.set)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    @property
    def connected(self) -> bool:
        return self.redis.connected if self.redis is not None else True

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then flush the outbox one last time (bounded by the caller)."""
        self._outbox_wake.set()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._inbound(stop))
                group.create_task(self._outbox_loop(stop))
                if self.redis is not None:
                    self._catchup_wake.set()
                    group.create_task(self._catchup_loop(stop))
                    group.create_task(self._heartbeat_loop(stop))
                    group.create_task(self._compaction_loop(stop))
                else:
                    self._caught_up.set()
                await stop.wait()
                raise _Stop
        except* _Stop:
            pass

    async def wait_caught_up(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def flush(self) -> int:
        """Publish what the outbox holds; returns how many entries are left."""
        await self._flush_outbox()
        return self.node.store.outbox_depth()

    # -- outbound ------------------------------------------------------------------------------

    async def _outbox_loop(self, stop: asyncio.Event) -> None:
        await self._run_on_wake(stop, self._outbox_wake, self._flush_outbox, "outbox flush")

    async def _run_on_wake(
        self,
        stop: asyncio.Event,
        wake: asyncio.Event,
        action: Callable[[], Awaitable[None]],
        what: str,
    ) -> None:
        """Run `action` each time `wake` is set; while Redis fails, retry with capped backoff
        and jitter (so a swarm's nodes do not all come back at the same instant)."""
        backoff = ReconnectBackoff(base=0.05, cap=5.0)
        while not stop.is_set():
            await wake.wait()
            wake.clear()
            try:
                await action()
                backoff.reset()
            except TransportError as exc:
                self._suspect()
                delay = backoff.next_delay()
                log.debug("%s failed, retrying in %.2fs: %s", what, delay, exc)
                await _sleep_or_stop(stop, delay)
                wake.set()

    async def _flush_outbox(self) -> None:
        """Publish the outbox oldest first, a batch per round trip, acking each batch in one
        commit; the updates a batch holds for one path go out merged, as one message. Entries
        are dropped only once Redis has them."""
        store = self.node.store
        while True:
            entries = store.outbox(limit=_OUTBOX_BATCH)
            if not entries:
                return
            sendable = []
            for path, update in coalesce(((e.path, e.update) for e in entries), MAX_PAYLOAD):
                if len(update) > MAX_PAYLOAD:  # can never be sent: say so, do not block
                    log.error("cannot publish an update of %s: %d bytes", path, len(update))
                    continue
                env = self.node.protection.outgoing(
                    Envelope(self.options.swarm, path, self.options.node_id, Kind.UPDATE, update)
                )
                if env is not None:  # None: a protected file's fix-up on a node not its writer
                    sendable.append(env)
            if self.redis is not None:
                try:
                    receipts = await self.redis.publish_many(sendable) if sendable else []
                except TransportError:
                    self.counters.publish_errors += 1
                    raise
                with store.batch():
                    for prev, stream_id in receipts:
                        self._link(prev, stream_id)
                        self._note_published(prev, stream_id)
                    store.ack(entry.id for entry in entries)
                if (self.redis.log_length or 0) >= self.options.compact_after_entries:
                    self._compact_wake.set()
            else:
                for env in sendable:
                    await self.transport.publish(env)
                store.ack(entry.id for entry in entries)
            self.counters.published += len(sendable)
            self.counters.published_bytes += sum(len(env.payload) for env in sendable)

    async def _publish(self, env: Envelope) -> None:
        self.node.store.commit()  # nothing leaves the node before it is stored (group commit)
        sendable = self.node.protection.outgoing(env)  # signed, or None: not ours to send
        if sendable is None:
            return
        env = sendable
        if self.redis is not None:
            prev, stream_id = await self.redis.publish_chained(env)
            self._link(prev, stream_id)
            self._note_published(prev, stream_id)
        else:
            await self.transport.publish(env)
        self.counters.published += 1
        self.counters.published_bytes += len(env.payload)

    # -- inbound -------------------------------------------------------------------------------

    async def _inbound(self, stop: asyncio.Event) -> None:
        async for message in self.transport.messages():
            if stop.is_set():
                return
            burst = [message]
            if self.redis is not None:
                # One turn of the loop lets the reader parse what else has already arrived, so
                # a busy channel is applied in bursts (one commit each).
                await asyncio.sleep(0)
                burst += self.redis.ready_messages(_INBOUND_BATCH)
            # One commit for a burst. Each update is applied on its own, through the document's
            # causal buffer: live messages can arrive with a gap (see merge_runs).
            with self.node.store.batch():
                for item in burst:
                    if is_gap_marker(item):
                        self._catchup_wake.set()
                    else:
                        self._receive(item)

    def _receive(self, message: Message) -> None:
        env = message.envelope
        self.counters.received += 1
        self.counters.received_bytes += len(env.payload)
        if env.kind in (Kind.UPDATE, Kind.STATE) and env.sender != self.options.node_id:
            if self.node.protection.admits(env):
                self.node.apply_remote(env.path, env.payload, env.sender)
        elif env.kind is Kind.HELLO and env.path and env.sender != self.options.node_id:
            self._answer_sync_request(env)
        if message.stream_id is not None and message.prev_id is not None:
            self._link(message.prev_id, message.stream_id)

    def _note_published(self, prev: str, stream_id: str) -> None:
        if _stream_key(prev) < _stream_key(self.published):
            # In one log our last entry would come at or before `prev`. Two publishes of ours in
            # flight at once, or a log trimmed empty, do this too: the catch-up looks.
            self._suspect()
            self._catchup_wake.set()
        if _stream_key(stream_id) > _stream_key(self.published):
            self.published = stream_id
            self.node.store.set_meta("published", stream_id)

    def _link(self, prev: str, stream_id: str) -> None:
        """Advance the cursor over contiguous log entries; note a gap for a catch-up."""
        if _stream_key(stream_id) <= _stream_key(self.cursor):
            return
        self._links[prev] = stream_id
        moved = False
        while self.cursor in self._links:
            self.cursor = self._links.pop(self.cursor)
            moved = True
        if moved:
            self.node.store.set_meta("cursor", self.cursor)
        if self._links and not self._gap_check_pending:
            # Our own publish receipts and other nodes' messages arrive in either order, so a
            # gap is normal for a moment; only one that outlives a short wait means a lost
            # message, worth a log read.
            self._arm_gap_check()

    def _arm_gap_check(self) -> None:
        self._gap_check_pending = True
        self._gap_cursor = self.cursor
        asyncio.get_running_loop().call_later(_GAP_GRACE_S, self._check_gap)

    def _check_gap(self) -> None:
        """A lost message stops the cursor; one merely still queued here (a busy node) does
        not, or will move it once handled: only a cursor stuck with nothing queued means a
        log read."""
        self._gap_check_pending = False
        if not self._links:
            return
        backlog = self.redis.backlog if self.redis is not None else 0
        if self.cursor != self._gap_cursor or backlog:
            self._arm_gap_check()
            return
        self._catchup_wake.set()

    def _answer_sync_request(self, env: Envelope) -> None:
        """A peer says it lacks something in `env.path`: publish what it lacks, if we have it."""
        doc = self.node.docs.get(env.path)
        if doc is None:
            return
        try:
            theirs = vector.decode(env.payload)
        except vector.VectorError:
            self.node.reject(env.path, INAPPLICABLE, "a sync request with a malformed vector")
            return
        if vector.missing(theirs, doc.state_vector_dict()) == 0 and not doc.has_pending:
            return
        diff = doc.diff_since(env.payload)
        reply = Envelope(self.options.swarm, env.path, self.options.node_id, Kind.STATE, diff)
        asyncio.get_running_loop().create_task(self._publish_quietly(reply))

    async def _publish_quietly(self, env: Envelope) -> None:
        try:
            await self._publish(env)
        except (TransportError, WireError) as exc:
            log.debug("could not publish %s for %s: %s", env.kind.name, env.path, exc)

    # -- catch-up (Redis) ----------------------------------------------------------------------

    async def _catchup_loop(self, stop: asyncio.Event) -> None:
        await self._run_on_wake(stop, self._catchup_wake, self.catch_up, "catch-up")

    async def catch_up(self) -> None:
        """Load what this node missed: snapshots if the log no longer reaches back to the cursor,
        then the log tail; re-seed Redis from our own state if it lost the swarm's data.

        Redis loses data two ways. Wiped (or restarted without persistence): the epoch is gone.
        Failed over to a replica that lagged (replication is asynchronous): the epoch survives,
        but entries Redis had acknowledged are gone, the newest one this node knows (its cursor,
        or what it published last) among them; new entries may already follow the shorter log.
        Either way this node reads the whole swarm again and publishes the full state of every
        file it holds, so whatever the lost entries carried is in the log again: edits of this
        node and edits of others that reached it. Peers do the same; merging is idempotent."""
        assert self.redis is not None
        started = time.perf_counter()
        store = self.node.store
        known_epoch = store.get_meta("epoch")
        # Always offer a fresh value: offering the known one would let the first node back after
        # a wipe restore the old epoch, and no node would ever notice the wipe and re-seed.
        epoch = await self.redis.epoch(uuid.uuid4().hex)
        reseed = known_epoch is not None and epoch != known_epoch
        if reseed:
            log.warning("Redis lost the swarm's data; re-seeding it from this node's state")
        else:
            reseed = await self._lost_entries()
        if reseed:
            self.cursor = "0-0"
            self._links.clear()
            # Ids of the log as it was mean nothing in the new one (whose clock may even be
            # behind): what this node publishes from now on is what it knows to be there.
            self.published = "0-0"
            self.node.store.set_meta("published", self.published)
            self._verify.clear()
        info = await self.redis.log_info()
        first = info.get("first_id")
        after = self.cursor
        if self.cursor == "0-0" or (first and _stream_key(first) > _stream_key(self.cursor)):
            snapshots = await self.redis.snapshots()
            for path, env in self.redis.snapshot_envelopes.items():
                if not self.node.protection.admits(env):
                    del snapshots[path]  # a protected file's, not signed by a writer
            with store.batch():
                for path, (_covered, state) in snapshots.items():
                    self.node.apply_remote(path, state)
            if snapshots:
                after = min((covered for covered, _ in snapshots.values()), key=_stream_key)
                if (
                    _stream_key(self.cursor) > _stream_key(after)
                    and first
                    and (_stream_key(first) <= _stream_key(self.cursor))
                ):
                    after = self.cursor
        try:
            while True:
                messages = await self.redis.read_log(after, count=_READ_BATCH)
                if not messages:
                    scanned = self.redis.last_scanned_id  # only undecodable entries were left
                    if _stream_key(scanned) > _stream_key(self.cursor):
                        self.cursor = scanned
                    break
                after = messages[-1].stream_id or after
                if len(messages) >= _READ_BATCH and not self.node.renders_held:
                    # More pages follow: rewriting every file after each page costs more than
                    # merging it, so files are written once at the end (or every few seconds).
                    self.node.hold_renders(_RENDER_HOLD_S)
                self._merge_log_page(messages, after)
        finally:
            self.node.release_renders()
        self._links = {
            p: i for p, i in self._links.items() if _stream_key(i) > _stream_key(self.cursor)
        }
        while self.cursor in self._links:
            self.cursor = self._links.pop(self.cursor)
        store.set_meta("cursor", self.cursor)
        if reseed or known_epoch is None:
            store.set_meta("epoch", epoch)
        if reseed:
            await self._reseed()
        self.counters.catchups += 1
        self.counters.catchup_seconds.append(time.perf_counter() - started)
        self._caught_up.set()

    def _suspect(self) -> None:
        """Redis failed, or the log's chain looked odd: look for our newest entries next time."""
        self._verify.update(i for i in (self.cursor, self.published) if i != "0-0")

    async def _lost_entries(self) -> bool:
        """Whether the log lost entries it had acknowledged (a failover to a lagging replica)."""
        assert self.redis is not None
        wanted = sorted({self.cursor, self.published} | self._verify, key=_stream_key)
        lost = None
        for entry in wanted:
            if not await self.redis.holds_entry(entry):
                lost = entry
        self._verify.difference_update(wanted)
        if lost is None:
            return False
        log.warning(
            "Redis lost acknowledged log entries (%s among them; a failover to a replica that "
            "lagged?): re-reading the swarm and re-sending this node's state",
            lost,
        )
        self.counters.rollbacks += 1
        return True

    def _merge_log_page(self, messages: list[Message], last: str) -> None:
        """One commit per page; per path, the page's updates in log order with each writer's
        adjacent ones merged (`merge_runs`)."""
        by_path: dict[str, list[bytes]] = {}
        senders: dict[str, set[str]] = {}
        for message in messages:
            env = message.envelope
            if (
                env.sender != self.options.node_id
                and env.kind in (Kind.UPDATE, Kind.STATE)
                and self.node.protection.admits(env)
            ):
                by_path.setdefault(env.path, []).append(env.payload)
                senders.setdefault(env.path, set()).add(env.sender)
        with self.node.store.batch():
            for path, updates in by_path.items():
                self.node.apply_remote_many(path, updates, senders[path])
            if _stream_key(last) > _stream_key(self.cursor):
                self.cursor = last
                self.node.store.set_meta("cursor", last)

    async def _reseed(self) -> None:
        """Publish every document's full state so the log again holds the whole history."""
        for path, doc in list(self.node.docs.items()):
            env = Envelope(
                self.options.swarm, path, self.options.node_id, Kind.STATE, doc.encode_state()
            )
            await self._publish(env)
        self._snapshotted.clear()
        self.counters.reseeds += 1

    # -- heartbeat and anti-entropy (Redis) ----------------------------------------------------

    def presence_info(self) -> dict[str, Any]:
        """What this node tells the swarm about itself: enough for `swarm status` to decide
        convergence from state vectors and to show why a node lags."""
        files, digest = self._all_file_facts()
        node = self.node
        return {
            "role": self.options.role,
            "host": self.host,
            "pid": os.getpid(),
            "started": self.started_at,
            "ready": self.caught_up,
            "outbox": self.node.store.outbox_depth(),
            "cursor": self.cursor,
            "lag": self.counters.lag,
            "last_error": self._problem() or node.flood.held or node.last_error(),
            "problems": self.redis.problems.active if self.redis and self.redis.problems else {},
            "skipped": dict(node.counters.skipped_files),
            "deletions_held": node.deletions_held,
            "files_held": node.flood.report(),
            "disk": node.health.summary(node.disk_states()),
            "refused": node.edge.refused(),
            "protected_refused": node.protection.report(),
            "not_synced": node.not_synced.to_json(),
            "files_digest": digest,
            "files": files,
        }

    def _problem(self) -> str | None:
        """The newest problem with Redis or the swarm key, if any."""
        problems = self.redis.problems if self.redis is not None else None
        return problems.newest() if problems else None

    def _all_file_facts(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Every file's facts and their digest; the same objects while no document changed (the
        transport then skips re-sending them, and nothing is re-encoded)."""
        signature = [(path, doc.revision) for path, doc in self.node.docs.items()]
        cached = self._all_facts
        if cached is not None and cached[0] == signature:
            return cached[1], cached[2]
        files = {path: self._file_facts(path, doc) for path, doc in self.node.docs.items()}
        digest = _files_digest(files)
        self._all_facts = (signature, files, digest)
        return files, digest

    def _file_facts(self, path: str, doc: MemoryDoc) -> dict[str, Any]:
        """Per-file heartbeat facts, recomputed only when the document changed (a heartbeat of
        100 files of 50 KB would otherwise re-encode 5 MB every interval)."""
        cached = self._facts.get(path)
        if cached is not None and cached[0] == doc.revision:
            return cached[1]
        sv = doc.state_vector()
        content = doc.content.encode("utf-8")
        facts = {
            "sv": base64.b64encode(sv).decode(),
            "digest": vector.digest(vector.decode(sv)),
            "size": len(content),
            # The file's bytes as the document has them: status compares them across nodes.
            "hash": hashlib.blake2b(content, digest_size=16).hexdigest(),
            "exists": doc.exists,
            "pending": doc.has_pending,
            "changed": self.node.changed_at.get(path),  # when this node last changed it itself
        }
        self._facts[path] = (doc.revision, facts)
        return facts

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        assert self.redis is not None
        interval = self.options.heartbeat_interval
        while not stop.is_set():
            try:
                self.node.store.commit()  # what the heartbeat claims is stored
                await self.redis.heartbeat(self.presence_info(), ttl_s=self.options.offline_after)
                await self._anti_entropy()
            except TransportError as exc:
                self._suspect()
                log.debug("heartbeat failed: %s", exc)
            await _sleep_or_stop(stop, interval)

    async def _anti_entropy(self) -> None:
        """Repair what pub/sub lost. Only what was already known one round ago counts: under
        load the log and the peers are always a little ahead (messages in flight), and acting
        on that would read the log and request every busy file each round. So the log is read
        when the cursor has not reached the log's end of the previous round, and a file is
        asked for when this node still lacks operations its peers had a round ago (or when it
        waited on missing operations for two rounds)."""
        assert self.redis is not None
        info = await self.redis.log_info()
        last, seen_last = info.get("last_id"), self._log_last_seen
        if seen_last and _stream_key(seen_last) > _stream_key(self.cursor):
            self._catchup_wake.set()
        generated = info.get("last_generated_id") or "0-0"
        if _stream_key(generated) < _stream_key(max(self.cursor, self.published, key=_stream_key)):
            self._catchup_wake.set()  # the log ends before entries this node knows: lost some
        self._log_last_seen = last
        peers = await self.redis.presence()
        self._check_keys()
        online = {node: info for node, info in peers.items() if node != self.options.node_id}
        self._peers = online
        # Peers holding exactly our state vectors need no per-file comparison: the usual case.
        facts, mine = self._all_file_facts()
        differing = {n: i for n, i in online.items() if i.get("files_digest") != mine}
        if differing:  # only now read their per-file facts: the summaries alone say "same"
            files = await self.redis.files_of(sorted(differing))
            differing = {n: {**i, "files": files.get(n, {})} for n, i in differing.items()}
        total_lag = 0
        behind: dict[str, int] = {
            path: 0 for path, doc in self.node.docs.items() if doc.has_pending
        }
        wanted: dict[str, vector.StateVector] = {path: {} for path in behind}
        digests = {path: f["digest"] for path, f in facts.items()}
        for path, want in _union_by_path(differing, digests).items():
            if self.node.refuses(path):
                continue  # never synced here: asking for it would only be refused again
            doc = self.node.docs.get(path)
            have = doc.state_vector_dict() if doc is not None else {}
            lag = vector.missing(have, want)
            if lag or (doc is not None and doc.has_pending):
                behind[path] = lag
                wanted[path] = want
            total_lag += lag
        self.counters.lag = total_lag
        self.counters.behind = behind
        previous, self._wanted = self._wanted, wanted
        for path in behind:
            doc = self.node.docs.get(path)
            have = doc.state_vector_dict() if doc is not None else {}
            stuck = doc is not None and doc.has_pending and path in previous
            if not stuck and vector.missing(have, previous.get(path, {})) == 0:
                continue
            sv = doc.state_vector() if doc is not None else vector.encode({})
            self.counters.sync_requests += 1
            await self._publish(
                Envelope(self.options.swarm, path, self.options.node_id, Kind.HELLO, sv)
            )

    def _check_keys(self) -> None:
        """Peers whose heartbeats this node cannot open hold another swarm key (or none, or
        this node none): say so once, until every live peer is readable again."""
        assert self.redis is not None
        problems = self.redis.problems
        if problems is None:
            return
        unreadable = {
            node: reason
            for node, (reason, _seen) in self.redis.unreadable_nodes.items()
            if node != self.options.node_id
        }
        if unreadable:
            message = codec.key_trouble(unreadable)  # one line per cause, not per peer
            problems.report(codec.SWARM_KEY, message, kind=codec.SWARM_KEY)
        else:
            problems.resolve(codec.SWARM_KEY, "every live peer's heartbeat is readable again")

    # -- compaction (Redis) --------------------------------------------------------------------

    async def _compaction_loop(self, stop: asyncio.Event) -> None:
        """Compact every `compaction_interval`, or sooner when the log grows long: a node that
        returns after a long absence then loads snapshots and a short tail, not the whole log."""
        assert self.redis is not None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._compact_wake.wait(), timeout=self.options.compaction_interval
                )
            self._compact_wake.clear()
            if stop.is_set() or not self.caught_up:
                continue
            try:
                await self.compact_once()
            except TransportError as exc:
                log.debug("compaction skipped: %s", exc)
            self.node.compact()

    async def compact_once(self) -> bool:
        """Under the lease: write a snapshot of every changed file covering the cursor, then trim
        the log behind the snapshots. Safe if two nodes briefly both do it: snapshots never move
        backwards and each holds everything up to its covered id."""
        assert self.redis is not None
        if self._lease_yield > 0:  # leaving the lease to a writer for a while (see below)
            self._lease_yield -= 1
            return False
        if not await self.redis.acquire_lease(self.options.lease_ttl_ms):
            return False
        covered = self.cursor
        if covered == "0-0":
            return False
        protected_changed = False
        for path, doc in list(self.node.docs.items()):
            digest = vector.digest(doc.state_vector_dict())
            if self._snapshotted.get(path) == digest:
                continue
            self.node.store.commit()  # a snapshot holds only what is stored (group commit)
            state = doc.encode_state()
            env = self.node.protection.outgoing(
                Envelope(self.options.swarm, path, self.options.node_id, Kind.STATE, state)
            )
            if env is None:  # a protected file: only its writers vouch for a snapshot of it
                protected_changed |= self._protected_seen.get(path) != digest
                self._protected_seen[path] = digest
                continue
            if await self.redis.put_snapshot(path, covered, state, env.signature):
                self._snapshotted[path] = digest
                self.counters.snapshots_written += 1
        await self.redis.trim_log()
        forgotten = await self.redis.forget_nodes(int(self.options.forget_nodes_after * 1000))
        if forgotten:
            log.info(
                "forgot nodes silent for %.0f s: %s", self.options.forget_nodes_after, forgotten
            )
        if protected_changed:
            # The log is trimmed only behind snapshots, and only a writer may write a protected
            # file's: a non-writer that kept the lease would let the log grow for good.
            await self.redis.release_lease()
            self._lease_yield = _LEASE_YIELD_ROUNDS
        return True


class _Stop(Exception):
    """Raised inside the task group to cancel its siblings once `stop` is set."""


def _files_digest(files: dict[str, dict[str, Any]]) -> str:
    """One fingerprint of every file's state vector: equal digests, equal states."""
    joined = "\n".join(f"{path}\0{facts['digest']}" for path, facts in sorted(files.items()))
    return hashlib.blake2b(joined.encode(), digest_size=12).hexdigest()


def _union_by_path(
    peers: dict[str, dict[str, Any]], mine: dict[str, str]
) -> dict[str, vector.StateVector]:
    """Per path, the union of the peers' state vectors; a file whose digest equals our own
    (`mine`: path -> digest) is skipped without decoding its vector."""
    union: dict[str, vector.StateVector] = {}
    for info in peers.values():
        files = info.get("files") or {}
        for path, facts in files.items():
            if isinstance(facts, dict) and facts.get("digest") == mine.get(path, ""):
                continue
            try:
                sv = vector.decode(base64.b64decode(facts["sv"]))
            except (KeyError, ValueError, TypeError):
                continue
            union[path] = vector.union([union.get(path, {}), sv])
    return union


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)

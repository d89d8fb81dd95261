"""Replication: moving a node's updates to the swarm and the swarm's updates into the node.

On a swarm log (`swarm.transport.base.SwarmTransport`: Redis, or the in-process bus of tests):
flush the outbox, apply what arrives, keep a contiguous cursor over the log, catch up from
snapshots + log tail on join and after every gap, re-seed a log that lost the swarm's data,
heartbeat with per-file state vectors, repair through anti-entropy, compact under a lease.

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
from swarm.heartbeat import FileFacts, Heartbeat
from swarm.memory import MemoryDoc, vector
from swarm.memory.batching import coalesce
from swarm.node import Node
from swarm.transport import codec
from swarm.transport.base import (
    Message,
    SwarmTransport,
    TransportError,
    is_gap_marker,
    parse_stream_id,
)
from swarm.transport.redis_client import ReconnectBackoff
from swarm.wire import MAX_PAYLOAD, Envelope, Kind, WireError

log = logging.getLogger(__name__)

_OUTBOX_BATCH = 256
_INBOUND_BATCH = 512
_GAP_GRACE_S = 0.1  # how long a hole in the chain of log ids may last before the log is read
_READ_BATCH = 10_000
_RENDER_HOLD_S = 3.0  # longest a catch-up keeps files from being rendered in one go


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
    sync_requests: int = 0
    publish_errors: int = 0
    snapshots_written: int = 0
    lag: int = 0  # operations this node lacks against the union of online peers
    behind: dict[str, int] = field(default_factory=dict)
    catchup_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=100))


class Replicator:
    def __init__(self, node: Node, transport: SwarmTransport, options: ReplicationOptions) -> None:
        self.node = node
        self.transport = transport
        self.options = options
        self.counters = ReplicationCounters()
        self.cursor = node.store.get_meta("cursor") or "0-0"
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
        self._facts: dict[str, tuple[int, dict[str, Any]]] = {}  # path -> (revision, facts)
        self.started_at = time.time()
        self.host = socket.gethostname()
        node.on_local_update(self._outbox_wake.set)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then flush the outbox one last time (bounded by the caller)."""
        self._outbox_wake.set()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._inbound(stop))
                group.create_task(self._outbox_loop(stop))
                self._catchup_wake.set()
                group.create_task(self._catchup_loop(stop))
                group.create_task(self._heartbeat_loop(stop))
                group.create_task(self._compaction_loop(stop))
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
                sendable.append(
                    Envelope(self.options.swarm, path, self.options.node_id, Kind.UPDATE, update)
                )
            try:
                receipts = await self.transport.publish_many(sendable) if sendable else []
            except TransportError:
                self.counters.publish_errors += 1
                raise
            with store.batch():
                for prev, stream_id in receipts:
                    self._link(prev, stream_id)
                store.ack(entry.id for entry in entries)
            if (self.transport.log_length or 0) >= self.options.compact_after_entries:
                self._compact_wake.set()
            self.counters.published += len(sendable)
            self.counters.published_bytes += sum(len(env.payload) for env in sendable)

    async def _publish(self, env: Envelope) -> None:
        prev, stream_id = await self.transport.publish_chained(env)
        self._link(prev, stream_id)
        self.counters.published += 1
        self.counters.published_bytes += len(env.payload)

    # -- inbound -------------------------------------------------------------------------------

    async def _inbound(self, stop: asyncio.Event) -> None:
        async for message in self.transport.messages():
            if stop.is_set():
                return
            # One turn of the loop lets the reader parse what else has already arrived, so a
            # busy channel is applied in bursts (one commit each).
            await asyncio.sleep(0)
            burst = [message, *self.transport.ready_messages(_INBOUND_BATCH)]
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
            self.node.apply_remote(env.path, env.payload, env.sender)
        elif env.kind is Kind.HELLO and env.path and env.sender != self.options.node_id:
            self._answer_sync_request(env)
        if message.stream_id is not None and message.prev_id is not None:
            self._link(message.prev_id, message.stream_id)

    def _link(self, prev: str, stream_id: str) -> None:
        """Advance the cursor over contiguous log entries; note a gap for a catch-up."""
        if parse_stream_id(stream_id) <= parse_stream_id(self.cursor):
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
        if self.cursor != self._gap_cursor or self.transport.backlog:
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

    # -- catch-up ----------------------------------------------------------------------

    async def _catchup_loop(self, stop: asyncio.Event) -> None:
        await self._run_on_wake(stop, self._catchup_wake, self.catch_up, "catch-up")

    async def catch_up(self) -> None:
        """Load what this node missed: snapshots if the log no longer reaches back to the cursor,
        then the log tail; re-seed the log from our own state if it lost the swarm's data."""
        started = time.perf_counter()
        store = self.node.store
        known_epoch = store.get_meta("epoch")
        # Always offer a fresh value: offering the known one would let the first node back after
        # a wipe restore the old epoch, and no node would ever notice the wipe and re-seed.
        epoch = await self.transport.epoch(uuid.uuid4().hex)
        reseed = known_epoch is not None and epoch != known_epoch
        if reseed:
            log.warning("Redis lost the swarm's data; re-seeding it from this node's state")
            self.cursor = "0-0"
            self._links.clear()
        info = await self.transport.log_info()
        first = info.get("first_id")
        after = self.cursor
        if self.cursor == "0-0" or (
            first and parse_stream_id(first) > parse_stream_id(self.cursor)
        ):
            snapshots = await self.transport.snapshots()
            with store.batch():
                for path, (_covered, state) in snapshots.items():
                    self.node.apply_remote(path, state)
            if snapshots:
                after = min((covered for covered, _ in snapshots.values()), key=parse_stream_id)
                if (
                    parse_stream_id(self.cursor) > parse_stream_id(after)
                    and first
                    and (parse_stream_id(first) <= parse_stream_id(self.cursor))
                ):
                    after = self.cursor
        try:
            while True:
                messages = await self.transport.read_log(after, count=_READ_BATCH)
                if not messages:
                    scanned = self.transport.last_scanned_id  # only undecodable entries were left
                    if parse_stream_id(scanned) > parse_stream_id(self.cursor):
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
            p: i
            for p, i in self._links.items()
            if parse_stream_id(i) > parse_stream_id(self.cursor)
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

    def _merge_log_page(self, messages: list[Message], last: str) -> None:
        """One commit per page; per path, the page's updates in log order with each writer's
        adjacent ones merged (`merge_runs`)."""
        by_path: dict[str, list[bytes]] = {}
        senders: dict[str, set[str]] = {}
        for message in messages:
            env = message.envelope
            if env.sender != self.options.node_id and env.kind in (Kind.UPDATE, Kind.STATE):
                by_path.setdefault(env.path, []).append(env.payload)
                senders.setdefault(env.path, set()).add(env.sender)
        with self.node.store.batch():
            for path, updates in by_path.items():
                self.node.apply_remote_many(path, updates, senders[path])
            if parse_stream_id(last) > parse_stream_id(self.cursor):
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

    # -- heartbeat and anti-entropy ----------------------------------------------------

    def presence_info(self) -> dict[str, Any]:
        """What this node tells the swarm about itself: enough for `swarm status` to decide
        convergence from state vectors and to show why a node lags."""
        files, digest = self._all_file_facts()
        node = self.node
        beat = Heartbeat(
            role=self.options.role,
            host=self.host,
            pid=os.getpid(),
            started=self.started_at,
            ready=self.caught_up,
            outbox=self.node.store.outbox_depth(),
            cursor=self.cursor,
            lag=self.counters.lag,
            last_error=self._problem() or node.flood.held or node.last_error(),
            problems=self.transport.problems.active if self.transport.problems else {},
            skipped=dict(node.counters.skipped_files),
            deletions_held=node.deletions_held,
            files_held=node.flood.report(),
            disk=node.health.summary(node.disk_states()),
            refused=node.edge.refused(),
            not_synced=node.not_synced.to_json(),
            files_digest=digest,
        )
        # The per-file facts stay the very objects cached (the transport then skips them).
        return {**beat.model_dump(exclude={"files"}), "files": files}

    def _problem(self) -> str | None:
        """The newest problem with Redis or the swarm key, if any."""
        problems = self.transport.problems
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
        facts = FileFacts(
            sv=base64.b64encode(sv).decode(),
            digest=vector.digest(vector.decode(sv)),
            size=len(content),
            # The file's bytes as the document has them: status compares them across nodes.
            hash=hashlib.blake2b(content, digest_size=16).hexdigest(),
            exists=doc.exists,
            pending=doc.has_pending,
            changed=self.node.changed_at.get(path),
        ).model_dump()
        self._facts[path] = (doc.revision, facts)
        return facts

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        interval = self.options.heartbeat_interval
        while not stop.is_set():
            try:
                await self.transport.heartbeat(
                    self.presence_info(), ttl_s=self.options.offline_after
                )
                await self._anti_entropy()
            except TransportError as exc:
                log.debug("heartbeat failed: %s", exc)
            await _sleep_or_stop(stop, interval)

    async def _anti_entropy(self) -> None:
        """Repair what pub/sub lost. Only what was already known one round ago counts: under
        load the log and the peers are always a little ahead (messages in flight), and acting
        on that would read the log and request every busy file each round. So the log is read
        when the cursor has not reached the log's end of the previous round, and a file is
        asked for when this node still lacks operations its peers had a round ago (or when it
        waited on missing operations for two rounds)."""
        info = await self.transport.log_info()
        last, seen_last = info.get("last_id"), self._log_last_seen
        if seen_last and parse_stream_id(seen_last) > parse_stream_id(self.cursor):
            self._catchup_wake.set()
        self._log_last_seen = last
        peers = await self.transport.presence()
        self._check_keys()
        online = {node: info for node, info in peers.items() if node != self.options.node_id}
        self._peers = online
        # Peers holding exactly our state vectors need no per-file comparison: the usual case.
        facts, mine = self._all_file_facts()
        differing = {n: i for n, i in online.items() if i.get("files_digest") != mine}
        if differing:  # only now read their per-file facts: the summaries alone say "same"
            files = await self.transport.files_of(sorted(differing))
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
        problems = self.transport.problems
        if problems is None:
            return
        unreadable = {
            node: reason
            for node, (reason, _seen) in self.transport.unreadable_nodes.items()
            if node != self.options.node_id
        }
        if unreadable:
            message = codec.key_trouble(unreadable)  # one line per cause, not per peer
            problems.report(codec.SWARM_KEY, message, kind=codec.SWARM_KEY)
        else:
            problems.resolve(codec.SWARM_KEY, "every live peer's heartbeat is readable again")

    # -- compaction --------------------------------------------------------------------

    async def _compaction_loop(self, stop: asyncio.Event) -> None:
        """Compact every `compaction_interval`, or sooner when the log grows long: a node that
        returns after a long absence then loads snapshots and a short tail, not the whole log."""
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
        if not await self.transport.acquire_lease(self.options.lease_ttl_ms):
            return False
        covered = self.cursor
        if covered == "0-0":
            return False
        for path, doc in list(self.node.docs.items()):
            digest = vector.digest(doc.state_vector_dict())
            if self._snapshotted.get(path) == digest:
                continue
            if await self.transport.put_snapshot(path, covered, doc.encode_state()):
                self._snapshotted[path] = digest
                self.counters.snapshots_written += 1
        await self.transport.trim_log()
        forgotten = await self.transport.forget_nodes(int(self.options.forget_nodes_after * 1000))
        if forgotten:
            log.info(
                "forgot nodes silent for %.0f s: %s", self.options.forget_nodes_after, forgotten
            )
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

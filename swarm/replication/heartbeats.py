"""Heartbeats and anti-entropy: telling the swarm how this node is (swarm/heartbeat.py), and
repairing from the peers' heartbeats what live delivery lost."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from swarm.heartbeat import FileFacts, Heartbeat
from swarm.memory import MemoryDoc, vector
from swarm.replica import Replica
from swarm.replication.cursor import LogCursor
from swarm.replication.loops import sleep_or_stop
from swarm.replication.options import ReplicationCounters, ReplicationOptions
from swarm.replication.outbox import Publisher
from swarm.transport import codec
from swarm.transport.base import SwarmTransport, TransportError, parse_stream_id
from swarm.wire import Kind

log = logging.getLogger("swarm.replication")

Signature = list[tuple[str, int]]  # (path, revision) of every document


class Heartbeats:
    def __init__(
        self,
        replica: Replica,
        transport: SwarmTransport,
        options: ReplicationOptions,
        counters: ReplicationCounters,
        cursor: LogCursor,
        publisher: Publisher,
        caught_up: Callable[[], bool],
        read_log: Callable[[], None],
    ) -> None:
        """`caught_up` tells whether the first catch-up is done; `read_log` asks for one."""
        self.replica = replica
        self.transport = transport
        self.options = options
        self.counters = counters
        self.cursor = cursor
        self.publisher = publisher
        self._caught_up = caught_up
        self._read_log = read_log
        self.peers: dict[str, dict[str, Any]] = {}
        # every document's facts and their digest, while no document changed
        self._all_facts: tuple[Signature, dict[str, dict[str, Any]], str] | None = None
        self._facts: dict[str, tuple[int, dict[str, Any]]] = {}  # path -> (revision, facts)
        # Anti-entropy's view one round ago: the log's last id, and per file behind then, the
        # union of the peers' state vectors (see anti_entropy).
        self._log_last_seen: str | None = None
        self._wanted: dict[str, vector.StateVector] = {}
        self.started_at = time.time()
        self.host = socket.gethostname()

    def info(self) -> dict[str, Any]:
        """What this node tells the swarm about itself: enough for `swarm status` to decide
        convergence from state vectors and to show why a node lags."""
        files, digest = self._all_file_facts()
        report = self.replica.report()
        problems = self.transport.problems
        beat = Heartbeat(
            role=self.options.role,
            host=self.host,
            pid=os.getpid(),
            started=self.started_at,
            ready=self._caught_up(),
            outbox=self.replica.outbox_depth(),
            cursor=self.cursor.position,
            lag=self.counters.lag,
            # the newest problem with Redis or the swarm key first
            last_error=(problems.newest() if problems else None) or report.last_error,
            problems=problems.active if problems else {},
            skipped=report.skipped,
            deletions_held=report.deletions_held,
            files_held=report.files_held,
            disk=report.disk,
            refused=report.refused,
            protected_refused=report.protected_refused,
            not_synced=report.not_synced,
            files_digest=digest,
        )
        # The per-file facts stay the very objects cached (the transport then skips them).
        return {**beat.model_dump(exclude={"files"}), "files": files}

    def _all_file_facts(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Every file's facts and their digest; the same objects while no document changed (the
        transport then skips re-sending them, and nothing is re-encoded)."""
        docs = self.replica.docs
        signature = [(path, doc.revision) for path, doc in docs.items()]
        cached = self._all_facts
        if cached is not None and cached[0] == signature:
            return cached[1], cached[2]
        files = {path: self._file_facts(path, doc) for path, doc in docs.items()}
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
            changed=self.replica.changed(path),
        ).model_dump()
        self._facts[path] = (doc.revision, facts)
        return facts

    async def loop(self, stop: asyncio.Event) -> None:
        interval = self.options.heartbeat_interval
        while not stop.is_set():
            try:
                self.replica.commit()  # what the heartbeat claims is stored
                await self.transport.heartbeat(self.info(), ttl_s=self.options.offline_after)
                await self.anti_entropy()
            except TransportError as exc:
                self.cursor.suspect()
                log.debug("heartbeat failed: %s", exc)
            await sleep_or_stop(stop, interval)

    async def anti_entropy(self) -> None:
        """Repair what pub/sub lost. Only what was already known one round ago counts: under
        load the log and the peers are always a little ahead (messages in flight), and acting
        on that would read the log and request every busy file each round. So the log is read
        when the cursor has not reached the log's end of the previous round, and a file is
        asked for when this node still lacks operations its peers had a round ago (or when it
        waited on missing operations for two rounds)."""
        info = await self.transport.log_info()
        last, seen_last = info.get("last_id"), self._log_last_seen
        if seen_last and self.cursor.behind(seen_last):
            self._read_log()
        generated = info.get("last_generated_id") or "0-0"
        if parse_stream_id(generated) < parse_stream_id(self.cursor.newest_known()):
            self._read_log()  # the log ends before entries this node knows: lost some
        self._log_last_seen = last
        peers = await self.transport.presence()
        self._check_keys()
        online = {node: info for node, info in peers.items() if node != self.options.node_id}
        self.peers = online
        # Peers holding exactly our state vectors need no per-file comparison: the usual case.
        facts, mine = self._all_file_facts()
        differing = {n: i for n, i in online.items() if i.get("files_digest") != mine}
        if differing:  # only now read their per-file facts: the summaries alone say "same"
            files = await self.transport.files_of(sorted(differing))
            differing = {n: {**i, "files": files.get(n, {})} for n, i in differing.items()}
        docs = self.replica.docs
        total_lag = 0
        behind: dict[str, int] = {path: 0 for path, doc in docs.items() if doc.has_pending}
        wanted: dict[str, vector.StateVector] = {path: {} for path in behind}
        digests = {path: f["digest"] for path, f in facts.items()}
        for path, want in _union_by_path(differing, digests).items():
            if self.replica.refuses(path):
                continue  # never synced here: asking for it would only be refused again
            doc = docs.get(path)
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
            doc = docs.get(path)
            have = doc.state_vector_dict() if doc is not None else {}
            stuck = doc is not None and doc.has_pending and path in previous
            if not stuck and vector.missing(have, previous.get(path, {})) == 0:
                continue
            sv = doc.state_vector() if doc is not None else vector.encode({})
            self.counters.sync_requests += 1
            await self.publisher.publish(self.publisher.envelope(path, Kind.SYNC_REQUEST, sv))

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

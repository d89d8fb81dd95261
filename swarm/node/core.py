"""The node's state and the rules every part of it shares: one lock per path, the versions this
node last saw on disk, the document log and outbox (every local update), the edge."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from swarm.bridge import (
    DisplacedWatch,
    PathPolicy,
)
from swarm.bridge.survey import Survey
from swarm.edge import Edge
from swarm.file_health import DiskState, FileHealth
from swarm.flood import FloodGuard
from swarm.heap import TrimSchedule
from swarm.memory import MemoryDoc, UpdateError
from swarm.memory.stamps import Author
from swarm.merges import MergeJournal
from swarm.node.options import NodeCounters, NodeOptions
from swarm.protect.guard import Protection
from swarm.store import Store

log = logging.getLogger("swarm.node")

_COMPACT_UPDATES = 500  # fold a path's update log into one state past this many updates
_COMPACT_BYTES = 2 * 1024 * 1024


class NodeCore:
    """State shared by the node's parts (guard, ingest, render, replica side, maintenance)."""

    _displaced: DisplacedWatch  # old files renders took from writers (set by the ingest part)

    def __init__(self, options: NodeOptions, store: Store) -> None:
        self.options = options
        self.root = options.root
        self.store = store
        self.policy = PathPolicy(
            options.root,
            include=options.include,
            ignore=options.ignore,
            private=options.private,
            state_dir=options.state_dir,
        )
        self.docs: dict[str, MemoryDoc] = {}
        self.counters = NodeCounters()
        self._render_hold_until = 0.0  # loop time; see hold_renders
        self._renders_released = asyncio.Event()
        self._trim_schedule = TrimSchedule()  # when freed memory goes back to the OS
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._deferred: set[str] = set()  # dirty paths waiting out their render interval
        # path -> fingerprint of what the agent itself last wrote
        self._own_write: dict[str, tuple[int, bytes]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._exists: dict[str, bool] = {}
        self._stats: dict[str, tuple[int, int, int]] = {}  # what we last read or wrote, per path
        # What peers may send (paths, sizes), and which files could not be rendered.
        self.edge = Edge(self.policy, options.max_bytes)
        self.counters.rejected_by_reason = self.edge.by_reason
        self.health = FileHealth()
        self.merges = MergeJournal()  # what renders wrote from peers' edits: log lines, status page
        # path -> when this node last changed it itself (since it started): status, "last change"
        self.changed_at: dict[str, float] = {}
        self.not_synced = Survey()  # what the folder holds that does not sync, as of the rescan
        self.flood = FloodGuard(
            options.state_dir, options.new_files_per_minute, options.new_mb_per_minute
        )
        self._log_grew: set[str] = set()  # paths whose update log grew since `compact`
        self._retrying: set[str] = set()  # paths with an ingest retry scheduled
        self._busy_retries: dict[str, int] = {}  # path -> looks at a file held open for writing
        self._last: dict[str, str | None] = {}  # path -> newest recorded version
        self._background: set[asyncio.Task[None]] = set()
        # Deletions the watcher reported, waiting to be judged together (see _ingest_batch).
        self._gone: set[str] = set()
        self._gone_seen = 0
        self._judging: asyncio.Task[None] | None = None
        # Set while deletions are held back by the mass-delete guard: the reason, for status.
        self.deletions_held: str | None = None
        self._busy_wait: dict[str, float] = {}  # path -> next wait while a writer holds it
        self.author = Author(options.node_id, options.role) if options.node_id else None
        self.protection = Protection(options.node_id)  # guarded files (swarm/protect/): off

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    def _lock(self, path: str) -> asyncio.Lock:
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = asyncio.Lock()
        return lock

    def _existed(self, path: str) -> bool:
        """Whether the file existed on disk at this node's last sync of it."""
        return self._exists.get(path, False)

    def _set_existed(self, path: str, exists: bool) -> None:
        self.store.set_file_state(path, exists=exists)
        self._exists[path] = exists

    def doc(self, path: str) -> MemoryDoc:
        doc = self.docs.get(path)
        if doc is None or doc.broken:
            doc = self._restore(path) if doc is not None else MemoryDoc(path, author=self.author)
            self.docs[path] = doc
        return doc

    def _restore(self, path: str) -> MemoryDoc:
        try:
            doc = MemoryDoc.restore(path, self.store.load_doc(path), self.author)
        except UpdateError as exc:
            # A stored update pycrdt now refuses: keep what can be applied, say so once.
            self.counters.last_error = str(exc)
            log.error("restoring %s: %s", path, exc)
            doc = MemoryDoc(path, author=self.author)
            for update in self.store.load_doc(path):
                try:
                    doc.apply(update)
                except UpdateError:
                    continue
        return doc

    def _last_version(self, path: str) -> str | None:
        """What this node last saw on disk for `path` (kept in memory: every ingest and render
        asks, and reading it back from SQLite each time would cost a file's size per render)."""
        if path not in self._last:
            self._last[path] = self.store.last_version(path)
        return self._last[path]

    def _record_absent(self, path: str) -> None:
        """The file is gone from disk (or was never here): an agent that looks now reads no
        file, and whatever it writes next may derive from nothing. The absence is kept among
        the versions as the empty text, so that write is merged as adding to an empty file,
        not diffed against a render it never read (which would remove the render's lines)."""
        self._record_version(path, ABSENT)
        self._set_existed(path, False)

    def _record_version(self, path: str, text: str) -> str:
        """Returns the copy of `text` kept: the document's own when equal (one copy, not two,
        of every large file in memory)."""
        if self._last.get(path) != text:  # else already the newest: no SQLite read to find out
            self.store.record_version(path, text)
        doc = self.docs.get(path)
        if doc is not None:
            current = doc.content
            if current == text:
                text = current
        self._last[path] = text
        return text

    def _append(self, path: str, update: bytes, *, local: bool) -> int | None:
        if local:
            self.changed_at[path] = time.time()
        self._log_grew.add(path)
        return self.store.append_update(path, update, local=local)

    def _persist_local(self, path: str, updates: list[bytes]) -> None:
        if not updates:
            return
        with self.store.batch():
            for update in updates:
                self._append(path, update, local=True)
        self._notify()

    def _doc_bytes(self, doc: MemoryDoc) -> int:
        """The file size of `doc`, exact only when it may be over the limit (cheap otherwise)."""
        size = doc.stored_bytes
        return size if size <= self.options.max_bytes else doc.content_bytes()

    def mark_dirty(self, path: str) -> None:
        self._dirty.add(path)
        self._dirty_event.set()

    def reject(self, path: str, reason: str, detail: str, count: int = 1) -> None:
        """Drop `count` updates of `path` from the swarm: counted by reason, logged once."""
        self.counters.rejected += count
        self.edge.reject(path, reason, detail, count)

    def refuses(self, path: str) -> bool:
        """True when this node never syncs `path` (peers' heartbeats name it: never ask)."""
        return self.edge.refusal(path) is not None

    def compact(self) -> None:
        """Fold long update logs into one state, so restarts stay fast and the store small.
        Only paths whose log grew since the last look are checked."""
        grown, self._log_grew = self._log_grew, set()
        for path in grown:
            doc = self.docs.get(path)
            if doc is None:
                continue
            count, size = self.store.log_stats(path)
            if count > _COMPACT_UPDATES or size > _COMPACT_BYTES:
                self.store.compact_doc(path, doc.encode_state())

    def last_error(self) -> str | None:
        """What status shows: a file that cannot be rendered, else the node's last error."""
        return self.health.problems.newest() or self.counters.last_error

    def disk_matches(self, path: str) -> bool:
        """Whether the disk holds the document of `path`, as far as this node knows (what it
        last rendered or read there; an agent write not yet ingested is not known)."""
        doc = self.docs.get(path)
        if doc is None:
            return True
        if not doc.exists:
            return not self._existed(path)
        return self._existed(path) and self._last_version(path) == doc.content

    def disk_states(self) -> dict[str, DiskState]:
        """Every file whose disk is not known to hold its document: pending or failed."""
        found: dict[str, DiskState] = {}
        for path, doc in self.docs.items():
            if path not in self.health.failures and self.health.is_synced(path, doc.revision):
                continue
            if path not in self.health.failures and self.disk_matches(path):
                self.health.rendered(path, doc.revision)
                continue
            found[path] = self.health.state(path)
        return found

    async def close(self) -> None:
        """Cancel retries still scheduled (before the store closes under them)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._displaced.close()  # files not read yet stay on disk for the next start


ABSENT = ""  # the version an agent reads where there is no file

"""One sidecar: the memory folder, its CRDT documents and the local store, wired together.

The node owns every `MemoryDoc` and is the only place where the file bridge, the memory model and
the store meet. Replication (swarm/replication.py) talks to it through `apply_remote`,
`local_updates` and the document accessors; it never touches files.

Ordering rules that keep edits from being lost:
* An agent write is persisted (document log + outbox, one commit) before anything leaves the node.
* A render first checks that the file still holds what this node last saw; if not, the agent's
  write is ingested first and the render retried, so an unseen write is never overwritten.
* Each path has one lock: ingesting and rendering a file never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from swarm.bridge import (
    DEFAULT_MAX_BYTES,
    AgentWriteCaptured,
    Displaced,
    DisplacedWatch,
    FileEvent,
    FolderWatcher,
    PathPolicy,
    ReadResult,
    RenderBusy,
    RenderConflict,
    RenderError,
    RenderResult,
    read_stable,
    recover_leftovers,
    remove_file,
    scan,
    write_atomic,
)
from swarm.bridge.displaced import content_digest
from swarm.bridge.pathrules import path_problem, shown
from swarm.bridge.survey import Survey
from swarm.edge import APPLY_FAILED, INAPPLICABLE, OVERSIZE_FILE, Edge
from swarm.file_health import DiskState, FileHealth
from swarm.flood import DEFAULT_FILES, DEFAULT_MB, FloodGuard
from swarm.heap import Trim, TrimSchedule, release_free_memory
from swarm.memory import MemoryDoc, UpdateError
from swarm.memory.batching import merge_runs
from swarm.memory.stamps import Author
from swarm.merges import MergeJournal
from swarm.metrics import Histogram, apply_latency, render_latency
from swarm.problems import one_line
from swarm.protect.guard import LOCAL_WRITE, Protection
from swarm.store import Store

log = logging.getLogger(__name__)

_COMPACT_UPDATES = 500  # fold a path's update log into one state past this many updates
_COMPACT_BYTES = 2 * 1024 * 1024
DEFAULT_PRIVATE = ("memory/private/", "*.private.md")
CONFIRM_DELETES_FILE = "confirm-deletes"
_SUSPICIOUS_SETTLE = 0.5  # quiet time demanded of a read that looks like a write in progress
_RETRY_S = 0.25  # a file still being written is looked at again after this long
_BUSY_RETRY_S = 0.01  # first look again at a file another process holds open for writing

# While a node renders more than this many files a second, a file due again soon has its render
# interval doubled (see next_render_interval).
RENDER_BUDGET = 100
# A file another process holds open for writing is not rendered; it is tried again after this
# wait, doubled up to the longest while the writer keeps it open.
_BUSY_RETRY = (0.02, 1.0)


@dataclass
class NodeOptions:
    root: Path
    state_dir: Path
    debounce_ms: int = 30
    max_bytes: int = DEFAULT_MAX_BYTES
    include: tuple[str, ...] = ("*.md",)
    ignore: tuple[str, ...] = ()
    # Never leave the node: not ingested, not published, a remote update for them is refused.
    private: tuple[str, ...] = DEFAULT_PRIVATE
    settle: float = 0.02
    # Least time between two renders of one file: it starts at `render_interval` and doubles,
    # up to `render_interval_max`, while updates keep arriving faster than that.
    render_interval: float = 0.025
    render_interval_max: float = 0.2
    render_concurrency: int = 8  # files rendered at once
    # Mass-delete guard: more than this share of the known files gone in one batch (and at least
    # `delete_guard_min` of them), or the whole folder gone, holds deletions until confirmed.
    delete_guard_share: float = 0.5
    delete_guard_min: int = 3
    # Deletions seen by the watcher are judged together once none came for this long: `rm -r`
    # on a loaded machine arrives in several batches, each too small to look like an accident.
    delete_quiet: float = 0.3
    # New-file budget (swarm/flood.py): a flood of new files within a minute is held.
    new_files_per_minute: int = DEFAULT_FILES
    new_mb_per_minute: float = DEFAULT_MB
    # Who this node is: recorded in the documents with every local change (swarm blame).
    node_id: str = ""
    role: str = ""


@dataclass
class NodeCounters:
    """What the node did, for metrics and status."""

    ingested: int = 0
    rendered: int = 0
    deleted: int = 0
    remote_applied: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # see swarm/edge.py
    render_errors: int = 0
    ingest_errors: int = 0
    skipped_files: dict[str, str] = field(default_factory=dict)  # path -> problem
    last_error: str | None = None
    apply_seconds: Histogram = field(default_factory=apply_latency)
    render_seconds: Histogram = field(default_factory=render_latency)


class Node:
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
        # Old files renders took from writers still writing them (render.py), and a crash's.
        self._displaced = DisplacedWatch(self._merge_displaced)
        self._busy_wait: dict[str, float] = {}  # path -> next wait while a writer holds it
        self.author = Author(options.node_id, options.role) if options.node_id else None
        self.protection = Protection(options.node_id)  # guarded files (swarm/protect/): off

    # -- wiring --------------------------------------------------------------------------------

    def on_local_update(self, callback: Callable[[], None]) -> None:
        """Called whenever the outbox grew (replication wakes up to flush it)."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    def _lock(self, path: str) -> asyncio.Lock:
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = asyncio.Lock()
        return lock

    # -- start-up ------------------------------------------------------------------------------

    def _existed(self, path: str) -> bool:
        """Whether the file existed on disk at this node's last sync of it."""
        return self._exists.get(path, False)

    def _set_existed(self, path: str, exists: bool) -> None:
        self.store.set_file_state(path, exists=exists)
        self._exists[path] = exists

    def load(self) -> None:
        """Rebuild every document from the store (a crash loses nothing that was committed).

        A stored path no file system takes (sent by a peer before the edge checked paths) is
        dropped; a document that cannot be rebuilt is left out and reported: neither may stop
        the start, or every restart would stop at it again."""
        self._exists = self.store.file_states()
        paths = self.store.paths()
        self._log_grew = set(paths)  # the first `compact` looks at every log
        for path in paths:
            problem = path_problem(path)
            if problem is not None:
                log.warning("dropping a stored document of %s: %s", shown(path), problem)
                self.store.forget_doc(path)
                continue
            try:
                doc = self._restore(path)
                followups = doc.settle()
            except Exception as exc:
                self.counters.last_error = f"{path}: cannot be loaded: {one_line(exc)}"
                log.exception("loading %s failed; it is not synced until the next start", path)
                continue
            self.docs[path] = doc
            self._persist_local(path, followups)
        # A crash can leave a render's temp files: the old file a render swapped out (it may
        # hold an agent write: merged once readable) or a new text never swapped in (removed).
        for handle in recover_leftovers(self.root, self.policy.ignores_dir):
            self._adopt_render(handle)
            self._displaced.add(handle)

    def _adopt_render(self, handle: Displaced) -> None:
        """A crash between a render's swap and its record leaves the render's text on disk with
        the store still naming the old one as what the disk holds: the next read would take
        that text for an agent's write (dropping what the swapped-out file holds). Recognised
        by its digest, it is recorded as rendered."""
        path = handle.rel
        if handle.rendered is None or self.refuses(path):
            return
        read = read_stable(self.root / path, root=self.root, settle=0.0)
        if read.text is None or read.text == self._last_version(path):
            return
        if content_digest(read.text.encode("utf-8")) == handle.rendered:
            with self.store.batch():
                self._record_version(path, read.text)
                self._set_existed(path, True)

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

    async def reconcile(self, *, deletions_confirmed: bool = False) -> None:
        """Bring disk and documents together after start or catch-up: ingest what agents wrote
        while the node was away, delete what they deleted, render what the swarm has."""
        on_disk = set(await asyncio.to_thread(scan, self.root, self.policy))
        for path in sorted(on_disk):
            await self.ingest(path)
        gone = [p for p, e in self._exists.items() if e and p not in on_disk and p in self.docs]
        if deletions_confirmed or not self._guard_deletions(len(gone)):
            for path in gone:
                await self.ingest(path)  # reads "missing": a deletion made while we were away
        for path in list(self.docs):
            self.mark_dirty(path)

    # -- mass-delete guard ---------------------------------------------------------------------

    def _guard_deletions(self, count: int) -> bool:
        """True (and hold deletions) when `count` files vanishing at once looks like an accident:
        an unmounted volume, a wiped folder. Other nodes keep their copies until an operator
        confirms (`swarm confirm-deletes`) or the files come back."""
        if self.deletions_held is not None:
            return True
        if not self.root.is_dir():
            self._hold(f"memory folder {self.root} is missing")
            return True
        known = sum(1 for exists in self._exists.values() if exists)
        if (
            count >= self.options.delete_guard_min
            and count > known * self.options.delete_guard_share
        ):
            self._hold(f"{count} of {known} files disappeared at once")
            return True
        return False

    def _hold(self, reason: str) -> None:
        self.deletions_held = reason
        self.counters.last_error = f"deletions held: {reason}; run `swarm confirm-deletes`"
        log.error("mass-delete guard: %s; deletions are not propagated until confirmed", reason)

    async def check_deletion_hold(self) -> None:
        """Lift the hold when the operator confirmed, or when the files are back."""
        if self.deletions_held is None:
            return
        confirm = self.options.state_dir / CONFIRM_DELETES_FILE
        confirmed = confirm.exists()
        if not confirmed and self.root.is_dir():
            on_disk = set(await asyncio.to_thread(scan, self.root, self.policy))
            missing = [p for p, e in self._exists.items() if e and p not in on_disk]
            if missing:
                return
        log.warning("mass-delete guard lifted (%s)", "confirmed" if confirmed else "files back")
        self.deletions_held = None
        self.counters.last_error = None
        confirm.unlink(missing_ok=True)
        await self.reconcile(deletions_confirmed=confirmed)

    # -- local changes -------------------------------------------------------------------------

    def doc(self, path: str) -> MemoryDoc:
        doc = self.docs.get(path)
        if doc is None or doc.broken:
            doc = self._restore(path) if doc is not None else MemoryDoc(path, author=self.author)
            self.docs[path] = doc
        return doc

    async def ingest(self, path: str) -> None:
        """Read an agent's write of `path` and turn it into a local update."""
        async with self._lock(path):
            await self._ingest_locked(path)

    async def _ingest_locked(self, path: str) -> None:
        result = await self._read(path, self.options.settle)
        last = self._last_version(path)
        if result.text is not None and last and _looks_mid_write(result.text, last):
            # An agent rewriting in place truncates, then writes: under load the gap can outlast
            # the quiet window, and ingesting the truncated file would delete lines everywhere.
            result = await self._read(path, _SUSPICIOUS_SETTLE, quiet=True)
        existed = self._existed(path)
        if result.writer_open and not _appended(result.text, last if existed else None):
            # Another process is writing the file: what it holds may be a rewrite half done.
            # Only an append (the old text, extended) is safe to take before the writer closes.
            self._retry_ingest_later(path, busy=True)
            return
        self._busy_retries.pop(path, None)
        if result.missing:
            if self.deletions_held is not None:
                return
            if existed and self.protection.refuses_local(path):
                self._refuse_local(path, None)
                return
            if path in self.docs and existed and self.docs[path].exists:
                self._delete_locally(path, last)
            elif existed:
                with self.store.batch():
                    self._record_absent(path)
            return
        if result.text is None:
            problem = result.problem or "unreadable"
            if problem.startswith("still being written"):
                self._retry_ingest_later(path)  # a busy writer: look again soon, not at rescan
            if self.counters.skipped_files.get(path) != problem:
                log.warning("not syncing %s: %s", path, problem)
                self.counters.skipped_files[path] = problem
            return
        self.counters.skipped_files.pop(path, None)
        if result.stat is not None:
            self._stats[path] = result.stat
        if existed and result.text == last:
            return  # our own render coming back (or nothing new): not an agent write
        if self.protection.refuses_local(path):
            self._refuse_local(path, result.text)
            return
        if not self.flood.admit(path, result.text, self.docs.get(path)):
            return  # held by the new-file budget until confirmed (swarm/flood.py)
        self._ingest_text(path, result.text)

    def _refuse_local(self, path: str, text: str | None) -> None:
        """An agent here changed (or, `text` None, deleted) a protected file, and this node is
        not one of its writers: nothing is sent; the attempt is kept in the store (`swarm
        history`), counted for status, and the disk goes back to the swarm's version (a file the
        swarm has no version of is left as it is)."""
        self.protection.refuse(self.options.node_id or "this node", path, LOCAL_WRITE)
        doc = self.docs.get(path)
        with self.store.batch():
            if text is not None:
                self.store.keep_refused(path, text)
                self._record_version(path, text)  # what the disk holds: the render replaces it
            self._set_existed(path, text is not None)
        if doc is not None and not doc.is_empty:
            self.mark_dirty(path)

    async def close(self) -> None:
        """Cancel retries still scheduled (before the store closes under them)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._displaced.close()  # files not read yet stay on disk for the next start

    def _retry_ingest_later(self, path: str, *, busy: bool = False) -> None:
        """Look at `path` again soon. A file another process holds open for writing is looked
        at every 10 ms at first, backing off to 250 ms (no event says when the writer closes)."""
        if path in self._retrying:
            return
        self._retrying.add(path)
        delay = _RETRY_S
        if busy:
            tries = self._busy_retries[path] = self._busy_retries.get(path, 0) + 1
            delay = min(_RETRY_S, _BUSY_RETRY_S * 2 ** min(tries - 1, 8))

        async def retry() -> None:
            await asyncio.sleep(delay)
            self._retrying.discard(path)
            try:
                await self.ingest(path)
            except Exception as exc:  # reported like any failed ingest; the rescan tries again
                self.counters.ingest_errors += 1
                self.counters.last_error = f"{path}: {exc}"

        task = asyncio.get_running_loop().create_task(retry())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read(self, path: str, settle: float, *, quiet: bool = False) -> ReadResult:
        return await asyncio.to_thread(
            read_stable,
            self.root / path,
            root=self.root,
            max_bytes=self.options.max_bytes,
            settle=settle,
            quiet=quiet,
        )

    def _ingest_text(self, path: str, text: str) -> None:
        """An agent wrote `text` to `path`: merge it and persist the update (one commit)."""
        doc = self.doc(path)
        versions = self.store.versions(path)
        bases = self._bases(path, versions)
        adopt = not versions and not doc.is_empty
        kept = [] if doc.exists else [content for _, content in self.store.trashed(path)]
        before = doc.content if log.isEnabledFor(logging.DEBUG) else None
        update = doc.write(text, bases, adopt=adopt, kept=kept)
        if before is not None:
            gone = set(before.splitlines()) - set(doc.content.splitlines())
            log.debug(
                "ingested %s: %d bases, removed %d lines %s; written==merged %s",
                path,
                len(bases),
                len(gone),
                sorted(gone)[:3],
                doc.content == text,
            )
        with self.store.batch():
            if update is not None:
                self._append(path, update, local=True)
            text = self._record_version(path, text)
            self._set_existed(path, True)
        self._own_write[path] = _fingerprint(text)
        self.counters.ingested += 1
        if update is not None:
            self._notify()
        if doc.content != text:
            self.mark_dirty(path)  # the merge holds more than the agent wrote: render it

    def _bases(self, path: str, versions: list[str]) -> list[str]:
        """Versions the agent may have read: newest first, back to its own last write (an agent
        always sees what it wrote itself). Once the agent deleted the file itself, back to that
        deletion only: what it writes next is a new file (based on the absent file, "", see
        `_record_absent`), not a stale copy of the old one."""
        own = self._own_write.get(path)
        if own is None:
            return versions
        found: list[str] = []
        for version in versions:
            found.append(version)
            if own == _DELETED and version == ABSENT:
                return found
            if len(version) == own[0] and _fingerprint(version) == own:
                return found
        return [*found, ABSENT] if own == _DELETED else found

    def _bases_before(self, path: str, versions: list[str], expected: str) -> list[str]:
        """Versions a write displaced by a render may derive from: what the render replaced
        (`expected`) and the older ones back to the agent's own last write. The agent read the
        file before it wrote the old one, maybe long before: a render or two earlier (diffed
        against `expected` only, its write removed what those renders added)."""
        older = self._bases(path, versions)
        if expected in older:
            return older[older.index(expected) :]
        return [expected, *older]

    def _record_absent(self, path: str) -> None:
        """The file is gone from disk (or was never here): an agent that looks now reads no
        file, and whatever it writes next may derive from nothing. The absence is kept among
        the versions as the empty text, so that write is merged as adding to an empty file,
        not diffed against a render it never read (which would remove the render's lines)."""
        self._record_version(path, ABSENT)
        self._set_existed(path, False)

    def _delete_locally(self, path: str, last: str | None) -> None:
        doc = self.docs[path]
        content = doc.content
        update = doc.delete()
        self._own_write[path] = _DELETED
        with self.store.batch():
            self.store.trash(path, last if last is not None else content)
            if update is not None:
                self._append(path, update, local=True)
            self._record_absent(path)
        self.counters.deleted += 1
        if update is not None:
            self._notify()

    def _last_version(self, path: str) -> str | None:
        """What this node last saw on disk for `path` (kept in memory: every ingest and render
        asks, and reading it back from SQLite each time would cost a file's size per render)."""
        if path not in self._last:
            self._last[path] = self.store.last_version(path)
        return self._last[path]

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

    # -- remote changes ------------------------------------------------------------------------

    def apply_remote(self, path: str, update: bytes, sender: str | None = None) -> bool:
        """Merge an update from the swarm (from node `sender`; None: a snapshot); False if it
        was rejected (malformed, refused).

        The caller groups many calls in one `store.batch()` (one commit per burst).
        """
        return self.apply_remote_many(path, [update], (sender,) if sender else ()) == 1

    def apply_remote_many(
        self, path: str, updates: list[bytes], senders: Iterable[str] = ()
    ) -> int:
        """Merge updates of one path, given in log order, in one go (catch-up reads thousands):
        each writer's adjacent updates are merged first (`merge_runs`), so pycrdt integrates,
        and the store keeps, one instead of many. Returns how many were applied.

        The edge comes first (swarm/edge.py): a path this node never syncs, an update that does
        not apply or that would make the file larger than the limit is counted and dropped, and
        leaves nothing behind: no document, no store row, nothing in heartbeats or snapshots.
        Whatever else goes wrong with one path is reported and leaves the node running."""
        refusal = self.edge.refusal(path)
        if refusal is not None:
            self.reject(path, *refusal, count=len(updates))
            return 0
        known = path in self.docs
        try:
            with self.store.batch():  # a savepoint: a failure undoes this path's writes only
                applied = self._apply_updates(path, updates)
        except Exception as exc:
            log.exception("applying updates of %s failed", path)
            self.reject(path, APPLY_FAILED, one_line(exc), len(updates))
            self.docs.pop(path, None)
            if known:
                try:
                    self.docs[path] = self._restore(path)
                except Exception:
                    log.exception("%s cannot be rebuilt from the store; not synced for now", path)
                else:
                    self.mark_dirty(path)
            return 0
        doc = self.docs.get(path)
        if not known and doc is not None and doc.is_empty and not doc.has_pending:
            del self.docs[path]  # nothing of it was applied: no trace of the path
        elif applied:
            self.merges.remote(path, senders)
        return applied

    def _apply_updates(self, path: str, updates: list[bytes]) -> int:
        doc = first = self.doc(path)
        revision = doc.revision
        applied = 0
        for update, count in merge_runs(updates):
            started = time.perf_counter()
            before = self._doc_bytes(doc)
            try:
                followups = doc.apply(update)
            except UpdateError as exc:
                self.reject(path, INAPPLICABLE, str(exc), count)
                if doc.broken:  # pycrdt may have half-applied it: rebuild from what is stored
                    doc = self.docs[path] = self._restore(path)
                continue
            after = self._doc_bytes(doc)
            too_large = self.edge.oversize(after) if after > before else None
            if too_large is not None:
                # Not stored yet: the document rebuilt from the store has never seen it.
                self.reject(path, OVERSIZE_FILE, too_large, count)
                doc = self.docs[path] = self._restore(path)
                continue
            self.counters.apply_seconds.observe(time.perf_counter() - started)
            self._append(path, update, local=False)
            for followup in followups:
                self._append(path, followup, local=True)
            if followups:
                self._notify()
            self.counters.remote_applied += count
            applied += count
        if doc is not first or doc.revision != revision:
            self.mark_dirty(path)
        return applied

    def _doc_bytes(self, doc: MemoryDoc) -> int:
        """The file size of `doc`, exact only when it may be over the limit (cheap otherwise)."""
        size = doc.stored_bytes
        return size if size <= self.options.max_bytes else doc.content_bytes()

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

    # -- rendering -----------------------------------------------------------------------------

    def mark_dirty(self, path: str) -> None:
        self._dirty.add(path)
        self._dirty_event.set()

    async def render_loop(self, stop: asyncio.Event) -> None:
        """Render dirty files. A file rendered less than its render interval ago waits out the
        rest of it, so a burst of updates to one file costs one render, not one per update; a
        lone update still reaches the disk at once. While the node renders more than its
        budget of files a second, the interval of a file due again soon after its last render
        doubles; under the budget it halves back to the shortest (so a few busy files, or a
        writer that waits for each merge, never wait on a long interval).

        Up to `render_concurrency` files render at once: a render waits mostly on its fsync,
        and the file system commits concurrent fsyncs together (a burst touching 100 files
        otherwise waits for 100 journal commits in a row)."""
        loop = asyncio.get_running_loop()
        base, most = self.options.render_interval, self.options.render_interval_max
        last_render: dict[str, float] = {}
        interval: dict[str, float] = {}
        recent: deque[float] = deque()  # when renders started in the last second
        slots = asyncio.Semaphore(self.options.render_concurrency)
        rendering: set[str] = set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._displaced.run(stop))
            while not stop.is_set():
                await self._dirty_event.wait()
                held = self._render_hold_until - loop.time()
                if held > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._renders_released.wait(), held)
                self._dirty_event.clear()
                while self._dirty:
                    path = self._dirty.pop()
                    if path in rendering:
                        continue  # looked at again when that render ends (see _render_in_slot)
                    if path not in self.docs or self.health.quarantined(path):
                        continue  # nothing to render, or waiting for its retry time
                    gap = interval.get(path, base)
                    since = loop.time() - last_render.get(path, -math.inf)
                    if since < gap:
                        if path not in self._deferred:
                            self._deferred.add(path)
                            loop.call_later(gap - since, self._undefer, path)
                        continue
                    # Rendering more than the budget: a file due again soon after its last
                    # render waits longer next time. Otherwise (a few busy files, or an agent
                    # writing and reading back the merge) it comes back to the shortest wait.
                    now = loop.time()
                    while recent and recent[0] < now - 1.0:
                        recent.popleft()
                    interval[path] = next_render_interval(gap, since, len(recent), base, most)
                    await slots.acquire()
                    last_render[path] = loop.time()
                    recent.append(last_render[path])
                    rendering.add(path)
                    group.create_task(self._render_in_slot(path, slots, rendering))

    def hold_renders(self, seconds: float) -> None:
        """Keep files from being rendered for up to `seconds` (or until `release_renders`): a
        catch-up merges its pages one after the other, and each file needs writing only once."""
        self._render_hold_until = asyncio.get_running_loop().time() + seconds
        self._renders_released.clear()

    @property
    def renders_held(self) -> bool:
        return self._render_hold_until > asyncio.get_running_loop().time()

    def release_renders(self) -> None:
        self._render_hold_until = 0.0
        self._renders_released.set()

    async def _render_in_slot(
        self, path: str, slots: asyncio.Semaphore, rendering: set[str]
    ) -> None:
        revision = self.docs[path].revision
        try:
            await self._render_guarded(path)
        finally:
            rendering.discard(path)
            slots.release()
            doc = self.docs.get(path)
            if doc is not None and (path in self._dirty or doc.revision != revision):
                self.mark_dirty(path)  # changed while it rendered: the loop skipped it

    async def _render_guarded(self, path: str) -> None:
        """Render `path`; whatever fails quarantines that file (retried with backoff, see
        swarm/file_health.py), never the node."""
        loop = asyncio.get_running_loop()
        revision = self.docs[path].revision
        try:
            too_large = self.edge.oversize(self._doc_bytes(self.docs[path]))
            if too_large is not None:
                raise RenderError(errno.EFBIG, f"not written: {too_large}")
            await self.render(path)
        except RenderBusy:
            self._render_when_closed(path)  # pending, not failed: a writer holds the file
            return
        except Exception as exc:
            self.counters.render_errors += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
            loop.call_later(self.health.failed(path, reason), self._retry_render, path)
            return
        doc = self.docs.get(path)
        if doc is None or doc.revision != revision:
            return  # changed meanwhile: rendered again at once (see _render_in_slot)
        if self.disk_matches(path):
            self.health.rendered(path, revision)
        elif self.deletions_held is None:
            # The render gave up: an agent kept rewriting the file, or what is on disk cannot
            # be read. Try again later, not only at the next change (which may never come).
            skipped = self.counters.skipped_files.get(path)
            reason = f"the file on disk is not synced: {skipped}" if skipped else (
                "the file kept changing while it was rendered"
            )
            loop.call_later(self.health.failed(path, reason), self._retry_render, path)

    def last_error(self) -> str | None:
        """What status shows: a file that cannot be rendered, else the node's last error."""
        return self.health.problems.newest() or self.counters.last_error

    def _retry_render(self, path: str) -> None:
        self.health.release(path)
        self.mark_dirty(path)

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

    def _undefer(self, path: str) -> None:
        self._deferred.discard(path)
        self.mark_dirty(path)

    async def render(self, path: str) -> None:
        """Write the merged text of `path` to disk, never over an agent write not yet ingested;
        RenderBusy while another process has the file open for writing."""
        async with self._lock(path):
            for _ in range(10):
                if await self._render_once(path):
                    self._busy_wait.pop(path, None)
                    return
                await self._ingest_locked(path)
            log.warning("%s keeps changing under the renderer; will retry on the next change", path)

    def _render_when_closed(self, path: str) -> None:
        """Another process has `path` open for writing (RenderBusy): no render may land under
        it. The file stays pending and is tried again soon, then less often while it stays open."""
        wait = self._busy_wait.get(path, _BUSY_RETRY[0])
        if wait < _BUSY_RETRY[1] <= wait * 2:
            log.info("%s is held open for writing by another process: rendered once closed", path)
        self._busy_wait[path] = min(wait * 2, _BUSY_RETRY[1])
        asyncio.get_running_loop().call_later(wait, self.mark_dirty, path)

    async def _merge_displaced(self, handle: Displaced, text: str) -> None:
        """A write an agent made to a file a render (or a crash) took away: merged as a write
        based on what that file held (`handle.expected`) or an older version the agent read
        before (back to its own last write; unknown after a crash: every version this node
        recorded), kept as a version the agent saw, never as what the disk holds."""
        path = handle.rel
        async with self._lock(path):
            if self.refuses(path):
                handle.keep = True  # not ours to merge, nor to delete
                log.warning("an agent's write to %s is kept in place: the path is not synced", path)
                return
            if self.protection.refuses_local(path):
                self.protection.refuse(self.options.node_id, path, LOCAL_WRITE)
                self.store.keep_refused(path, text)
                return
            doc = self.doc(path)
            versions = self.store.versions(path)
            expected = handle.expected
            bases = versions if expected is None else self._bases_before(path, versions, expected)
            update = doc.write(text, bases)
            disk = self._last_version(path)
            with self.store.batch():
                if update is not None:
                    self._append(path, update, local=True)
                self._record_version(path, text)
                if disk is not None:
                    self._record_version(path, disk)
            self.counters.ingested += 1
            if update is not None:
                self._notify()
            self.mark_dirty(path)

    async def _render_once(self, path: str) -> bool:
        self.store.commit()  # what a render writes out is stored first (group commit)
        doc = self.doc(path)
        target, exists = doc.content, doc.exists
        last = self._last_version(path)
        existed = self._existed(path)
        file = self.root / path
        if self.deletions_held is not None and not self.root.is_dir():
            return True  # never write into a folder that vanished (an unmounted volume)
        started = time.perf_counter()
        try:
            if exists:
                if existed and last == target:
                    return True
                result = await asyncio.to_thread(
                    write_atomic,
                    file,
                    target,
                    expected=last if existed else None,
                    expect_missing=not existed,
                    settle=self.options.settle,
                    root=self.root,
                    known=self._stats.get(path),
                )
                with self.store.batch():
                    if not existed:
                        self._record_version(path, ABSENT)  # what the agent may have read
                    self._record_version(path, target)
                    self._set_existed(path, True)
            else:
                if not existed:
                    return True
                # The content is in the trash before the file goes: whoever sees it gone can
                # restore it. A deletion that does not happen takes its trash entry back.
                trashed = self.store.trash(path, last) if last is not None else None
                try:
                    result = await asyncio.to_thread(
                        remove_file, file, expected=last, root=self.root, settle=self.options.settle
                    )
                except Exception:
                    if trashed is not None:
                        self.store.untrash(trashed)
                    raise
                with self.store.batch():
                    self._record_absent(path)
            self._took(path, result)
        except AgentWriteCaptured as captured:
            # The render went through, and the agent's write it displaced is in our hands:
            # ingest it, then note that the disk now shows the render, a version the agent may
            # read next (so it must rank after the agent's own write among merge bases).
            self._ingest_text(path, captured.text)
            with self.store.batch():
                self._record_version(path, target)
                self._set_existed(path, True)
            return False
        except RenderBusy:
            raise
        except RenderConflict:
            return False
        self.merges.rendered(path, last if existed else None, target if exists else None)
        self.counters.rendered += 1
        self.counters.render_seconds.observe(time.perf_counter() - started)
        return True

    def _took(self, path: str, result: RenderResult) -> None:
        """Note what a render left on disk, and watch the file it took from a writer."""
        if result.stat is not None:
            self._stats[path] = result.stat
        if result.displaced is not None:
            self._displaced.add(result.displaced)

    # -- watching ------------------------------------------------------------------------------

    async def watch_loop(self, stop: asyncio.Event, started: asyncio.Event) -> None:
        """Watch the folder; if the watcher dies (the folder vanished, inotify trouble), hold
        deletions and start it again once the folder is back."""
        while not stop.is_set():
            watcher = FolderWatcher(self.root, self.policy, debounce_ms=self.options.debounce_ms)
            try:
                events = watcher.events(stop)
                started.set()
                async for batch in events:
                    await self._ingest_batch(batch)
            except Exception as exc:
                self.counters.last_error = f"watcher: {exc}"
                log.error("watcher stopped: %s", exc)
            if stop.is_set():
                return
            self._guard_deletions(0)
            while not stop.is_set() and not self.root.is_dir():
                await _sleep_or_stop(stop, 1.0)
            await _sleep_or_stop(stop, 0.2)

    async def _ingest_batch(self, batch: list[FileEvent]) -> None:
        """Changes are ingested at once; deletions wait until none came for `delete_quiet`, then
        the mass-delete guard judges them together (see `_judge_deletions`)."""
        self._note_gone([e.path for e in batch if e.deleted and self._existed(e.path)])
        for event in batch:
            if not event.deleted:
                await self._ingest_one(event.path)

    def _note_gone(self, gone: list[str]) -> None:
        """Files seen missing (by the watcher or a rescan): judged together once quiet."""
        if not gone or self.deletions_held is not None:
            return
        self._gone.update(gone)
        self._gone_seen += 1
        if self._judging is None:
            self._judging = asyncio.get_running_loop().create_task(self._judge_deletions())
            self._background.add(self._judging)
            self._judging.add_done_callback(self._background.discard)

    async def _judge_deletions(self) -> None:
        """Once deletions stopped coming, hold them all if together they look like an accident;
        else ingest each (a file back by then is read as changed, not deleted)."""
        try:
            seen = -1
            while seen != self._gone_seen:
                seen = self._gone_seen
                await asyncio.sleep(self.options.delete_quiet)
        finally:
            self._judging = None
        gone = sorted(path for path in self._gone if self._existed(path))
        self._gone.clear()
        if not gone or self._guard_deletions(len(gone)):
            return
        for path in gone:
            await self._ingest_one(path)

    async def _ingest_one(self, path: str) -> None:
        try:
            await self.ingest(path)
        except Exception as exc:  # one bad file must not stop the watcher
            self.counters.ingest_errors += 1
            self.counters.last_error = f"{path}: {exc}"
            log.exception("ingesting %s failed", path)

    async def rescan(self) -> None:
        """Ingest every file whose stat changed since this node last read or wrote it: the
        safety net for events a watcher can miss (before it is armed, on overflow)."""
        on_disk, self.not_synced = await asyncio.to_thread(_stat_all, self.root, self.policy)
        for path, key in on_disk.items():
            if self._stats.get(path) != key:
                await self.ingest(path)
        self._note_gone(
            [p for p, e in self._exists.items() if e and p not in on_disk and p in self.docs]
        )

    async def maintenance_loop(
        self, stop: asyncio.Event, interval: float = 1.0, rescan_every: float = 30.0
    ) -> None:
        next_rescan = time.monotonic() + min(0.5, rescan_every)  # the watcher arms lazily
        while not stop.is_set():
            await _sleep_or_stop(stop, min(interval, max(0.0, next_rescan - time.monotonic())))
            try:
                await self.check_deletion_hold()
                await self.flood.check(self.reconcile)
                if time.monotonic() >= next_rescan:
                    await self.rescan()
                    next_rescan = time.monotonic() + rescan_every
                self.compact()
                await asyncio.to_thread(self.store.checkpoint)
                await self._trim()
            except Exception as exc:
                self.counters.last_error = str(exc)
                log.exception("maintenance failed")

    async def _trim(self) -> None:
        """Hand memory freed by the work since the last pass back to the OS (swarm/heap.py)."""
        c = self.counters
        due = self._trim_schedule.due(c.ingested + c.rendered + c.remote_applied + c.deleted)
        if due is Trim.AT_REST:
            # At rest no Python copy of any file's text is needed: the documents hold them, the
            # store holds the last versions, and both are read back when next asked for.
            self._last.clear()
            for doc in self.docs.values():
                doc.drop_caches()
            self.store.release_memory()
        if due is not None:
            await asyncio.to_thread(release_free_memory)  # walks every arena: off the loop

    # -- edits asked for by the agent itself (swarm/control.py) --------------------------------

    async def edit(self, path: str, change: Callable[[str], str]) -> tuple[bytes, int | None]:
        """Make an agent's edit request (`change`: current text -> new text, raising to refuse)
        as a CRDT edit of the document: it runs on the document's current text with nothing in
        between (no file read, no await), so no update it did not see is overwritten. Persisted
        like an agent write (document log + outbox in one commit), then sent and rendered.
        Returns the document's state vector right after, and the outbox id (None: no change)."""
        if self.refuses(path):
            raise ValueError(f"{path} is not synced by this node")
        if self.protection.refuses_local(path):
            raise ValueError(f"{path} is protected and this node is not one of its writers")
        async with self._lock(path):
            doc = self.doc(path)
            current = doc.content if doc.exists else ""
            target = change(current)
            update = doc.write(target, [current]) if target != current else None
            outbox_id = None
            if update is not None:
                outbox_id = self._append(path, update, local=True)  # log + outbox
                self._notify()
                self.mark_dirty(path)
            return doc.state_vector(), outbox_id


def next_render_interval(
    gap: float, since: float, renders_last_second: int, base: float, most: float
) -> float:
    """The wait before a file's next render, given its current one (`gap`) and the time since
    its last render: doubled while the node is over its render budget and the file is due again
    soon (within twice the longest wait), halved back towards `base` otherwise (step by step:
    no swing between extremes)."""
    if renders_last_second > RENDER_BUDGET and since < 2 * most:
        return min(most, gap * 2)
    return max(base, gap / 2)


_DELETED = (-1, b"")  # in place of the agent's own last write: it deleted the file
ABSENT = ""  # the version an agent reads where there is no file


def _fingerprint(text: str) -> tuple[int, bytes]:
    """Identifies a version without keeping a copy of it (the length settles most compares)."""
    return len(text), hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _appended(text: str | None, last: str | None) -> bool:
    """`text` is `last` with more at its end: what an appending writer leaves at any moment."""
    return text is not None and last is not None and text.startswith(last)


def _looks_mid_write(text: str, last: str) -> bool:
    """Empty, or a strict prefix of what the file held: what a truncate-then-write looks like
    from outside while it is under way (a real deletion of the last lines just waits longer)."""
    return len(text) < len(last) and last.startswith(text)


def _stat_all(root: Path, policy: PathPolicy) -> tuple[dict[str, tuple[int, int, int]], Survey]:
    found: dict[str, tuple[int, int, int]] = {}
    survey = Survey()
    for path in scan(root, policy, survey):
        try:
            st = (root / path).stat()
        except OSError:
            continue
        found[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found, survey


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)

"""The ingest pipeline: agent writes (watcher events, the initial scan, files a render took from a
writer, edits through the control socket) become CRDT updates, persisted with their outbox entry
in one commit before anything leaves the node."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

from swarm.bridge import (
    Displaced,
    DisplacedWatch,
    ReadResult,
    read_stable,
    recover_leftovers,
    scan,
)
from swarm.bridge.displaced import content_digest
from swarm.bridge.pathrules import path_problem, shown
from swarm.node.core import ABSENT
from swarm.node.guard import DeletionGuard
from swarm.node.options import NodeOptions
from swarm.problems import one_line
from swarm.protect.guard import LOCAL_WRITE
from swarm.store import Store

log = logging.getLogger("swarm.node")

_SUSPICIOUS_SETTLE = 0.5  # quiet time demanded of a read that looks like a write in progress
_RETRY_S = 0.25  # a file still being written is looked at again after this long
_BUSY_RETRY_S = 0.01  # first look again at a file another process holds open for writing


class Ingest(DeletionGuard):
    def __init__(self, options: NodeOptions, store: Store) -> None:
        super().__init__(options, store)
        # Old files renders took from writers still writing them (render.py), and a crash's.
        self._displaced = DisplacedWatch(self._merge_displaced)

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


_DELETED = (-1, b"")  # in place of the agent's own last write: it deleted the file


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

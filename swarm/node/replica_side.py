"""What replication sees of the node (swarm/replica.py): its outbox and notes, merging what
arrives from the swarm through the edge, and what its heartbeats report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from swarm.edge import APPLY_FAILED, INAPPLICABLE, OVERSIZE_FILE
from swarm.memory import UpdateError
from swarm.memory.batching import merge_runs
from swarm.node.render import Renderer
from swarm.problems import one_line
from swarm.replica import NodeReport
from swarm.store import OutboxEntry

log = logging.getLogger("swarm.node")


class ReplicaSide(Renderer):
    def on_local_update(self, callback: Callable[[], None]) -> None:
        """Called whenever the outbox grew (replication wakes up to flush it)."""
        self._listeners.append(callback)

    def outbox(self, limit: int) -> list[OutboxEntry]:
        return self.store.outbox(limit=limit)

    def ack(self, ids: Iterable[int]) -> None:
        self.store.ack(ids)

    def outbox_depth(self) -> int:
        return self.store.outbox_depth()

    def batch(self) -> AbstractContextManager[None]:
        return self.store.batch()

    def commit(self) -> None:
        self.store.commit()

    def meta(self, key: str) -> str | None:
        return self.store.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.store.set_meta(key, value)

    def changed(self, path: str) -> float | None:
        return self.changed_at.get(path)

    def report(self) -> NodeReport:
        return NodeReport(
            last_error=self.flood.held or self.last_error(),
            skipped=dict(self.counters.skipped_files),
            deletions_held=self.deletions_held,
            files_held=self.flood.report(),
            disk=self.health.summary(self.disk_states()),
            refused=self.edge.refused(),
            not_synced=self.not_synced.to_json(),
            protected_refused=self.protection.report(),
        )

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

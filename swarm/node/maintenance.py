"""The node's background work: watching the folder, the rescan that catches what a watcher
missed, lifting the mass-delete guard, compaction, checkpoints, memory handed back after a burst."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from swarm.bridge import (
    FileEvent,
    FolderWatcher,
    PathPolicy,
    scan,
)
from swarm.bridge.survey import Survey
from swarm.heap import Trim, release_free_memory
from swarm.node.guard import CONFIRM_DELETES_FILE
from swarm.node.replica_side import ReplicaSide

log = logging.getLogger("swarm.node")


class Maintenance(ReplicaSide):
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

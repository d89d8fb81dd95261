"""The render scheduler: merged documents written back to disk, a burst of updates to one file
costing one render, never over an agent write not yet ingested, never under a writer."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import time
from collections import deque

from swarm.bridge import (
    AgentWriteCaptured,
    RenderBusy,
    RenderConflict,
    RenderError,
    RenderResult,
    remove_file,
    write_atomic,
)
from swarm.node.core import ABSENT
from swarm.node.ingest import Ingest
from swarm.problems import one_line

log = logging.getLogger("swarm.node")

# While a node renders more than this many files a second, a file due again soon has its render
# interval doubled (see next_render_interval).
RENDER_BUDGET = 100
# A file another process holds open for writing is not rendered; it is tried again after this
# wait, doubled up to the longest while the writer keeps it open.
_BUSY_RETRY = (0.02, 1.0)


class Renderer(Ingest):
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
            reason = (
                f"the file on disk is not synced: {skipped}"
                if skipped
                else ("the file kept changing while it was rendered")
            )
            loop.call_later(self.health.failed(path, reason), self._retry_render, path)

    def _retry_render(self, path: str) -> None:
        self.health.release(path)
        self.mark_dirty(path)

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

"""Raw changes under a folder from Linux inotify, with close-write events.

An agent that closes a file it wrote has finished writing it: a close-write (and a rename into
place, a deletion, a folder moved or made) is reported at once. Only a file changed and still
held open by its writer (modify, create, attribute events without a close) waits, for up to
`debounce_ms` after its first change, so a writer streaming into an open file is not read once
per `write()`; what the reader then finds (`ReadResult.writer_open`) decides what is taken.

inotify is not recursive: every folder gets a watch of its own, added as folders appear (a
folder made or moved in is reported as itself; the caller scans it, which also covers files
written into it before its watch was armed) and dropped as they go. A queue overflow reports
the root itself: the caller then looks at everything.

Library: asyncinotify (asyncio-native: it waits on the inotify descriptor with the event loop's
`add_reader`, no thread and no polling; typed; pure Python over ctypes). watchfiles, the fallback
elsewhere (watcher.py), never reports close-write events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

from asyncinotify import Event, Inotify, Mask, Watch

_DIR_MASK = (
    Mask.CLOSE_WRITE
    | Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
    | Mask.DONT_FOLLOW
    | Mask.EXCL_UNLINK
)
# A file whose writer is done with it (or that changed name or went away): reported at once.
_FINAL = Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE
# Changes to a file its writer may still hold open: reported once they are `debounce_ms` old.
_PENDING = Mask.MODIFY | Mask.ATTRIB | Mask.CREATE


class FolderGone(OSError):
    """The watched folder itself was deleted or moved away."""


class InotifySource:
    """Batches of absolute paths that changed under `root` (see the module docstring)."""

    def __init__(
        self,
        root: str,
        *,
        debounce_ms: int,
        skip_dir: Callable[[str], bool],
        skip_name: Callable[[str], bool],
        max_depth: int,
    ) -> None:
        self.root = root
        self.debounce = debounce_ms / 1000
        self._skip_dir = skip_dir  # relative POSIX folder -> never watched (swarm's own state)
        self._skip_name = skip_name  # a file name never reported (a render's temp file)
        self._max_depth = max_depth
        self._dirs: dict[int, tuple[Watch, str]] = {}  # wd -> (watch, relative folder)
        self._inotify: Inotify | None = None

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[str]]:
        """Until `stop` is set. Raises FolderGone when the root goes away."""
        with Inotify(cache_size=64, sync_timeout=0) as inotify:
            self._inotify = inotify
            self._watch_tree("")
            pending: dict[str, float] = {}  # path -> when its first unreported change came
            stopping: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
            # One read is kept waiting across timeouts: cancelling it could drop what it read.
            getter: asyncio.Future[object] = asyncio.ensure_future(inotify.get())
            try:
                while not stop.is_set():
                    timeout = None
                    if pending:
                        timeout = max(0.0, min(pending.values()) + self.debounce - time.monotonic())
                    await asyncio.wait(
                        {getter, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    final: set[str] = set()
                    if getter.done():
                        events = [cast(Event, getter.result()), *_drain(inotify)]
                        getter = asyncio.ensure_future(inotify.get())
                        for event in events:
                            self._note(event, final, pending)
                    now = time.monotonic()
                    due = {path for path, first in pending.items() if now - first >= self.debounce}
                    for path in final | due:
                        pending.pop(path, None)
                    if final or due:
                        yield sorted(final | due)
            finally:
                for task in (getter, stopping):
                    task.cancel()
                await asyncio.gather(getter, stopping, return_exceptions=True)
                self._inotify = None
                self._dirs.clear()

    def _note(self, event: Event, final: set[str], pending: dict[str, float]) -> None:
        """File `event` under `final` (report now) or `pending` (report when old enough)."""
        mask = event.mask
        if Mask.Q_OVERFLOW in mask:
            final.add(self.root)  # events were lost: the caller looks at everything
            return
        watch = event.watch
        if watch is None:
            return  # an event still queued for a folder no longer watched
        entry = self._dirs.get(watch.wd)
        if Mask.IGNORED in mask:
            self._dirs.pop(watch.wd, None)
            if entry is not None and entry[1] == "":  # unmounted, or gone without DELETE_SELF
                raise FolderGone(2, "the watched folder is no longer watched", self.root)
            return
        if entry is None:
            return
        folder = entry[1]
        if event.name is None:  # the folder itself
            if mask & (Mask.DELETE_SELF | Mask.MOVE_SELF) and folder == "":
                raise FolderGone(2, "the watched folder is gone", self.root)
            return
        name = str(event.name)
        if Mask.ISDIR not in mask and self._skip_name(name):
            return  # every render makes one: not worth a batch of its own
        rel = f"{folder}/{name}" if folder else name
        path = os.path.join(self.root, rel)
        if Mask.ISDIR in mask:
            if mask & (Mask.CREATE | Mask.MOVED_TO):
                self._watch_tree(rel)
            elif mask & (Mask.MOVED_FROM | Mask.DELETE):
                self._unwatch_tree(rel)
            final.add(path)  # the caller expands a folder into the files it holds (or held)
        elif mask & _FINAL:
            final.add(path)
        elif mask & _PENDING and path not in pending:
            if self.debounce <= 0:
                final.add(path)
            else:
                pending[path] = time.monotonic()

    def _watch_tree(self, rel: str) -> None:
        """Watch folder `rel` and every folder under it (not following links)."""
        stack = [rel]
        while stack:
            folder = stack.pop()
            if folder and (folder.count("/") + 1 >= self._max_depth or self._skip_dir(folder)):
                continue
            path = os.path.join(self.root, folder) if folder else self.root
            if not self._add(path, folder):
                continue
            with contextlib.suppress(OSError), os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(f"{folder}/{entry.name}" if folder else entry.name)

    def _add(self, path: str, rel: str) -> bool:
        assert self._inotify is not None
        mask = _DIR_MASK if rel else _DIR_MASK & ~Mask.DONT_FOLLOW  # the root may be a link
        try:
            watch = self._inotify.add_watch(path, mask)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            if not rel:
                raise
            return False  # gone again, or not ours to read: a scan reports what it can
        self._dirs[watch.wd] = (watch, rel)
        return True

    def _unwatch_tree(self, rel: str) -> None:
        assert self._inotify is not None
        prefix = rel + "/"
        for wd, (watch, folder) in list(self._dirs.items()):
            if folder == rel or folder.startswith(prefix):
                del self._dirs[wd]
                with contextlib.suppress(OSError):
                    self._inotify.rm_watch(watch)


def _drain(inotify: Inotify) -> list[Event]:
    """Events already queued, without waiting (the instance's sync_timeout is 0)."""
    events = []
    while (event := inotify.sync_get()) is not None:
        events.append(event)
    return events

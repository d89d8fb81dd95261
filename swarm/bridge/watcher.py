"""Recursive watching of the memory folder, and the initial scan.

On Linux the changes come from inotify (inotify_source.py): a file its writer closed is reported
at once, a file still held open after `debounce_ms`. Elsewhere (or with SWARM_WATCHER=poll)
watchfiles reports changes once they have been quiet for a few ms, up to `debounce_ms` apart.

The OS reports a folder moved into the root as one event for the folder, and a folder moved
out as one deletion: the watcher expands both into events for the accepted files they hold,
using the set of files it knows.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from watchfiles import awatch

from swarm.bridge.pathrules import MAX_DEPTH
from swarm.bridge.policy import SWARM_STATE, SWARMIGNORE, TEMP_MARK, PathPolicy
from swarm.bridge.survey import Survey
from swarm.bridge.workspace import MARKER_NAMES

DEFAULT_DEBOUNCE_MS = 30
_STEP_MS = 5  # quiet time after the last change before a batch is yielded
_RUST_TIMEOUT_MS = 1000  # bounds how long cancelling the consumer can take
_PLAIN_MAX = 16  # a batch of up to this many accepted files is handled on the event loop


def default_backend() -> str:
    """"inotify" on Linux, else "poll" (watchfiles); SWARM_WATCHER names one explicitly."""
    chosen = os.environ.get("SWARM_WATCHER", "")
    if chosen in ("inotify", "poll"):
        return chosen
    return "inotify" if sys.platform.startswith("linux") else "poll"


@dataclass(frozen=True)
class FileEvent:
    path: str
    deleted: bool


def scan(root: Path, policy: PathPolicy, survey: Survey | None = None) -> list[str]:
    """Every accepted regular file under `root`, sorted; ignored folders are not entered. With a
    `survey`, what is skipped is noted there with its reason."""
    return sorted(_scan_under(root, policy, "", survey))


def _scan_under(
    root: Path, policy: PathPolicy, rel_dir: str, survey: Survey | None = None
) -> set[str]:
    found: set[str] = set()
    start = root / rel_dir if rel_dir else root
    for folder, dirnames, filenames in os.walk(start, followlinks=False):
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        if prefix.count("/") + 1 >= MAX_DEPTH:
            dirnames[:] = []  # nothing deeper can sync (and a deep walk would exhaust the stack)
        entered = []
        for name in dirnames:
            reason = policy.folder_reason(prefix + name)
            if reason is None:
                entered.append(name)
            elif survey is not None and reason != SWARM_STATE:
                survey.skipped(prefix + name, reason, folder=True)
        dirnames[:] = entered
        for name in filenames:
            rel = prefix + name
            reason = policy.file_reason(rel)
            if reason is None:
                if os.path.isfile(root / rel):
                    found.add(rel)
            elif survey is not None and reason != SWARM_STATE and name not in _SETUP_FILES:
                survey.skipped(rel, reason, folder=False)
    return found


def _policy_file(rel: str) -> bool:
    """A file that says what syncs: a change to it reloads the policy."""
    return rel == SWARMIGNORE or rel.rpartition("/")[2] in MARKER_NAMES


# Files that say how the folder syncs, not memory: never listed as "not synced".
_SETUP_FILES = frozenset({SWARMIGNORE, *MARKER_NAMES})


class FolderWatcher:
    """Yields batches of changed accepted paths under `root`."""

    def __init__(
        self,
        root: Path,
        policy: PathPolicy,
        *,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        backend: str | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.policy = policy
        self.debounce_ms = debounce_ms
        self.backend = backend or default_backend()
        self._known: set[str] = set()

    async def events(self, stop: asyncio.Event) -> AsyncIterator[list[FileEvent]]:
        """Batches until `stop` is set; `deleted` reflects whether the path exists now."""
        self._known = set(await asyncio.to_thread(scan, self.root, self.policy))
        async for raw_paths in self._changes(stop):
            batch = self._plain_files(raw_paths)  # the usual case: no thread hop needed
            if batch is None:
                batch = await asyncio.to_thread(self._batch, raw_paths)
            if batch:
                yield batch

    async def _changes(self, stop: asyncio.Event) -> AsyncIterator[list[str]]:
        if self.backend == "inotify":
            # Imported here: asyncinotify loads libc's inotify functions, Linux only.
            from swarm.bridge.inotify_source import InotifySource

            source = InotifySource(
                str(self.root),
                debounce_ms=self.debounce_ms,
                skip_dir=lambda rel: self.policy.folder_reason(rel) == SWARM_STATE,
                skip_name=lambda name: name.startswith(".") and TEMP_MARK in name,
                max_depth=MAX_DEPTH,
            )
            async for paths in source.batches(stop):
                yield paths
            return
        async for changes in awatch(
            self.root,
            watch_filter=None,
            debounce=self.debounce_ms,
            step=min(_STEP_MS, self.debounce_ms),
            stop_event=stop,
            rust_timeout=_RUST_TIMEOUT_MS,
            recursive=True,
        ):
            yield [raw for _, raw in changes]

    def _plain_files(self, raw_paths: list[str]) -> list[FileEvent] | None:
        """The batch for a few accepted files, or None when a path needs `_batch` (a folder,
        the policy's own files, an overflow: scans, done in a worker thread)."""
        if len(raw_paths) > _PLAIN_MAX:
            return None
        rels: set[str] = set()
        for raw in raw_paths:
            rel = self._relative(raw)
            if rel is None or _policy_file(rel) or not self.policy.accepts(rel):
                return None
            rels.add(rel)
        return self._events_for(rels)

    def _batch(self, raw_paths: list[str]) -> list[FileEvent]:
        touched: set[str] = set()
        if str(self.root) in raw_paths:  # events were lost (inotify's queue overflowed)
            touched |= set(scan(self.root, self.policy)) | self._known
        rels = [rel for rel in map(self._relative, raw_paths) if rel is not None]
        if any(map(_policy_file, rels)):
            touched |= self._reload_policy()  # what syncs may have changed
        for rel in rels:
            if rel == SWARMIGNORE:
                continue
            if self.policy.accepts(rel):
                touched.add(rel)
            else:
                touched |= self._expand_folder(rel)
        return self._events_for(touched)

    def _events_for(self, touched: set[str]) -> list[FileEvent]:
        events = [FileEvent(rel, not os.path.exists(self.root / rel)) for rel in sorted(touched)]
        for event in events:
            if event.deleted:
                self._known.discard(event.path)
            else:
                self._known.add(event.path)
        return events

    def _relative(self, raw: str) -> str | None:
        return self.policy.relative(Path(raw))

    def _expand_folder(self, rel: str) -> set[str]:
        """Files a folder event stands for: what it now holds, or what it held if it is gone."""
        if self.policy.ignores_dir(rel):
            return set()
        path = self.root / rel
        if os.path.isdir(path) and not os.path.islink(path):
            return _scan_under(self.root, self.policy, rel)
        if os.path.exists(path):
            return set()
        prefix = rel + "/"
        return {known for known in self._known if known.startswith(prefix)}

    def _reload_policy(self) -> set[str]:
        """Re-read .swarmignore and the workspace's markers and .gitignore files; files they
        newly admit are reported, newly ignored ones forgotten.

        Ignoring a file must not delete it on other nodes, so no deletion is reported.
        """
        self.policy.reload()
        now = set(scan(self.root, self.policy))
        self._known &= now
        return now - self._known

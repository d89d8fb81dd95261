"""Recursive, debounced watching of the memory folder, and the initial scan.

The OS reports a folder moved into the root as one event for the folder, and a folder moved
out as one deletion: the watcher expands both into events for the accepted files they hold,
using the set of files it knows.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from watchfiles import awatch

from swarm import defaults
from swarm.bridge.pathrules import MAX_DEPTH
from swarm.bridge.policy import SWARM_STATE, SWARMIGNORE, PathPolicy
from swarm.bridge.survey import Survey
from swarm.bridge.workspace import MARKER_NAMES

DEFAULT_DEBOUNCE_MS = defaults.DEBOUNCE_MS
_STEP_MS = 5  # quiet time after the last change before a batch is yielded
_RUST_TIMEOUT_MS = 1000  # bounds how long cancelling the consumer can take


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


# Files that say how the folder syncs, not memory: never listed as "not synced".
_SETUP_FILES = frozenset({SWARMIGNORE, *MARKER_NAMES})


class FolderWatcher:
    """Yields batches of changed accepted paths under `root`."""

    def __init__(
        self, root: Path, policy: PathPolicy, *, debounce_ms: int = DEFAULT_DEBOUNCE_MS
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.policy = policy
        self.debounce_ms = debounce_ms
        self._known: set[str] = set()

    async def events(self, stop: asyncio.Event) -> AsyncIterator[list[FileEvent]]:
        """Batches until `stop` is set; `deleted` reflects whether the path exists now."""
        self._known = set(await asyncio.to_thread(scan, self.root, self.policy))
        async for changes in awatch(
            self.root,
            watch_filter=None,
            debounce=self.debounce_ms,
            step=min(_STEP_MS, self.debounce_ms),
            stop_event=stop,
            rust_timeout=_RUST_TIMEOUT_MS,
            recursive=True,
        ):
            batch = await asyncio.to_thread(self._batch, [raw for _, raw in changes])
            if batch:
                yield batch

    def _batch(self, raw_paths: list[str]) -> list[FileEvent]:
        touched: set[str] = set()
        rels = [rel for rel in map(self._relative, raw_paths) if rel is not None]
        if any(rel == SWARMIGNORE or rel.rpartition("/")[2] in MARKER_NAMES for rel in rels):
            touched |= self._reload_policy()  # what syncs may have changed
        for rel in rels:
            if rel == SWARMIGNORE:
                continue
            if self.policy.accepts(rel):
                touched.add(rel)
            else:
                touched |= self._expand_folder(rel)
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

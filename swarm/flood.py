"""The new-file budget: a sudden flood of new files is held, not sent to the swarm.

An agent that unpacks an archive, a tool that generates thousands of notes, a daemon started on
the wrong folder: each would put every file into Redis and onto every peer's disk. Like the
mass-delete guard (swarm/node/guard.py), more new files than the budget within a minute (or more
bytes) holds them: they stay on this disk, untouched and unsent, the node reports it (status,
/readyz, the `swarm_new_files_held` metric, one log line), and whatever else it syncs goes on.
`swarm confirm-files --dir D` lets them through (or raise the budget and restart). A file is new
when this node holds no document of it that exists; changes to known files never count.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from swarm import defaults
from swarm.bridge.reader import format_size
from swarm.memory import MemoryDoc

log = logging.getLogger(__name__)

CONFIRM_FILES_FILE = "confirm-new-files"
WINDOW_S = 60.0
DEFAULT_FILES = defaults.NEW_FILES_PER_MINUTE
DEFAULT_MB = defaults.NEW_MB_PER_MINUTE
_REPORTED = 20  # held paths named in heartbeats (the count is always there)


class FloodGuard:
    def __init__(
        self, state_dir: Path, files: int = DEFAULT_FILES, megabytes: float = DEFAULT_MB
    ) -> None:
        self.confirm_file = state_dir / CONFIRM_FILES_FILE
        self.files_budget = files
        self.bytes_budget = int(megabytes * 1024 * 1024)
        self._window: deque[tuple[float, int]] = deque()  # (monotonic time, bytes) admitted
        self._held: dict[str, int] = {}  # path -> bytes, while held
        self._allowed: set[str] = set()  # confirmed: admitted once without counting
        self.held: str | None = None  # why new files are held, for status and /readyz

    def admit(self, path: str, text: str, doc: MemoryDoc | None) -> bool:
        """Whether `path`, about to be ingested with `text` (into `doc`), may go to the swarm."""
        if doc is not None and doc.exists:
            return True  # a change to a file the swarm has: never counted
        if path in self._allowed:
            self._allowed.discard(path)
            return True
        size = len(text.encode("utf-8"))
        if self.held is None:
            now = time.monotonic()
            while self._window and self._window[0][0] < now - WINDOW_S:
                self._window.popleft()
            files = len(self._window) + 1
            total = sum(size for _, size in self._window) + size
            if files <= self.files_budget and total <= self.bytes_budget:
                self._window.append((now, size))
                return True
            self._trip(files, total)
        self._held[path] = size
        return False

    def _trip(self, files: int, total: int) -> None:
        self.held = (
            f"{files} new files ({format_size(total)}) within a minute, over the budget of "
            f"{self.files_budget} files or {format_size(self.bytes_budget)}: new files are held; "
            "run `swarm confirm-files` or raise new_files_per_minute / new_mb_per_minute"
        )
        log.error("new-file budget: %s", self.held)

    def report(self) -> dict[str, Any] | None:
        """For heartbeats: the reason, how many files and bytes are held, some of their paths."""
        if self.held is None:
            return None
        return {
            "reason": self.held,
            "files": len(self._held),
            "bytes": sum(self._held.values()),
            "paths": sorted(self._held)[:_REPORTED],
        }

    @property
    def held_files(self) -> int:
        return len(self._held)

    async def check(self, rescan: Callable[[], Awaitable[None]]) -> None:
        """Once the operator confirmed: admit the held files (`rescan` ingests them)."""
        if self.held is None or not self.confirm_file.exists():
            return
        log.warning("new-file budget: %d held files confirmed; sending them", len(self._held))
        self._allowed, self._held = set(self._held), {}
        self._window.clear()
        self.held = None
        self.confirm_file.unlink(missing_ok=True)
        await rescan()

"""Recent merges: what this node wrote to disk from its peers' edits.

The node tells the journal who sent the remote updates it applied (`remote`: a set insert, on the
hot path) and, when it renders a file, the text the disk held and the text it wrote (`rendered`):
one line diff per render, never one per update. Renders of one file within `BURST_S` make one
burst: one readable INFO line ("merged 3 lines from local into MEMORY.md") and one entry of the
bounded journal that the status page shows. A render with no remote update behind it (the
node's own merge of an agent's stale write, an edit through the control socket) is not a merge
from the swarm and is not journaled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from swarm.memory.diff import line_edits
from swarm.memory.text import split_lines

log = logging.getLogger(__name__)

BURST_S = 1.0  # renders of one file this close together are one burst: one line, one entry
JOURNAL_LIMIT = 100  # entries kept
_SENDERS_LIMIT = 8  # names kept per burst; more are counted


@dataclass(frozen=True)
class Merge:
    """One burst of remote changes written to one file."""

    at: float  # wall clock, seconds since the epoch, when the burst's first render ended
    path: str
    added: int  # lines the disk gained (a changed line counts as one removed and one added)
    removed: int
    senders: tuple[str, ...]  # nodes whose updates it holds (empty: a snapshot from Redis)
    created: bool = False
    deleted: bool = False

    def describe(self) -> str:
        who = ", ".join(self.senders) if self.senders else "the swarm's snapshot"
        if self.deleted:
            return f"deleted {self.path} (deleted on {who})"
        lines = _plural(self.added, "line")
        if self.created:
            return f"created {self.path} with {lines} from {who}"
        removals = f" and {_plural(self.removed, 'removal')}" if self.removed else ""
        if not self.added and self.removed:
            return f"merged {_plural(self.removed, 'removal')} from {who} into {self.path}"
        return f"merged {lines}{removals} from {who} into {self.path}"

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "path": self.path,
            "added": self.added,
            "removed": self.removed,
            "senders": list(self.senders),
            "created": self.created,
            "deleted": self.deleted,
            "text": self.describe(),
        }


@dataclass
class _Burst:
    at: float
    added: int = 0
    removed: int = 0
    senders: set[str] = field(default_factory=set)
    created: bool = False
    deleted: bool = False


class MergeJournal:
    def __init__(self, limit: int = JOURNAL_LIMIT, burst_s: float = BURST_S) -> None:
        self.recent: deque[Merge] = deque(maxlen=limit)
        self.burst_s = burst_s
        self._senders: dict[str, set[str]] = {}  # path -> senders since its last render
        self._open: dict[str, _Burst] = {}

    def remote(self, path: str, senders: Iterable[str]) -> None:
        """Remote updates of `path` from `senders` were applied (none named: a snapshot)."""
        known = self._senders.setdefault(path, set())
        if len(known) < _SENDERS_LIMIT:
            known.update(senders)

    def rendered(self, path: str, before: str | None, after: str | None) -> None:
        """`path` was rendered: the disk held `before` and now holds `after` (None: no file)."""
        senders = self._senders.pop(path, None)
        if senders is None or before == after:
            return
        burst = self._open.get(path)
        if burst is None:
            burst = self._open[path] = _Burst(at=time.time(), created=before is None)
            asyncio.get_running_loop().call_later(self.burst_s, self._close, path)
        burst.senders |= senders
        burst.deleted = after is None
        if after is not None:
            for edit in line_edits(split_lines(before or ""), split_lines(after)):
                burst.added += len(edit.lines)
                burst.removed += edit.stop - edit.start

    def entries(self) -> list[dict[str, Any]]:
        """The journal, newest first, as JSON."""
        return [merge.to_json() for merge in reversed(self.recent)]

    def _close(self, path: str) -> None:
        burst = self._open.pop(path, None)
        if burst is None:
            return
        merge = Merge(
            at=burst.at,
            path=path,
            added=burst.added,
            removed=burst.removed,
            senders=tuple(sorted(burst.senders)),
            created=burst.created and not burst.deleted,
            deleted=burst.deleted,
        )
        self.recent.append(merge)
        log.info("%s", merge.describe())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")

"""A file's history as this node holds it, replayed: `swarm log` and `swarm rollback`.

The store keeps every update with the time it entered this node's log, and compaction moves the
log into an audit history instead of dropping it (swarm/store.py, bounded). Replaying it in order
gives the text after each update; the clients whose clocks an update advanced, looked up in the
document's audit facts (swarm/memory/stamps.py), name the node that made it. A full state (a
snapshot read at catch-up) names several nodes and is shown as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from swarm.memory import MemoryDoc, UpdateError
from swarm.memory.diff import line_edits
from swarm.memory.stamps import Stamps
from swarm.memory.text import split_lines
from swarm.store import Store, Update


class HistoryError(ValueError):
    """What was asked for is outside the history this node holds; the message is one line."""


@dataclass(frozen=True)
class Edit:
    at: float | None  # when the update entered this node's log (None: before times were kept)
    nodes: tuple[str, ...]  # who made it; several: a full state (a snapshot read at catch-up)
    before: str | None  # the file before (None: it did not exist)
    after: str | None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "nodes": list(self.nodes), "added": self.added,
                "removed": self.removed, "exists": self.after is not None,
                "catch_up": len(self.nodes) > 1}  # fmt: skip


@dataclass(frozen=True)
class History:
    path: str
    start: str | None  # the file where the held history starts (None: did not exist)
    start_at: float | None  # the moment it stood for, if known
    edits: list[Edit]

    @property
    def since(self) -> float | None:
        """The earliest moment whose content this history knows: the time its base stood for,
        else when the first update it holds arrived (before that, even "the file did not exist
        yet" is not known: this node may have joined later)."""
        return self.start_at if self.start_at is not None else _first_time(self.edits)

    def text_at(self, moment: float) -> str | None:
        """The file as it was at `moment` on this node (None: it did not exist);
        HistoryError for a moment before the held history."""
        since = self.since
        if since is None or moment < since:
            shown = "nothing" if since is None else _iso(since)
            raise HistoryError(
                f"{self.path}: this node's history of it starts at {shown}; "
                f"cannot go back to {_iso(moment)}"
            )
        text = self.start
        for edit in self.edits:
            if edit.at is None or edit.at <= moment:
                text = edit.after
            else:
                break
        return text


def load(store: Store, path: str, current: MemoryDoc | None = None) -> History:
    """Replay `path`'s history from `store`; authors come from `current` (or the store's
    document): the audit facts only grow, so the newest state knows every writer."""
    start, updates = store.history(path)
    if current is None:
        current = MemoryDoc.restore(path, store.load_doc(path))
    return replay(path, start, updates, Stamps(current.crdt))


def replay(
    path: str, start: tuple[bytes, float | None] | None, updates: list[Update], stamps: Stamps
) -> History:
    """The edits `updates` make, from `start`. Touches no store or live document: a daemon runs
    it in a worker thread (a long history takes a second)."""
    doc = MemoryDoc(path)
    if start is not None:
        doc.integrate(start[0])
    first = _text(doc)
    edits: list[Edit] = []
    for update in updates:
        before_sv, before = doc.state_vector_dict(), _text(doc)
        try:
            doc.integrate(update.data)
        except UpdateError:
            doc = MemoryDoc.restore(path, [doc.encode_state()])  # skipped, as the node did
            continue
        after = _text(doc)
        if before == after:
            continue
        grown = [c for c, clock in doc.state_vector_dict().items() if clock > before_sv.get(c, 0)]
        nodes = sorted({a.node for c in grown if (a := stamps.author(c)) is not None})
        gone, added = _diff(before, after)
        edits.append(Edit(update.at, tuple(nodes or ["unknown"]), before, after, added, gone))
    return History(path, first, start[1] if start else None, edits)


def _text(doc: MemoryDoc) -> str | None:
    return doc.content if doc.exists else None


def _diff(before: str | None, after: str | None) -> tuple[list[str], list[str]]:
    """(removed lines, added lines), without line endings."""
    old, new = split_lines(before or ""), split_lines(after or "")
    removed, added = [], []
    for edit in line_edits(old, new):
        removed += [line.rstrip("\r\n") for line in old[edit.start : edit.stop]]
        added += [line.rstrip("\r\n") for line in edit.lines]
    return removed, added


def _first_time(edits: list[Edit]) -> float | None:
    return next((edit.at for edit in edits if edit.at is not None), None)


def _iso(moment: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")

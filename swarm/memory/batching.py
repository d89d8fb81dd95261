"""Merging many small updates of one document into few: a burst of edits crosses the wire, and is
integrated by every peer, as one update per path instead of one per keystroke-sized edit.

Only adjacent updates of one writer are merged, in a causally ordered, complete sequence (a
node's outbox, a page of the log): such updates are contiguous and need nothing the first one
does not. Merging further (all of a writer's updates, or several writers') would hand pycrdt
updates whose dependencies come later, and pycrdt can lose one of two such updates it has to
park. Updates not from a single writer (full states, deletions) stay alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import pycrdt

from swarm.memory import vector


def coalesce(items: Iterable[tuple[str, bytes]], limit: int) -> list[tuple[str, bytes]]:
    """(path, update) pairs in outbox order -> per path, `merge_runs` of its updates. Paths keep
    the order of their first update."""
    by_path: dict[str, list[bytes]] = {}
    for path, update in items:
        by_path.setdefault(path, []).append(update)
    return [
        (path, update)
        for path, updates in by_path.items()
        for update, _count in merge_runs(updates, limit)
    ]


def merge_runs(updates: list[bytes], limit: int | None = None) -> list[tuple[bytes, int]]:
    """Each maximal run of adjacent updates from one writer merged into one (within `limit`
    bytes, if given: an update already larger passes through alone); returns (update, how many
    updates it holds)."""
    merged: list[tuple[bytes, int]] = []
    run: list[bytes] = []
    size = 0
    writer: int | None = None
    last_clock = -1
    for update in updates:
        start = vector.update_start(update)
        if (
            start is not None
            and run
            and start[0] == writer
            and start[1] > last_clock
            and (limit is None or size + len(update) <= limit)
        ):
            run.append(update)
            size += len(update)
            last_clock = start[1]
            continue
        merged.extend(_counted(run))
        run, size = ([update], len(update)) if start is not None else ([], 0)
        writer, last_clock = start if start is not None else (None, -1)
        if start is None:
            merged.append((update, 1))
    merged.extend(_counted(run))
    return merged


def _counted(run: list[bytes]) -> list[tuple[bytes, int]]:
    if len(run) < 2:
        return [(update, 1) for update in run]
    try:
        return [(pycrdt.merge_updates(*run), len(run))]
    except Exception:  # pycrdt refuses one of them: each goes as it is, judged on its own
        return [(update, 1) for update in run]

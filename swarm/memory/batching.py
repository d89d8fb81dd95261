"""Merging many small updates of one document into few: a burst of edits crosses the wire, and is
integrated by every peer, as one update per path instead of one per keystroke-sized edit."""

from __future__ import annotations

from collections.abc import Iterable

import pycrdt

from swarm.memory import vector


def coalesce(items: Iterable[tuple[str, bytes]], limit: int) -> list[tuple[str, bytes]]:
    """(path, update) pairs -> per path, the updates merged into as few as stay within `limit`
    bytes each (an update already larger than `limit` passes through alone). Paths keep the
    order of their first update. CRDT updates commute, so merging never changes the result."""
    groups: dict[str, list[list[bytes]]] = {}
    sizes: dict[str, int] = {}
    for path, update in items:
        runs = groups.setdefault(path, [[]])
        if runs[-1] and sizes[path] + len(update) > limit:
            runs.append([])
            sizes[path] = 0
        runs[-1].append(update)
        sizes[path] = sizes.get(path, 0) + len(update)
    merged: list[tuple[str, bytes]] = []
    for path, runs in groups.items():
        for run in runs:
            merged.extend((path, update) for update in _merge(run))
    return merged


def _merge(updates: list[bytes]) -> list[bytes]:
    if len(updates) == 1:
        return updates
    try:
        return [pycrdt.merge_updates(*updates)]
    except Exception:  # pycrdt refuses one of them: send each as it is, the peer judges each
        return updates


def merge_runs(updates: list[bytes]) -> list[tuple[bytes, int]]:
    """A causally ordered, complete sequence of updates (a page of the log) with each maximal
    run of adjacent updates from one writer merged into one; returns (update, how many it holds).

    Only adjacent ones: a writer's updates that sit next to each other in such a sequence are
    contiguous and need nothing the first one does not. Merging further (all of a writer's
    updates, or several writers') would hand pycrdt updates whose dependencies come later, and
    pycrdt can lose one of two such updates it has to park. Updates not from a single writer
    (full states, deletions) stay alone."""
    merged: list[tuple[bytes, int]] = []
    run: list[bytes] = []
    writer: int | None = None
    last_clock = -1
    for update in updates:
        start = vector.update_start(update)
        if start is not None and run and start[0] == writer and start[1] > last_clock:
            run.append(update)
            last_clock = start[1]
            continue
        merged.extend(_counted(run))
        run = [update] if start is not None else []
        writer, last_clock = start if start is not None else (None, -1)
        if start is None:
            merged.append((update, 1))
    merged.extend(_counted(run))
    return merged


def _counted(run: list[bytes]) -> list[tuple[bytes, int]]:
    if not run:
        return []
    out = _merge(run)
    return [(out[0], len(run))] if len(out) == 1 else [(update, 1) for update in out]

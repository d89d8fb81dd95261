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
    """Updates received together, merged only where that is safe: per writer, runs of
    contiguous updates (each starting where the previous one ended). Merging updates of several
    writers, or with a gap, would hand pycrdt one update with missing dependencies, which it
    parks where two such can lose one; apart, each goes through the document's own causal
    buffer. Updates that are not from a single writer (full states, deletions) stay alone.
    Returns (update, how many received updates it holds)."""
    runs: dict[int, list[tuple[int, int, bytes]]] = {}
    alone: list[tuple[bytes, int]] = []
    for update in updates:
        start = vector.update_start(update)
        try:
            end = vector.decode(pycrdt.get_state(update)).get(start[0], 0) if start else 0
        except Exception:  # undecodable: the document rejects it on its own
            start = None
        if start is None:
            alone.append((update, 1))
        else:
            runs.setdefault(start[0], []).append((start[1], end, update))
    merged: list[tuple[bytes, int]] = []
    for pieces in runs.values():
        pieces.sort(key=lambda piece: piece[0])
        run: list[bytes] = []
        reach = -1
        for first, end, update in pieces:
            if run and first > reach:  # a gap: what came before goes as it is
                merged.extend(_counted(run))
                run = []
            run.append(update)
            reach = max(reach, end)
        merged.extend(_counted(run))
    return merged + alone


def _counted(run: list[bytes]) -> list[tuple[bytes, int]]:
    out = _merge(run)
    return [(out[0], len(run))] if len(out) == 1 else [(update, 1) for update in out]

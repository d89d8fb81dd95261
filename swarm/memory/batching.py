"""Merging many small updates of one document into few: a burst of edits crosses the wire, and is
integrated by every peer, as one update per path instead of one per keystroke-sized edit."""

from __future__ import annotations

from collections.abc import Iterable

import pycrdt


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

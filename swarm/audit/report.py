"""Blame and log of one file, read from a node's state folder (no daemon needed): what the CLI
prints and the MCP tools answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarm.audit.blame import blame
from swarm.audit.history import load
from swarm.memory import MemoryDoc
from swarm.store import Store, StoreError


class ReportError(ValueError):
    """No such state or file; the message is one line."""


def open_store(state_dir: Path) -> Store:
    if not (state_dir / "state.db").exists():
        raise ReportError(f"no swarm state in {state_dir}: is it the folder a daemon syncs?")
    try:
        return Store(state_dir)
    except StoreError as exc:
        raise ReportError(str(exc)) from None


def _doc(store: Store, path: str) -> MemoryDoc:
    updates = store.load_doc(path)
    if not updates:
        raise ReportError(f"{path}: not a synced file of this node (see `swarm status --files`)")
    return MemoryDoc.restore(path, updates)


def blame_lines(state_dir: Path, path: str) -> list[dict[str, Any]]:
    """Each line of `path`: its number, text, node, role and time (seconds since the epoch)."""
    with open_store(state_dir) as store:
        return [line.to_json() for line in blame(_doc(store, path))]


def log_entries(
    state_dir: Path, path: str, since: float | None = None, node: str | None = None
) -> dict[str, Any]:
    """`path`'s edits in order, oldest first, with where the held history starts."""
    with open_store(state_dir) as store:
        history = load(store, path, _doc(store, path))
    edits = [
        edit.to_json()
        for edit in history.edits
        if (since is None or (edit.at is not None and edit.at >= since))
        and (node is None or node in edit.nodes)
    ]
    return {"path": path, "history_since": history.since, "edits": edits}

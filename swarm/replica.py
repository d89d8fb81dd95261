"""The narrow interface between replication and the node: what the replicator may ask of the
node's documents, its outbox and its state, and nothing else (no store, no counters, no files).

`swarm.node.Node` implements it; `swarm.replication` uses only this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from swarm.memory import MemoryDoc
from swarm.protect.guard import Protection
from swarm.store import OutboxEntry


@dataclass(frozen=True)
class NodeReport:
    """The node's part of a heartbeat (swarm/heartbeat.py names each field)."""

    last_error: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    deletions_held: str | None = None
    files_held: dict[str, Any] | None = None
    disk: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    not_synced: dict[str, Any] = field(default_factory=dict)
    protected_refused: list[dict[str, Any]] = field(default_factory=list)


class Replica(Protocol):
    """One node's documents as replication sees them."""

    @property
    def docs(self) -> Mapping[str, MemoryDoc]: ...

    @property
    def renders_held(self) -> bool: ...

    @property
    def protection(self) -> Protection:
        """Which files only their writers may change (swarm/protect/): signs what this node
        sends of them, admits only what their writers signed."""
        ...

    def on_local_update(self, callback: Callable[[], None]) -> None:
        """`callback` runs whenever the outbox grew."""
        ...

    # -- the outbox and the node's own notes (one SQLite commit per `batch`) ---------------------

    def outbox(self, limit: int) -> list[OutboxEntry]: ...

    def ack(self, ids: Iterable[int]) -> None: ...

    def outbox_depth(self) -> int: ...

    def batch(self) -> AbstractContextManager[None]: ...

    def commit(self) -> None:
        """Commit what is stored so far (group commit: before anything leaves the node)."""
        ...

    def meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    # -- what arrives from the swarm -------------------------------------------------------------

    def apply_remote(self, path: str, update: bytes, sender: str | None = None) -> bool: ...

    def apply_remote_many(
        self, path: str, updates: list[bytes], senders: Iterable[str] = ()
    ) -> int: ...

    def reject(self, path: str, reason: str, detail: str, count: int = 1) -> None: ...

    def refuses(self, path: str) -> bool: ...

    def hold_renders(self, seconds: float) -> None: ...

    def release_renders(self) -> None: ...

    def compact(self) -> None: ...

    # -- what heartbeats tell ---------------------------------------------------------------------

    def changed(self, path: str) -> float | None:
        """When this node last changed `path` itself (None: not since it started)."""
        ...

    def report(self) -> NodeReport: ...

"""What a node is told (options, from the settings: swarm/config.py) and what it counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swarm import defaults
from swarm.latency import Histogram, apply_latency, render_latency

if TYPE_CHECKING:
    from swarm.config import DaemonSettings

@dataclass
class NodeOptions:
    root: Path
    state_dir: Path
    debounce_ms: int = defaults.DEBOUNCE_MS
    max_bytes: int = defaults.MAX_FILE_BYTES
    include: tuple[str, ...] = defaults.INCLUDE
    ignore: tuple[str, ...] = ()
    # Never leave the node: not ingested, not published, a remote update for them is refused.
    private: tuple[str, ...] = defaults.PRIVATE
    settle: float = 0.02
    # Least time between two renders of one file: it starts at `render_interval` and doubles,
    # up to `render_interval_max`, while updates keep arriving faster than that.
    render_interval: float = 0.025
    render_interval_max: float = 0.2
    render_concurrency: int = 8  # files rendered at once
    # Mass-delete guard: more than this share of the known files gone in one batch (and at least
    # `delete_guard_min` of them), or the whole folder gone, holds deletions until confirmed.
    delete_guard_share: float = defaults.DELETE_GUARD_SHARE
    delete_guard_min: int = 3
    # Deletions seen by the watcher are judged together once none came for this long: `rm -r`
    # on a loaded machine arrives in several batches, each too small to look like an accident.
    delete_quiet: float = 0.3
    # New-file budget (swarm/flood.py): a flood of new files within a minute is held.
    new_files_per_minute: int = defaults.NEW_FILES_PER_MINUTE
    new_mb_per_minute: float = defaults.NEW_MB_PER_MINUTE
    # Who this node is: recorded in the documents with every local change (swarm blame).
    node_id: str = ""
    role: str = ""

    @classmethod
    def from_settings(cls, settings: DaemonSettings, node_id: str) -> NodeOptions:
        """The options a daemon's settings ask for (the rest keep their defaults)."""
        return cls(
            root=settings.dir,
            state_dir=settings.resolved_state_dir,
            debounce_ms=settings.debounce_ms,
            max_bytes=settings.max_file_bytes,
            include=settings.include,
            ignore=settings.ignore,
            private=settings.private,
            delete_guard_share=settings.delete_guard_share,
            new_files_per_minute=settings.new_files_per_minute,
            new_mb_per_minute=settings.new_mb_per_minute,
            node_id=node_id,
            role=settings.role,
        )


@dataclass
class NodeCounters:
    """What the node did, for metrics and status."""

    ingested: int = 0
    rendered: int = 0
    deleted: int = 0
    remote_applied: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # see swarm/edge.py
    render_errors: int = 0
    ingest_errors: int = 0
    skipped_files: dict[str, str] = field(default_factory=dict)  # path -> problem
    last_error: str | None = None
    apply_seconds: Histogram = field(default_factory=apply_latency)
    render_seconds: Histogram = field(default_factory=render_latency)

"""What `swarm status` computes: the swarm's view (per node, per file, what Redis holds) and its
JSON form (docs/status-schema.json). Computing it is in swarm/status.py, showing it there and in
swarm/status_files.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from swarm.memory.vector import StateVector


class NodeState(StrEnum):
    UP_TO_DATE = "up to date"
    SYNCING = "syncing"
    BEHIND = "behind"
    OFFLINE = "offline"
    ERROR = "error"


@dataclass(frozen=True)
class FileFacts:
    """What one node reported about one file in its heartbeat."""

    sv: StateVector
    size: int | None
    exists: bool
    pending: bool
    hash: str | None = None  # of the document's content (the bytes its disk should hold)
    changed: float | None = None  # when the node last changed it itself (epoch seconds)


@dataclass(frozen=True)
class NodeView:
    node: str
    role: str
    host: str
    pid: int | None
    online: bool
    state: NodeState
    converged: bool
    ready: bool
    lag: int
    last_seen: float  # seconds since the last heartbeat (server clock)
    last_seen_at: float  # server time of the last heartbeat, seconds since the epoch
    outbox: int
    last_error: str | None
    files: int
    behind: dict[str, int]  # path -> operations missing (pending files show 0)
    skipped: dict[str, str]
    disk_differs: dict[str, str] = field(default_factory=dict)  # path -> why, in a few words
    refused: tuple[str, ...] = ()  # paths its policy never syncs
    # what its folder holds that does not sync: {"counts": {reason: n}, "paths": {path: reason}}
    not_synced: dict[str, Any] = field(default_factory=dict)
    # changes of protected files it refused: [{node, path, reason, count, last}] (swarm/protect/)
    protected_refused: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class FileView:
    path: str
    converged: bool
    size: int | None
    exists: bool
    lagging: tuple[str, ...]  # online nodes whose state does not cover the target
    digest: str  # of the target state vector
    hash: str | None = None  # content hash reported by the nodes that hold the target
    disk_differs: tuple[str, ...] = ()  # online nodes whose disk does not hold it (yet)
    changed_at: float | None = None  # the newest change a node reports having made to it
    changed_by: str | None = None  # that node


@dataclass(frozen=True)
class RedisHeld:
    """What Redis itself holds: per file, the state vector of snapshot + log tail."""

    vectors: dict[str, StateVector] = field(default_factory=dict)
    snapshots: int = 0
    log_entries: int = 0
    unreadable: tuple[str, ...] = ()  # files whose Redis data could not be applied
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> records left unread


@dataclass(frozen=True)
class SwarmView:
    swarm: str
    checked_at: float  # server time, seconds since the epoch
    converged: bool
    nodes: tuple[NodeView, ...]
    files: tuple[FileView, ...]
    redis: RedisHeld

    @property
    def online(self) -> int:
        return sum(1 for node in self.nodes if node.online)

    @property
    def files_differing(self) -> int:
        return sum(1 for item in self.files if not item.converged)

    def to_json(self) -> dict[str, Any]:
        """The documented `--json` schema (docs/status-schema.json)."""
        return {
            "swarm": self.swarm,
            "converged": self.converged,
            "checked_at": self.checked_at,
            "online": self.online,
            "files_differing": self.files_differing,
            "nodes": [
                {
                    "node": n.node,
                    "role": n.role,
                    "host": n.host,
                    "pid": n.pid,
                    "online": n.online,
                    "state": n.state.value,
                    "converged": n.converged,
                    "ready": n.ready,
                    "lag": n.lag,
                    "last_seen": round(n.last_seen, 3),
                    "last_seen_at": n.last_seen_at,
                    "outbox": n.outbox,
                    "last_error": n.last_error,
                    "files": n.files,
                    "behind": dict(n.behind),
                    "skipped": dict(n.skipped),
                    "disk_differs": dict(n.disk_differs),
                    "refused": list(n.refused),
                    "not_synced": n.not_synced or {"counts": {}, "paths": {}},
                    "protected_refused": list(n.protected_refused),
                }
                for n in self.nodes
            ],
            "files": [
                {
                    "path": f.path,
                    "converged": f.converged,
                    "size": f.size,
                    "exists": f.exists,
                    "lagging": list(f.lagging),
                    "digest": f.digest,
                    "hash": f.hash,
                    "disk_differs": list(f.disk_differs),
                    "changed_at": f.changed_at,
                    "changed_by": f.changed_by,
                }
                for f in self.files
            ],
            "redis": {
                "snapshots": self.redis.snapshots,
                "log_entries": self.redis.log_entries,
                "unreadable": list(self.redis.unreadable),
                "rejected": dict(self.redis.rejected),
            },
        }

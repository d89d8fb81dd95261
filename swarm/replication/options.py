"""What replication is told (options) and what it counts (counters, for metrics and status)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class ReplicationOptions:
    swarm: str
    node_id: str
    role: str = ""
    heartbeat_interval: float = 1.0
    offline_after: float = 5.0  # a node silent this long is offline
    compaction_interval: float = 10.0
    compact_after_entries: int = 10_000  # compact sooner once the log is this long
    forget_nodes_after: float = 7 * 24 * 3600.0  # a node silent this long has left the swarm
    lease_ttl_ms: int = 15_000


@dataclass
class ReplicationCounters:
    published: int = 0
    published_bytes: int = 0
    received: int = 0
    received_bytes: int = 0
    catchups: int = 0
    reseeds: int = 0
    rollbacks: int = 0  # times Redis was found to have lost acknowledged log entries
    sync_requests: int = 0
    publish_errors: int = 0
    snapshots_written: int = 0
    lag: int = 0  # operations this node lacks against the union of online peers
    behind: dict[str, int] = field(default_factory=dict)
    catchup_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=100))

"""Prometheus metrics of one sidecar, read from its counters at scrape time.

The node and the replicator keep plain counters; a custom collector turns them into metric
families when `/metrics` is scraped, so the hot paths pay nothing for metrics. Latencies are the
exception: the node observes into the histograms of `swarm.latency`, collected here.

Each runtime gets its own `CollectorRegistry`: several sidecars in one process (tests) never share
or collide on metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from swarm.transport.codec import SWARM_KEY
from swarm.transport.redis_errors import CAUSES

if TYPE_CHECKING:
    from swarm.runtime import Runtime

__all__ = ["CONTENT_TYPE_LATEST", "registry_for", "scrape"]

def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class RuntimeCollector(Collector):
    """Reads one runtime's counters on every scrape (on the event loop thread: the store is
    single-threaded)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        node = runtime.node.counters
        replication = runtime.replicator.counters
        transport = runtime.transport
        info = InfoMetricFamily("swarm_node", "Which node of which swarm this sidecar is.")
        info.add_metric(
            [],
            {
                "node": runtime.node_id,
                "swarm": runtime.settings.swarm,
                "role": runtime.settings.role,
            },
        )
        yield info
        yield _counter(
            "swarm_updates_out", "Updates published to the swarm.", replication.published
        )
        yield _counter(
            "swarm_updates_out_bytes", "Payload bytes published.", replication.published_bytes
        )
        yield _counter("swarm_updates_in", "Messages received from peers.", replication.received)
        yield _counter(
            "swarm_updates_in_bytes", "Payload bytes received.", replication.received_bytes
        )
        yield _counter(
            "swarm_remote_applied", "Remote updates merged into documents.", node.remote_applied
        )
        yield _counter("swarm_ingested", "Agent writes turned into updates.", node.ingested)
        yield _counter("swarm_rendered", "Merged files written to disk.", node.rendered)
        rejected = CounterMetricFamily(
            "swarm_rejected_messages",
            "Input dropped, by reason: undecodable, unauthenticated, replayed (see "
            "swarm.transport.codec), or refused at the node's edge: a path no file system takes "
            "(bad-path), one this node does not sync (refused-path), a file over the size limit "
            "(oversize-file), an update that does not apply (inapplicable) or failed to "
            "(apply-failed); see swarm.edge.",
            labels=["reason"],
        )
        by_reason = dict(transport.rejected_by_reason)
        for reason, count in node.rejected_by_reason.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
        by_reason.setdefault("inapplicable", 0)
        for reason, count in sorted(by_reason.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield _counter(
            "swarm_protected_refused",
            "Changes of protected files refused (swarm.protect): not signed by a listed writer, "
            "or written here on a node that is not one.",
            sum(r.count for r in runtime.node.protection.refusals.values()),
        )
        yield _counter("swarm_render_errors", "Renders that failed.", node.render_errors)
        yield _gauge(
            "swarm_files_in_error",
            "Files whose render fails (quarantined, retried with backoff).",
            len(runtime.node.health.failures),
        )
        yield _counter(
            "swarm_ingest_errors", "Agent writes that failed to ingest.", node.ingest_errors
        )
        yield _counter(
            "swarm_redis_reconnects", "Subscriptions re-established to Redis.", transport.reconnects
        )
        yield _counter(
            "swarm_publish_errors", "Outbox flushes that failed.", replication.publish_errors
        )
        yield _counter("swarm_catchups", "Catch-ups from the Redis log.", replication.catchups)
        yield _counter(
            "swarm_redis_reseeds",
            "Times Redis had lost the swarm's data (wiped) and this node re-seeded it.",
            replication.reseeds,
        )
        yield _counter(
            "swarm_redis_lost_entries",
            "Times the log lacked entries Redis had acknowledged (a failover to a lagging "
            "replica) and this node re-sent its state.",
            replication.rollbacks,
        )
        yield _counter(
            "swarm_redis_unreplicated",
            "Publishes fewer replicas confirmed than SWARM_REDIS_WAIT_REPLICAS asks.",
            transport.unreplicated,
        )
        yield _counter(
            "swarm_sync_requests",
            "Requests to peers for missing operations.",
            replication.sync_requests,
        )
        yield _counter(
            "swarm_snapshots_written", "Snapshots written to Redis.", replication.snapshots_written
        )
        yield _gauge(
            "swarm_lag_operations",
            "Operations this node lacks against the union of its online peers.",
            replication.lag,
        )
        yield _gauge(
            "swarm_outbox_depth", "Local updates not yet in Redis.", runtime.store.outbox_depth()
        )
        yield _gauge("swarm_files_synced", "Documents this node holds.", len(runtime.node.docs))
        yield _gauge(
            "swarm_files_skipped",
            "Files not synced (too big, not UTF-8...).",
            len(node.skipped_files),
        )
        yield _gauge("swarm_ready", "1 when caught up and connected to Redis.", int(runtime.ready))
        problem = GaugeMetricFamily(
            "swarm_problem",
            "1 while a cause keeps this node from syncing: Redis unreachable or refusing the "
            "credentials (redis-connection), out of memory (redis-oom), read-only (redis-readonly),"
            " an ACL refusal (redis-noperm), another refusal (redis-refused), peers sealing with "
            "another swarm key (swarm-key).",
            labels=["cause"],
        )
        active = transport.problems.active if transport.problems is not None else {}
        for cause in (*CAUSES, SWARM_KEY):
            problem.add_metric([cause], int(cause in active))
        yield problem
        yield _gauge(
            "swarm_deletions_held",
            "1 while the mass-delete guard holds deletions (run swarm confirm-deletes).",
            int(runtime.node.deletions_held is not None),
        )
        yield _gauge(
            "swarm_new_files_held",
            "New files the new-file budget holds back (run swarm confirm-files); 0 when none.",
            runtime.node.flood.held_files,
        )
        yield _gauge(
            "swarm_redis_connected",
            "1 while the Redis subscription is live.",
            int(transport.connected),
        )
        yield from node.apply_seconds.collect()
        yield from node.render_seconds.collect()


def registry_for(runtime: Runtime) -> CollectorRegistry:
    """A registry of its own for one runtime."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of `registry`."""
    return generate_latest(registry)

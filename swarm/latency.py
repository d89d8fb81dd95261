"""Latency histograms of a node's hot paths (applying a remote update, rendering a file).

A histogram needs every observation, so the node observes into these unregistered histograms
(bounded memory, unlike a list of samples); `swarm.metrics` exposes them at scrape time.
"""

from __future__ import annotations

from prometheus_client import Histogram

__all__ = ["LATENCY_BUCKETS", "Histogram", "apply_latency", "render_latency"]

# An apply or a render is expected in well under 10 ms; the tail shows trouble (a slow disk).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


def apply_latency() -> Histogram:
    """Seconds to merge one remote update into its document (not registered anywhere)."""
    return Histogram(
        "swarm_apply_seconds",
        "Time to apply one remote update to its document.",
        buckets=LATENCY_BUCKETS,
        registry=None,
    )


def render_latency() -> Histogram:
    """Seconds to write one merged file to disk (not registered anywhere)."""
    return Histogram(
        "swarm_render_seconds",
        "Time to render one merged file to disk.",
        buckets=LATENCY_BUCKETS,
        registry=None,
    )

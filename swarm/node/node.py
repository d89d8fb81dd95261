"""One sidecar: the memory folder, its CRDT documents and the local store, wired together.

The node owns every `MemoryDoc` and is the only place where the file bridge, the memory model and
the store meet. Replication talks to it through `swarm.replica.Replica`; it never touches files.

Its parts, each a class on top of the one before: the shared state (core.py), the mass-delete
guard (guard.py), the ingest pipeline (ingest.py), the render scheduler (render.py), what
replication sees (replica_side.py) and the background work (maintenance.py).

Ordering rules that keep edits from being lost:
* An agent write is persisted (document log + outbox, one commit) before anything leaves the node.
* A render first checks that the file still holds what this node last saw; if not, the agent's
  write is ingested first and the render retried, so an unseen write is never overwritten.
* Each path has one lock: ingesting and rendering a file never interleave.
"""

from __future__ import annotations

from swarm.node.maintenance import Maintenance


class Node(Maintenance):
    """One sidecar's documents, folder and store (the parts: this module's docstring)."""

"""Replication: moving a node's updates to the swarm log and the swarm's updates into the node
(replicator.py says which module does which job)."""

from swarm.replication.options import ReplicationCounters, ReplicationOptions
from swarm.replication.replicator import Replicator

__all__ = ["ReplicationCounters", "ReplicationOptions", "Replicator"]

"""One sidecar: the memory folder, its CRDT documents and the local store (node.py)."""

from swarm.node.guard import CONFIRM_DELETES_FILE
from swarm.node.node import Node
from swarm.node.options import NodeCounters, NodeOptions
from swarm.node.render import RENDER_BUDGET, next_render_interval

__all__ = [
    "CONFIRM_DELETES_FILE",
    "RENDER_BUDGET",
    "Node",
    "NodeCounters",
    "NodeOptions",
    "next_render_interval",
]

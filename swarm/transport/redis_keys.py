"""Redis key names of one swarm. The `{NAME}` hash tag keeps a swarm on one Cluster slot."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Braces would break the hash tag; whitespace and control characters make keys unreadable in tools.
_SWARM_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


class SwarmNameError(ValueError):
    """A swarm name that cannot be used in Redis keys; the message is one line."""


def check_swarm_name(name: str) -> str:
    if not _SWARM_NAME.fullmatch(name):
        raise SwarmNameError(
            f"invalid swarm name {name!r}: use 1-128 characters of letters, digits, '.', '_', '-'"
        )
    return name


@dataclass(frozen=True)
class SwarmKeys:
    bus: str  # pub/sub channel: previous stream id + " " + stream id + " " + envelope
    log: str  # stream; field `e` holds the encoded envelope
    snap: str  # hash: path -> covered stream id + " " + state
    lease: str  # string: node id holding the compaction lease (PX ttl)
    nodes: str  # hash: node id -> JSON heartbeat (summary: small, read by every node each beat)
    files: str  # hash: node id -> JSON per-file facts of its heartbeat (read only when they differ)
    epoch: str  # string: random value set once; missing means Redis lost the swarm's data

    @classmethod
    def for_swarm(cls, name: str) -> SwarmKeys:
        prefix = f"swarm:{{{check_swarm_name(name)}}}"
        return cls(
            bus=f"{prefix}:bus",
            log=f"{prefix}:log",
            snap=f"{prefix}:snap",
            lease=f"{prefix}:lease",
            nodes=f"{prefix}:nodes",
            files=f"{prefix}:files",
            epoch=f"{prefix}:epoch",
        )

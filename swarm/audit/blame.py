"""`swarm blame`: each line of a file with the node that wrote it and when.

The CRDT knows the item behind every character; a sticky index at a line's first byte names it
(client id and clock), and the document's audit facts (swarm/memory/stamps.py) turn that into a
node and a time. A line that a stale whole-file write rewrote unchanged keeps its item (the write
is applied as a line diff), so it keeps its original author.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pycrdt

from swarm.memory import MemoryDoc
from swarm.memory.genesis import TEXT_ROOT
from swarm.memory.stamps import Stamps
from swarm.memory.text import byte_offsets, split_lines

UNKNOWN = "unknown"  # written before this node's swarm recorded authors


@dataclass(frozen=True)
class BlameLine:
    number: int  # 1-based
    text: str  # without its line ending
    node: str
    role: str
    at: float | None  # when it was written (the writer's clock), if known

    def to_json(self) -> dict[str, Any]:
        return {"line": self.number, "text": self.text, "node": self.node, "role": self.role,
                "at": self.at}  # fmt: skip


def blame(doc: MemoryDoc) -> list[BlameLine]:
    """Every line of the document's text, attributed."""
    crdt = doc.crdt
    text = crdt.get(TEXT_ROOT, type=pycrdt.Text)
    stamps = Stamps(crdt)
    lines = split_lines(doc.stored_text) if doc.exists else []
    offsets = byte_offsets(lines)
    found = []
    for number, (line, offset) in enumerate(zip(lines, offsets, strict=False), start=1):
        item = text.sticky_index(offset, pycrdt.Assoc.AFTER).to_json().get("item") or {}
        client, clock = item.get("client"), item.get("clock")
        author, at = None, None
        if isinstance(client, int) and isinstance(clock, int):
            author, at = stamps.author(client), stamps.time(client, clock)
        found.append(
            BlameLine(
                number,
                line.rstrip("\r\n"),
                author.node if author else UNKNOWN,
                author.role if author else "",
                at,
            )
        )
    return found

"""Who made each operation of a document, and when: the audit facts, kept inside the document.

pycrdt items carry the client id of the document that made them, and a node mints a fresh client
id per document and run (swarm/memory/document.py). So every local change also writes, in the
same update, two facts to the root map ``audit``:

* ``c:<client>`` -> ``"<node>\\t<role>"``: which node the client id belongs to (once per client);
* ``t:<client>:<clock>`` -> seconds since the epoch: when the change starting at that clock of
  that client was made (the writer's clock).

Being part of the document, the facts travel with every update, state, snapshot and catch-up,
survive compaction and restarts, and are the same on every node: `swarm blame` needs no history.
A change that only deletes still writes its time mark, so every local update carries its own
client id (swarm/audit/history.py attributes the log's updates by it).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Any

import pycrdt

from swarm.memory import vector

AUDIT_ROOT = "audit"
_CLIENT = "c:"
_TIME = "t:"


@dataclass(frozen=True)
class Author:
    node: str
    role: str = ""


def stamp(doc: pycrdt.Doc[Any], before: vector.StateVector, author: Author, own: int) -> None:
    """Record, after a local change made from state `before`, that the clients whose clock it
    advanced (this node's own, and a genesis import's) are `author`'s, and when."""
    audit = doc.get(AUDIT_ROOT, type=pycrdt.Map)
    after = vector.decode(doc.get_state())
    grown = [client for client, clock in after.items() if clock > before.get(client, 0)]
    now = round(time.time(), 3)
    with doc.transaction():
        for client in {*grown, own}:
            key = f"{_CLIENT}{client}"
            if key not in audit:
                audit[key] = f"{author.node}\t{author.role}"
        for client in grown:
            audit[f"{_TIME}{client}:{before.get(client, 0)}"] = now
        if own not in grown:  # a change that only deleted: its own time mark names the writer
            audit[f"{_TIME}{own}:{before.get(own, 0)}"] = now


class Stamps:
    """The audit facts of one document, for lookups: client -> author, (client, clock) -> time."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.authors: dict[int, Author] = {}
        marks: dict[int, list[tuple[int, float]]] = {}
        for key, value in doc.get(AUDIT_ROOT, type=pycrdt.Map).items():
            try:
                if key.startswith(_CLIENT) and isinstance(value, str):
                    node, _, role = value.partition("\t")
                    self.authors[int(key[len(_CLIENT) :])] = Author(node, role)
                elif key.startswith(_TIME) and isinstance(value, int | float):
                    client, clock = key[len(_TIME) :].split(":")
                    marks.setdefault(int(client), []).append((int(clock), float(value)))
            except ValueError:
                continue  # a peer's odd key: that fact is unknown, the rest still is
        self._clocks = {c: [clock for clock, _ in sorted(m)] for c, m in marks.items()}
        self._times = {c: [at for _, at in sorted(m)] for c, m in marks.items()}

    def author(self, client: int) -> Author | None:
        return self.authors.get(client)

    def time(self, client: int, clock: int) -> float | None:
        """When the operation at `clock` of `client` was made: its change's mark."""
        clocks = self._clocks.get(client)
        if not clocks:
            return None
        index = bisect.bisect_right(clocks, clock) - 1
        return self._times[client][index] if index >= 0 else None

"""What `swarm status` reads in a heartbeat beyond state vectors, and the nodes' edge rules it
applies to what Redis holds: whether each node's disk holds its documents (the same bytes on
every disk), the paths a node refuses, the problems it reports, and which updates no node takes.
The rules themselves are in the docstring of swarm/status.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from swarm.heartbeat import Heartbeat
from swarm.memory import MemoryDoc, vector
from swarm.memory.vector import StateVector


class HashedFacts(Protocol):
    """What `odd_content` reads of a node's per-file facts (swarm.status.FileFacts)."""

    @property
    def sv(self) -> StateVector: ...

    @property
    def hash(self) -> str | None: ...


@dataclass(frozen=True)
class DiskReport:
    """A node's files whose disk does not hold their document, as its heartbeat says."""

    failed: dict[str, str]  # path -> reason
    pending: dict[str, float]  # path -> seconds pending, as of the heartbeat

    @classmethod
    def parse(cls, beat: Heartbeat) -> DiskReport:
        failed: dict[str, str] = {}
        pending: dict[str, float] = {}
        for path, entry in beat.disk_entries().items():
            if entry.state == "error":
                failed[path] = entry.reason or "render failed"
            elif entry.state == "pending":
                pending[path] = entry.for_s
        return cls(failed, pending)


def odd_content(
    facts: Mapping[str, Mapping[str, HashedFacts]],
    online: list[str],
    targets: dict[str, StateVector],
) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Nodes holding a file's whole state whose content hash is not the one most of them
    report (node -> paths), and per path that hash."""
    odd: dict[str, set[str]] = {}
    agreed: dict[str, str] = {}
    for path, target in targets.items():
        hashes: dict[str, list[str]] = {}
        for node in online:
            fact = facts[node].get(path)
            if fact is not None and fact.hash and vector.covers(fact.sv, target):
                hashes.setdefault(fact.hash, []).append(node)
        if not hashes:
            continue
        common = max(hashes, key=lambda h: (len(hashes[h]), h))
        agreed[path] = common
        for digest, nodes in hashes.items():
            if digest != common:
                for node in nodes:
                    odd.setdefault(node, set()).add(path)
    return odd, agreed


def within_limit(path: str, updates: list[bytes], max_bytes: int) -> MemoryDoc:
    """The document of `updates` in order, leaving out each one that makes the file grow past
    `max_bytes` (as every node refuses it)."""
    doc, kept = MemoryDoc(path), list[bytes]()
    for update in updates:
        before = _size(doc, max_bytes)
        doc.integrate(update)
        after = _size(doc, max_bytes)
        if after > max_bytes and after > before:
            doc = MemoryDoc.restore(path, kept)
            continue
        kept.append(update)
    return doc


def _size(doc: MemoryDoc, max_bytes: int) -> int:
    size = doc.stored_bytes
    return size if size <= max_bytes else doc.content_bytes()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def protected_refusals(entries: list[Any]) -> tuple[dict[str, Any], ...]:
    """The refused changes of protected files a heartbeat reports; malformed entries left out."""
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        count = entry.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            continue
        found.append(
            {
                "node": _text(entry.get("node")),
                "path": _text(entry.get("path")),
                "reason": _text(entry.get("reason")),
                "count": count,
                "last": _number(entry.get("last")),
            }
        )
    return tuple(found[:50])

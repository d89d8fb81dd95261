"""The first import of a file, made so that independent imports merge without duplication.

Two nodes that each import the same existing MEMORY.md as an ordinary local insert would end with
the content twice after merging. Instead a genesis is a pure function of the content: a fixed
client id derived from the content hash, one insert, and a record of the content in the `meta`
map. Identical files give byte-identical genesis updates, so merging them is a no-op.

Different files for one path give different geneses, which pycrdt orders by client id (lowest
first). `resolve` then deletes, in each later genesis, the lines that an earlier one already had
(up to the largest count any earlier genesis had of that line). The result is the union of their
lines, nothing doubled that two of them shared. That fix-up is a delete-only update, again a pure
function of the set of geneses, so every node computes byte-identical fix-ups and they merge
idempotently; and as geneses arrive in any order the deletions only grow, so all nodes converge
on the same text.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import pycrdt

from swarm.memory.text import byte_offsets, split_lines

TEXT_ROOT = "text"
META_ROOT = "meta"
GENESIS_PREFIX = "genesis:"
TAIL_KEY = "tail"

# Random pycrdt client ids are below 2**32; genesis ids live in [2**40, 2**53) so they never collide
# with a node's own client id and stay exact in JavaScript (Yjs interop).
_GENESIS_BASE = 1 << 40
_GENESIS_SPAN = (1 << 53) - _GENESIS_BASE


def genesis_client(stored: str, tail: str) -> int:
    digest = hashlib.blake2b(f"{tail}\0{stored}".encode(), digest_size=8).digest()
    return _GENESIS_BASE + int.from_bytes(digest, "big") % _GENESIS_SPAN


def genesis_update(stored: str, tail: str) -> bytes:
    """The deterministic update that brings a file with this (normalized) content into being."""
    client = genesis_client(stored, tail)
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
    text = doc.get(TEXT_ROOT, type=pycrdt.Text)
    meta = doc.get(META_ROOT, type=pycrdt.Map)
    with doc.transaction():
        text.insert(0, stored)
        meta[f"{GENESIS_PREFIX}{client}"] = stored
        meta[TAIL_KEY] = tail
    return doc.get_update()


def records(meta: pycrdt.Map) -> dict[int, str]:  # type: ignore[type-arg]
    """Genesis client id -> stored content, as recorded in a document's meta map."""
    found: dict[int, str] = {}
    for key, value in meta.items():
        suffix = key[len(GENESIS_PREFIX) :]
        if key.startswith(GENESIS_PREFIX) and suffix.isdigit() and isinstance(value, str):
            found[int(suffix)] = value
    return found


def resolve(geneses: dict[int, str]) -> bytes | None:
    """The delete-only update that de-duplicates lines shared by several geneses (None if none)."""
    if len(geneses) < 2:
        return None
    scratch: pycrdt.Doc[Any] = pycrdt.Doc()
    text = scratch.get(TEXT_ROOT, type=pycrdt.Text)
    scratch.get(META_ROOT, type=pycrdt.Map)
    tails: dict[int, str] = {}
    for client, stored in geneses.items():
        # The tail only steers the meta map; rebuild each genesis exactly as its author did.
        tail = _tail_of(client, stored)
        if tail is None:
            return None  # not a genesis we can reproduce: leave the document as it is
        tails[client] = tail
        scratch.apply_update(genesis_update(stored, tail))
    order = sorted(geneses)
    if str(text) != "".join(geneses[c] for c in order):
        order.reverse()
        if str(text) != "".join(geneses[c] for c in order):
            return None
    doomed: list[tuple[int, int]] = []  # byte ranges in the scratch text
    seen_max: Counter[str] = Counter()
    offset = 0
    for client in order:
        lines = split_lines(geneses[client])
        offsets = byte_offsets(lines)
        counts = Counter(lines)
        budget = Counter({line: min(n, seen_max[line]) for line, n in counts.items()})
        for index, line in enumerate(lines):
            if budget[line] > 0:
                budget[line] -= 1
                doomed.append((offset + offsets[index], offset + offsets[index + 1]))
        seen_max |= counts
        offset += offsets[-1]
    if not doomed:
        return None
    updates: list[bytes] = []
    subscription = scratch.observe(lambda event: updates.append(event.update))
    with scratch.transaction():
        for start, stop in reversed(doomed):
            del text[start:stop]
    scratch.unobserve(subscription)
    return updates[0] if updates else None


def _tail_of(client: int, stored: str) -> str | None:
    for tail in ("", "\n", "\r\n"):
        if genesis_client(stored, tail) == client:
            return tail
    return None

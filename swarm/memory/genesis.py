"""The first import of a file, made so that independent imports merge without duplication.

Two nodes that each import the same existing MEMORY.md as an ordinary local insert would end with
the content twice after merging. Instead a genesis is a pure function of the content: a fixed
client id derived from the content hash, one insert, and a record in the `meta` map of the
content's lines (each line's length in Yjs clock units and a hash of it: a fifth of the text, not
a second copy). Identical files give byte-identical genesis updates, so merging them is a no-op.

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

from swarm.memory.text import split_lines
from swarm.memory.vector import read_varuint, write_varuint

TEXT_ROOT = "text"
META_ROOT = "meta"
GENESIS_PREFIX = "genesis:"
TAIL_KEY = "tail"

# Random pycrdt client ids are below 2**32; genesis ids live in [2**40, 2**53) so they never collide
# with a node's own client id and stay exact in JavaScript (Yjs interop).
_GENESIS_BASE = 1 << 40
_GENESIS_SPAN = (1 << 53) - _GENESIS_BASE
_HASH_BYTES = 8


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
        text.insert(0, stored)  # clocks 0 .. clock_length(stored) - 1 of `client`
        meta[f"{GENESIS_PREFIX}{client}"] = encode_record(stored)
        meta[TAIL_KEY] = tail
    return doc.get_update()


Record = list[tuple[int, bytes]]  # per line: (length in Yjs clock units, hash of the line)


def encode_record(stored: str) -> bytes:
    out = bytearray()
    for line in split_lines(stored):
        write_varuint(_clock_length(line), out)
        out += hashlib.blake2b(line.encode("utf-8"), digest_size=_HASH_BYTES).digest()
    return bytes(out)


def decode_record(data: bytes) -> Record:
    lines: Record = []
    pos = 0
    while pos < len(data):
        length, pos = read_varuint(data, pos)
        digest = data[pos : pos + _HASH_BYTES]
        if len(digest) != _HASH_BYTES:
            raise ValueError("truncated genesis record")
        lines.append((length, digest))
        pos += _HASH_BYTES
    return lines


def records(meta: pycrdt.Map) -> dict[int, Record]:  # type: ignore[type-arg]
    """Genesis client id -> its lines, as recorded in a document's meta map (a record holding
    the content itself, as the first version wrote them, is read too)."""
    found: dict[int, Record] = {}
    for key, value in meta.items():
        suffix = key[len(GENESIS_PREFIX) :]
        if not (key.startswith(GENESIS_PREFIX) and suffix.isdigit()):
            continue
        if isinstance(value, str):
            found[int(suffix)] = decode_record(encode_record(value))
        elif isinstance(value, (bytes, bytearray)):  # pycrdt reads bytes back as bytearray
            try:
                found[int(suffix)] = decode_record(bytes(value))
            except ValueError:
                continue  # a peer's odd record: that genesis is left as it is
    return found


def resolve(geneses: dict[int, Record]) -> bytes | None:
    """The delete-only update that de-duplicates lines shared by several geneses (None if none).

    Deletions address operations by (client, clock), so a scratch document whose geneses hold
    placeholder text of the same lengths yields exactly the update the real content would."""
    if len(geneses) < 2:
        return None
    scratch: pycrdt.Doc[Any] = pycrdt.Doc()
    text = scratch.get(TEXT_ROOT, type=pycrdt.Text)
    fillers: dict[int, str] = {}
    for index, client in enumerate(sorted(geneses)):
        total = sum(length for length, _ in geneses[client])
        if total == 0:
            continue
        fillers[client] = chr(ord("a") + index % 26) * total  # ASCII: bytes = clock units
        one: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
        one.get(TEXT_ROOT, type=pycrdt.Text).insert(0, fillers[client])
        scratch.apply_update(one.get_update())
    order = sorted(fillers)
    if str(text) != "".join(fillers[c] for c in order):
        order.reverse()
        if str(text) != "".join(fillers[c] for c in order):
            return None
    doomed: list[tuple[int, int]] = []  # ranges in the scratch text
    seen_max: Counter[bytes] = Counter()
    offset = 0
    for client in order:
        lines = geneses[client]
        counts = Counter(digest for _, digest in lines)
        budget = Counter({line: min(n, seen_max[line]) for line, n in counts.items()})
        for length, digest in lines:
            if budget[digest] > 0:
                budget[digest] -= 1
                doomed.append((offset, offset + length))
            offset += length
        seen_max |= counts
    if not doomed:
        return None
    updates: list[bytes] = []
    subscription = scratch.observe(lambda event: updates.append(event.update))
    with scratch.transaction():
        for start, stop in reversed(doomed):
            del text[start:stop]
    scratch.unobserve(subscription)
    return updates[0] if updates else None


def _clock_length(line: str) -> int:
    """Yjs counts text in UTF-16 code units."""
    return len(line.encode("utf-16-le")) // 2

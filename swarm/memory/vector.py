"""State vectors as plain dicts: client id -> number of operations seen.

Convergence (status), lag, pending-dependency detection and anti-entropy all compare state vectors;
decoding them here keeps the Yjs varint encoding out of every other module.
"""

from __future__ import annotations

import hashlib

StateVector = dict[int, int]


class VectorError(ValueError):
    """Bytes that are not an encoded Yjs state vector."""


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise VectorError("state vector: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise VectorError("state vector: varint too long")


def write_varuint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def decode(data: bytes) -> StateVector:
    count, pos = read_varuint(data, 0)
    vector: StateVector = {}
    for _ in range(count):
        client, pos = read_varuint(data, pos)
        clock, pos = read_varuint(data, pos)
        vector[client] = clock
    if pos != len(data):
        raise VectorError("state vector: trailing bytes")
    return vector


def encode(vector: StateVector) -> bytes:
    out = bytearray()
    entries = sorted((c, k) for c, k in vector.items() if k > 0)
    write_varuint(len(entries), out)
    for client, clock in entries:
        write_varuint(client, out)
        write_varuint(clock, out)
    return bytes(out)


def union(vectors: list[StateVector]) -> StateVector:
    merged: StateVector = {}
    for vector in vectors:
        for client, clock in vector.items():
            if clock > merged.get(client, 0):
                merged[client] = clock
    return merged


def missing(have: StateVector, want: StateVector) -> int:
    """How many operations `want` holds that `have` lacks (the lag of `have`)."""
    return sum(max(0, clock - have.get(client, 0)) for client, clock in want.items())


def covers(have: StateVector, want: StateVector) -> bool:
    return missing(have, want) == 0


def digest(vector: StateVector) -> str:
    """A short stable fingerprint, for presence heartbeats and status comparisons."""
    return hashlib.blake2b(encode(vector), digest_size=8).hexdigest()


def update_start(update: bytes) -> tuple[int, int] | None:
    """(client, first clock) of a single-writer update (what every local transaction publishes).
    None for delete-only updates and for updates from several writers (full states)."""
    try:
        clients, pos = read_varuint(update, 0)
        if clients != 1:
            return None
        _structs, pos = read_varuint(update, pos)
        client, pos = read_varuint(update, pos)
        clock, pos = read_varuint(update, pos)
    except VectorError:
        return None
    return client, clock

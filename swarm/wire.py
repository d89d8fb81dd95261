"""The versioned binary envelope every update travels in.

Layout (all integers big-endian)::

    b"SW"  version:u8  kind:u8  flags:u8
    swarm_len:u16  swarm (UTF-8)
    path_len:u16   path (UTF-8)
    sender_len:u16 sender (UTF-8)
    payload_len:u32 payload
    [signature: 64 bytes, when flags has SIGNED]

`flags` bit 2 (SIGNED): the sender's Ed25519 signature of `signed_bytes` follows the payload (an
update of a protected file, swarm/protect/). Every other bit is refused in a plain envelope: a
sealed frame (same magic and version, swarm/transport/sealed.py) sets them, so it is never
misread as a plain one. Decoding is strict (no trailing bytes, no truncation, valid UTF-8)
because the channel is shared and anyone can publish on it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

WIRE_VERSION = 1
MAGIC = b"SW"
# A file is capped at 4 MiB; its first import also records the content once in the document's
# meta map, so an update can reach twice that. The cap bounds what a hostile publisher can make a
# node allocate; Redis cuts pub/sub clients at 32 MB.
MAX_PAYLOAD = 12 * 1024 * 1024
MAX_STRING = 0xFFFF

_HEAD = struct.Struct(">2sBBB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
SIGNED = 0x04  # 0x01 and 0x02 are the sealed frame's (swarm/transport/sealed.py)
SIGNATURE_BYTES = 64
_SIGNING_CONTEXT = b"swarm-protected-update-v1\0"


class Kind(IntEnum):
    UPDATE = 1  # an incremental Yjs update of one file
    STATE = 2  # a full document state (repair / seed)
    # "Send me what I lack of `path`": the payload is the sender's state vector. Carries no
    # document data, so it never holds back a log trim.
    SYNC_REQUEST = 3
    # The container of a sealed heartbeat (transport/sealed.py; empty path). The same byte as
    # SYNC_REQUEST: version-1 nodes read both, and the two never meet (presence is not on the log).
    PRESENCE = 3


class WireError(ValueError):
    """An envelope that cannot be encoded or decoded; the message is one line."""


@dataclass(frozen=True, slots=True)
class Envelope:
    swarm: str
    path: str
    sender: str
    kind: Kind
    payload: bytes
    version: int = WIRE_VERSION
    signature: bytes = b""  # Ed25519, of `signed_bytes(self)`; empty: unsigned


def signed_bytes(env: Envelope) -> bytes:
    """What a signature covers: swarm, path, sender, kind and payload, unambiguously framed
    (a signature for one file or swarm is never valid for another)."""
    return b"".join(
        (
            _SIGNING_CONTEXT,
            _encode_str("swarm", env.swarm),
            _encode_str("path", env.path),
            _encode_str("sender", env.sender),
            bytes((int(env.kind),)),
            _U32.pack(len(env.payload)),
            bytes(env.payload),
        )
    )


def _encode_str(name: str, value: str) -> bytes:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(f"{name} is not encodable as UTF-8: {exc.reason}") from None
    if len(raw) > MAX_STRING:
        raise WireError(f"{name} is {len(raw)} bytes, the limit is {MAX_STRING}")
    return _U16.pack(len(raw)) + raw


def encode(env: Envelope) -> bytes:
    """Serialize `env`; refuses anything `decode` would refuse."""
    if env.version != WIRE_VERSION:
        raise WireError(f"cannot encode wire version {env.version}, only {WIRE_VERSION}")
    try:
        kind = Kind(env.kind)
    except ValueError:
        raise WireError(f"unknown envelope kind {env.kind!r}") from None
    payload = bytes(env.payload)
    if len(payload) > MAX_PAYLOAD:
        raise WireError(f"payload is {len(payload)} bytes, the limit is {MAX_PAYLOAD}")
    if env.signature and len(env.signature) != SIGNATURE_BYTES:
        raise WireError(f"a signature is {SIGNATURE_BYTES} bytes, not {len(env.signature)}")
    return b"".join(
        (
            _HEAD.pack(MAGIC, WIRE_VERSION, kind, SIGNED if env.signature else 0),
            _encode_str("swarm", env.swarm),
            _encode_str("path", env.path),
            _encode_str("sender", env.sender),
            _U32.pack(len(payload)),
            payload,
            bytes(env.signature),
        )
    )


def _need(data: bytes, pos: int, n: int, what: str) -> int:
    """The offset after `n` bytes at `pos`; a WireError if the envelope ends before."""
    end = pos + n
    if end > len(data):
        raise WireError(f"truncated envelope: {what} needs {n} bytes at offset {pos}")
    return end


def _string(data: bytes, pos: int, what: str) -> tuple[str, int]:
    start = _need(data, pos, _U16.size, f"{what} length")
    end = _need(data, start, _U16.unpack_from(data, pos)[0], what)
    try:
        return data[start:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise WireError(f"{what} is not valid UTF-8") from None


def decode(data: bytes, *, swarm: str | None = None) -> Envelope:
    """Parse one envelope; with `swarm`, also refuse envelopes addressed to another swarm.

    Offsets into the one buffer, no intermediate copies: a catch-up decodes every log entry."""
    data = bytes(data)
    pos = _need(data, 0, _HEAD.size, "header")
    magic, version, kind_code, flags = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"not a swarm envelope (magic {magic!r})")
    if version != WIRE_VERSION:
        raise WireError(f"unsupported wire version {version}")
    try:
        kind = Kind(kind_code)
    except ValueError:
        raise WireError(f"unknown envelope kind {kind_code}") from None
    if flags & ~SIGNED:
        raise WireError(f"unsupported envelope flags 0x{flags:02x}")
    env_swarm, pos = _string(data, pos, "swarm")
    if swarm is not None and env_swarm != swarm:
        raise WireError(f"envelope is for swarm {env_swarm!r}, not {swarm!r}")
    path, pos = _string(data, pos, "path")
    sender, pos = _string(data, pos, "sender")
    start = _need(data, pos, _U32.size, "payload length")
    (payload_len,) = _U32.unpack_from(data, pos)
    if payload_len > MAX_PAYLOAD:
        raise WireError(f"payload is {payload_len} bytes, the limit is {MAX_PAYLOAD}")
    end = _need(data, start, payload_len, "payload")
    signature = b""
    if flags & SIGNED:
        signature = data[end : _need(data, end, SIGNATURE_BYTES, "signature")]
        end += SIGNATURE_BYTES
    if end != len(data):
        raise WireError(f"{len(data) - end} trailing bytes after the envelope")
    return Envelope(
        swarm=env_swarm,
        path=path,
        sender=sender,
        kind=kind,
        payload=data[start : start + payload_len],
        signature=signature,
    )

"""A node's own Ed25519 signing key (`<state_dir>/node-signing.key`, created once, mode 0600) and
the `writers` entries that name the public keys other nodes trust: ``NODE:BASE64KEY``."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_FILE = "node-signing.key"


class WriterKeyError(ValueError):
    """A signing key or writers entry that cannot be used; the message is one line."""


def node_key(state_dir: Path) -> Ed25519PrivateKey:
    """This node's signing key, created (never replaced) on first use."""
    path = state_dir / KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise WriterKeyError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    if len(raw) != 32:
        raise WriterKeyError(f"{path}: not a node signing key (expected 32 bytes, not {len(raw)})")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _create(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use that one
        return node_key(path.parent)
    try:
        os.write(fd, key.private_bytes_raw())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def writer_entry(node: str, key: Ed25519PrivateKey) -> str:
    """The line other nodes put in their `writers` setting to trust this node."""
    return f"{node}:{public_text(key)}"


def parse_writer(entry: str) -> tuple[str, Ed25519PublicKey]:
    """``NODE:BASE64KEY`` (what `swarm keygen --node` prints) -> node id and public key."""
    node, sep, text = entry.strip().rpartition(":")
    if not sep or not node:
        raise WriterKeyError(f"writer {entry!r} is not NODE:PUBLIC_KEY (swarm keygen --node)")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WriterKeyError(f"writer {node!r}: the public key is not base64") from None
    if len(raw) != 32:
        raise WriterKeyError(f"writer {node!r}: a public key is 32 bytes, not {len(raw)}")
    return node, Ed25519PublicKey.from_public_bytes(raw)

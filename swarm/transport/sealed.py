"""The sealed codec: what goes to Redis sealed with the swarm key, so Redis can neither read nor
forge it (the keys themselves: `swarm.transport.keyring`).

Sealed frame (integers big-endian)::

    b"SW" version:u8 kind:u8 flags:u8     flags: SEALED, or SEALED|ENCRYPTED
    key_id: 4 bytes                        which key sealed it (derived from the key)
    nonce: 12 bytes                        random per frame; also the replay identity
    sender_len:u16 sender                  in clear, for logs and the replay window
    body                                   ENCRYPTED: AEAD(inner) | else: inner + AEAD tag

`inner` is the plain envelope of `swarm/wire.py`, so the path travels inside the ciphertext. The
associated data is the context (log entry, snapshot of a field at a covered id, presence of a
node) plus every header byte, so no part can be altered or moved to another place. Sub-keys come
from HKDF bound to the swarm name: the same key in two swarms seals differently.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
from typing import TYPE_CHECKING, Any, Final

from swarm.transport import codec
from swarm.transport.codec import LOG, Codec, Decoded, PlainCodec, Rejected, snapshot_context
from swarm.transport.keyring import KEY_ID_BYTES, Keyring, hkdf, key_id
from swarm.wire import (
    MAGIC,
    MAX_PAYLOAD,
    MAX_STRING,
    SIGNATURE_BYTES,
    SIGNED,
    WIRE_VERSION,
    Envelope,
    Kind,
    WireError,
)
from swarm.wire import decode as wire_decode
from swarm.wire import encode as wire_encode

if TYPE_CHECKING:
    from swarm.config import SwarmSettings

NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SEALED: Final = 0x01
ENCRYPTED: Final = 0x02

_HEAD = struct.Struct(">2sBBB")
_U16 = struct.Struct(">H")
_FIXED = _HEAD.size + KEY_ID_BYTES + NONCE_BYTES + _U16.size
# The largest plain envelope, plus the sealed header and tag: anything longer is refused unread.
_MAX_PLAIN = MAX_PAYLOAD + 3 * (_U16.size + MAX_STRING) + 9 + SIGNATURE_BYTES
MAX_SEALED: Final = _MAX_PLAIN + _FIXED + MAX_STRING + TAG_BYTES


class _SwarmKey:
    """The sub-keys of one swarm key in one swarm."""

    def __init__(self, key: bytes, swarm: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        name = swarm.encode("utf-8")
        self.id = key_id(key)
        self.aead = ChaCha20Poly1305(hkdf(key, b"swarm v1 aead\x00" + name))
        self.path_mac = hkdf(key, b"swarm v1 path\x00" + name)


class SealedCodec:
    """Authenticates every frame; with `encrypt`, also hides payloads, paths and presence."""

    def __init__(self, keyring: Keyring, swarm: str, *, encrypt: bool = True) -> None:
        self.swarm = swarm
        self.encrypt = encrypt
        subkeys = [_SwarmKey(key, swarm) for key in keyring.keys]
        self._current = subkeys[0]
        self._by_id: dict[bytes, _SwarmKey] = {}
        for subkey in subkeys:
            self._by_id.setdefault(subkey.id, subkey)

    # -- envelopes -------------------------------------------------------------------------

    def seal(self, env: Envelope, context: bytes = LOG) -> bytes:
        inner = wire_encode(env)
        sender = env.sender.encode("utf-8")
        flags = SEALED | (ENCRYPTED if self.encrypt else 0)
        nonce = os.urandom(NONCE_BYTES)
        header = b"".join(
            (
                _HEAD.pack(MAGIC, WIRE_VERSION, env.kind, flags),
                self._current.id,
                nonce,
                _U16.pack(len(sender)),
                sender,
            )
        )
        aad = _aad(context, header)
        if self.encrypt:
            return header + self._current.aead.encrypt(nonce, inner, aad)
        return header + inner + self._current.aead.encrypt(nonce, b"", aad + inner)

    def open(self, data: bytes, context: bytes = LOG) -> Decoded:
        data = bytes(data)
        if len(data) > MAX_SEALED:
            raise Rejected(codec.OVERSIZE, f"frame is {len(data)} bytes, limit {MAX_SEALED}")
        if not data or data[:2] != MAGIC[: len(data[:2])]:
            raise Rejected(codec.GARBAGE, "not a swarm envelope")
        if len(data) < _HEAD.size:
            raise Rejected(codec.TRUNCATED, "truncated envelope header")
        _magic, version, kind_code, flags = _HEAD.unpack_from(data)
        if version != WIRE_VERSION:
            raise Rejected(codec.UNKNOWN_VERSION, f"unsupported wire version {version}")
        if flags & ~SIGNED == 0:  # plain, perhaps signed for a protected file: still no key
            plain = PlainCodec(self.swarm)
            try:
                sender = plain.open(data).envelope.sender
            except Rejected as exc:
                sender = exc.sender
            raise Rejected(
                codec.UNAUTHENTICATED, "plain envelope; this swarm needs a key", sender
            )
        if flags not in (SEALED, SEALED | ENCRYPTED):
            raise Rejected(codec.MALFORMED, f"unsupported envelope flags 0x{flags:02x}")
        if len(data) < _FIXED:
            raise Rejected(codec.TRUNCATED, "truncated sealed header")
        kid = data[_HEAD.size : _HEAD.size + KEY_ID_BYTES]
        nonce = data[_HEAD.size + KEY_ID_BYTES : _FIXED - _U16.size]
        (sender_len,) = _U16.unpack_from(data, _FIXED - _U16.size)
        body_at = _FIXED + sender_len
        if len(data) < body_at + TAG_BYTES:
            raise Rejected(codec.TRUNCATED, "truncated sealed envelope")
        try:
            sender = data[_FIXED:body_at].decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(codec.MALFORMED, "sender is not valid UTF-8") from None
        subkey = self._by_id.get(kid)
        if subkey is None:
            raise Rejected(codec.WRONG_KEY, f"sealed with unknown key {kid.hex()}", sender)
        aad = _aad(context, data[:body_at])
        body = data[body_at:]
        from cryptography.exceptions import InvalidTag  # loaded already by the key's AEAD

        try:
            if flags & ENCRYPTED:
                inner = subkey.aead.decrypt(nonce, body, aad)
            else:
                inner, tag = body[:-TAG_BYTES], body[-TAG_BYTES:]
                subkey.aead.decrypt(nonce, tag, aad + inner)
        except InvalidTag:
            raise Rejected(codec.FORGED, "authentication failed", sender) from None
        try:
            env = wire_decode(inner, swarm=self.swarm)
        except WireError as exc:
            raise Rejected(codec.MALFORMED, f"sealed envelope: {exc}", sender) from None
        if env.kind != kind_code or env.sender != sender:
            raise Rejected(codec.FORGED, "header does not match the sealed envelope", sender)
        return Decoded(env, nonce)

    # -- names and presence ----------------------------------------------------------------

    def path_field(self, path: str) -> str:
        """A keyed hash: Redis sees which records belong together, never the file name."""
        if not self.encrypt:
            return path
        digest = hmac.new(self._current.path_mac, path.encode("utf-8"), hashlib.sha256)
        return "h:" + digest.hexdigest()[:40]

    def seal_snapshot(self, env: Envelope, field: str, covered_id: str) -> bytes:
        """Sealed as the state envelope of its path, bound to its field and covered id."""
        return self.seal(env, snapshot_context(field, covered_id))

    def open_snapshot(self, field: str, covered_id: str, data: bytes) -> Envelope:
        return self.open(data, snapshot_context(field, covered_id)).envelope

    def seal_info(self, node: str, info: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(info, separators=(",", ":"), allow_nan=False).encode("utf-8")
        env = Envelope(self.swarm, "", node, Kind.PRESENCE, raw)
        return {"sealed": base64.b64encode(self.seal(env, codec.presence_context(node))).decode()}

    def open_info(self, node: str, info: object) -> dict[str, Any]:
        sealed = info.get("sealed") if isinstance(info, dict) else None
        if not isinstance(sealed, str):
            raise Rejected(codec.UNAUTHENTICATED, "heartbeat info is not sealed", node)
        try:
            data = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(
                codec.MALFORMED_PRESENCE, "sealed heartbeat is not base64", node
            ) from None
        env = self.open(data, codec.presence_context(node)).envelope
        if env.sender != node:
            raise Rejected(codec.FORGED, "heartbeat of another node", node)
        try:
            opened = json.loads(env.payload)
        except ValueError:
            raise Rejected(codec.MALFORMED_PRESENCE, "heartbeat info is not JSON", node) from None
        if not isinstance(opened, dict):
            raise Rejected(codec.MALFORMED_PRESENCE, "heartbeat info is not an object", node)
        return opened


def _aad(context: bytes, header: bytes) -> bytes:
    return _U16.pack(len(context)) + context + header


def make_codec(swarm: str, keyring: Keyring | None, *, encrypt: bool = True) -> Codec:
    """The codec a transport uses: sealed with a key, plain without."""
    if keyring is None:
        return PlainCodec(swarm)
    return SealedCodec(keyring, swarm, encrypt=encrypt)


def codec_from_settings(settings: SwarmSettings) -> Codec:
    """The codec the settings ask for; KeyFileError if the key cannot be loaded."""
    key_text = settings.key.get_secret_value() if settings.key is not None else None
    keyring = Keyring.load(settings.key_file, key_text)
    return make_codec(settings.swarm, keyring, encrypt=settings.encrypt)

"""The swarm key: loading it, and sealing what goes to Redis so Redis can neither read nor forge it.

A swarm key is 32 random bytes, base64 on one line. It comes from a key file (`key_file`,
`SWARM_KEY_FILE`) or from `SWARM_KEY`, never from a command-line argument (argv is visible to every
user of the machine). Either may list several keys, one per line (or comma separated in the
environment): the first is the current key, used to seal; the others are only accepted, which is
how a rotation works (see docs/security.md).

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
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from swarm.transport import codec as reasons
from swarm.transport.codec import LOG, Codec, Decoded, PlainCodec, Rejected
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

KEY_BYTES: Final = 32
KEY_ID_BYTES: Final = 4
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


class CryptoError(ValueError):
    """A key that cannot be used; the message is one line."""


class KeyFileError(CryptoError):
    """A key file or key setting that is missing, unreadable or malformed."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def format_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def key_id(key: bytes) -> bytes:
    """A short public name of a key, so a receiver knows which key to try (and operators too)."""
    return _hkdf(key, b"swarm key id v1", KEY_ID_BYTES)


def _hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    # cryptography is imported only by a swarm that has a key: it costs ~9 MB of RSS.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def parse_keys(text: str, source: str) -> tuple[bytes, ...]:
    """Keys from lines (or commas) of base64; blank lines and `#` comments are skipped."""
    keys: list[bytes] = []
    for number, line in enumerate(text.replace(",", "\n").splitlines(), start=1):
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        try:
            key = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{source}: key {number} is not base64") from None
        if len(key) != KEY_BYTES:
            raise KeyFileError(
                f"{source}: key {number} is {len(key)} bytes, a swarm key is {KEY_BYTES}"
                " (create one with `swarm keygen PATH`)"
            )
        if key not in keys:
            keys.append(key)
    if not keys:
        raise KeyFileError(f"{source}: holds no key (create one with `swarm keygen PATH`)")
    return tuple(keys)


def read_key_file(path: Path) -> tuple[bytes, ...]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path}: is not a base64 text file") from None
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from None
    return parse_keys(text, f"key file {path}")


def write_key_file(path: Path) -> bytes:
    """Create `path` holding a new key, readable by its owner only; never overwrites a file."""
    key = generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (format_key(key) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


@dataclass(frozen=True)
class Keyring:
    """The current key (seals) and the keys still accepted (opens) during a rotation."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise CryptoError("a keyring needs at least one key")
        if any(len(key) != KEY_BYTES for key in self.keys):
            raise CryptoError(f"every swarm key is {KEY_BYTES} bytes")

    @property
    def current(self) -> bytes:
        return self.keys[0]

    @classmethod
    def load(cls, key_file: Path | None = None, key_text: str | None = None) -> Keyring | None:
        """The keyring of a key file or a key setting (not both); None if neither is given."""
        if key_file is not None and key_text is not None:
            raise KeyFileError("set either a key file or SWARM_KEY, not both")
        if key_file is not None:
            return cls(read_key_file(key_file))
        if key_text is not None:
            return cls(parse_keys(key_text, "SWARM_KEY"))
        return None


class _SwarmKey:
    """The sub-keys of one swarm key in one swarm."""

    def __init__(self, key: bytes, swarm: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        name = swarm.encode("utf-8")
        self.id = key_id(key)
        self.aead = ChaCha20Poly1305(_hkdf(key, b"swarm v1 aead\x00" + name))
        self.path_mac = _hkdf(key, b"swarm v1 path\x00" + name)


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
            raise Rejected(reasons.OVERSIZE, f"frame is {len(data)} bytes, limit {MAX_SEALED}")
        if not data or data[:2] != MAGIC[: len(data[:2])]:
            raise Rejected(reasons.GARBAGE, "not a swarm envelope")
        if len(data) < _HEAD.size:
            raise Rejected(reasons.TRUNCATED, "truncated envelope header")
        _magic, version, kind_code, flags = _HEAD.unpack_from(data)
        if version != WIRE_VERSION:
            raise Rejected(reasons.UNKNOWN_VERSION, f"unsupported wire version {version}")
        if flags & ~SIGNED == 0:  # plain, perhaps signed for a protected file: still no key
            plain = PlainCodec(self.swarm)
            try:
                sender = plain.open(data).envelope.sender
            except Rejected as exc:
                sender = exc.sender
            raise Rejected(
                reasons.UNAUTHENTICATED, "plain envelope; this swarm needs a key", sender
            )
        if flags not in (SEALED, SEALED | ENCRYPTED):
            raise Rejected(reasons.MALFORMED, f"unsupported envelope flags 0x{flags:02x}")
        if len(data) < _FIXED:
            raise Rejected(reasons.TRUNCATED, "truncated sealed header")
        kid = data[_HEAD.size : _HEAD.size + KEY_ID_BYTES]
        nonce = data[_HEAD.size + KEY_ID_BYTES : _FIXED - _U16.size]
        (sender_len,) = _U16.unpack_from(data, _FIXED - _U16.size)
        body_at = _FIXED + sender_len
        if len(data) < body_at + TAG_BYTES:
            raise Rejected(reasons.TRUNCATED, "truncated sealed envelope")
        try:
            sender = data[_FIXED:body_at].decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(reasons.MALFORMED, "sender is not valid UTF-8") from None
        subkey = self._by_id.get(kid)
        if subkey is None:
            raise Rejected(reasons.WRONG_KEY, f"sealed with unknown key {kid.hex()}", sender)
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
            raise Rejected(reasons.FORGED, "authentication failed", sender) from None
        try:
            env = wire_decode(inner, swarm=self.swarm)
        except WireError as exc:
            raise Rejected(reasons.MALFORMED, f"sealed envelope: {exc}", sender) from None
        if env.kind != kind_code or env.sender != sender:
            raise Rejected(reasons.FORGED, "header does not match the sealed envelope", sender)
        return Decoded(env, nonce)

    # -- names and presence ----------------------------------------------------------------

    def path_field(self, path: str) -> str:
        """A keyed hash: Redis sees which records belong together, never the file name."""
        if not self.encrypt:
            return path
        digest = hmac.new(self._current.path_mac, path.encode("utf-8"), hashlib.sha256)
        return "h:" + digest.hexdigest()[:40]

    def seal_info(self, node: str, info: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(info, separators=(",", ":"), allow_nan=False).encode("utf-8")
        env = Envelope(self.swarm, "", node, Kind.HELLO, raw)
        return {"sealed": base64.b64encode(self.seal(env, reasons.presence_context(node))).decode()}

    def open_info(self, node: str, info: object) -> dict[str, Any]:
        sealed = info.get("sealed") if isinstance(info, dict) else None
        if not isinstance(sealed, str):
            raise Rejected(reasons.UNAUTHENTICATED, "heartbeat info is not sealed", node)
        try:
            data = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(
                reasons.MALFORMED_PRESENCE, "sealed heartbeat is not base64", node
            ) from None
        env = self.open(data, reasons.presence_context(node)).envelope
        if env.sender != node:
            raise Rejected(reasons.FORGED, "heartbeat of another node", node)
        try:
            opened = json.loads(env.payload)
        except ValueError:
            raise Rejected(reasons.MALFORMED_PRESENCE, "heartbeat info is not JSON", node) from None
        if not isinstance(opened, dict):
            raise Rejected(reasons.MALFORMED_PRESENCE, "heartbeat info is not an object", node)
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

"""The swarm key: where it comes from, and which keys a node holds during a rotation.

A swarm key is 32 random bytes, base64 on one line. It comes from a key file (`key_file`,
`SWARM_KEY_FILE`) or from `SWARM_KEY`, never from a command-line argument (argv is visible to every
user of the machine). Either may list several keys, one per line (or comma separated in the
environment): the first is the current key, used to seal; the others are only accepted, which is
how a rotation works (see docs/security.md). Sealing with them: `swarm.transport.sealed`.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

KEY_BYTES: Final = 32
KEY_ID_BYTES: Final = 4


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
    return hkdf(key, b"swarm key id v1", KEY_ID_BYTES)


def hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
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

"""How envelopes and presence turn into the bytes stored in and sent through Redis.

The transport holds one `Codec` and passes every byte it writes or reads through it. `PlainCodec`
is the keyless default (the envelope of `swarm/wire.py` as is); `swarm.transport.sealed.SealedCodec`
authenticates and encrypts. Whatever cannot be decoded raises `Rejected` with a short reason, so
the transport can count rejections per reason for `/metrics`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, Protocol

from swarm.wire import MAGIC, WIRE_VERSION, Envelope, Kind, WireError, decode, encode

# Why an input was dropped; the label values of the rejection metric.
GARBAGE: Final = "garbage"  # not an envelope at all
TRUNCATED: Final = "truncated"
OVERSIZE: Final = "oversize"
UNKNOWN_VERSION: Final = "unknown-version"
MALFORMED: Final = "malformed"  # an envelope, but inconsistent (bad UTF-8, trailing bytes...)
WRONG_SWARM: Final = "wrong-swarm"
UNAUTHENTICATED: Final = "unauthenticated"  # plain envelope where a key is required
NO_KEY: Final = "no-key"  # sealed envelope, and this node has no key
WRONG_KEY: Final = "wrong-key"  # sealed with a key this node does not hold
FORGED: Final = "forged"  # sealed with a held key, but authentication failed
REPLAY: Final = "replay"  # a live message already seen
MALFORMED_PRESENCE: Final = "malformed-presence"

# The context an item is sealed for, so one cannot be passed off as another.
LOG: Final = b"log"  # an envelope on the bus or in the log


def snapshot_context(field: str, covered_id: str) -> bytes:
    return b"snap " + field.encode("utf-8") + b" " + covered_id.encode()


def presence_context(node: str) -> bytes:
    return b"node " + node.encode("utf-8")


SWARM_KEY: Final = "swarm-key"  # the problem cause: live peers seal with another key
_KEY_TROUBLE = {
    NO_KEY: "sealed with a swarm key, and this node has none (set SWARM_KEY_FILE or SWARM_KEY)",
    WRONG_KEY: "sealed with a swarm key this node does not hold",
    UNAUTHENTICATED: "not sealed, and this node requires its swarm key (they run without one)",
}


def key_trouble(nodes: dict[str, str]) -> str:
    """One line for peers (node -> rejection reason) whose heartbeats this node cannot open."""
    groups: dict[str, list[str]] = {}
    for node, reason in sorted(nodes.items()):
        groups.setdefault(reason, []).append(node)
    parts = [
        f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''} "
        f"{'is' if len(names) == 1 else 'are'} {_KEY_TROUBLE.get(reason, 'unreadable')}"
        for reason, names in sorted(groups.items())
    ]
    return f"swarm key mismatch: the heartbeat of {'; that of '.join(parts)}; no sync with them"


class Rejected(ValueError):
    """An input that is dropped; `reason` is one of the constants above, the message one line."""

    def __init__(self, reason: str, message: str, sender: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.sender = sender


@dataclass(frozen=True)
class Decoded:
    envelope: Envelope
    nonce: bytes | None = None  # set by codecs that can detect a replay


class Codec(Protocol):
    def seal(self, env: Envelope, context: bytes = LOG) -> bytes: ...

    def open(self, data: bytes, context: bytes = LOG) -> Decoded:
        """Decode `data`, or raise Rejected."""
        ...

    def path_field(self, path: str) -> str:
        """The name a path is stored under in Redis (hash fields of the snapshots)."""
        ...

    def seal_snapshot(self, env: Envelope, field: str, covered_id: str) -> bytes:
        """The stored form of a snapshot (`env.payload`: the state) under `field`, covering the
        log up to `covered_id`."""
        ...

    def open_snapshot(self, field: str, covered_id: str, data: bytes) -> Envelope:
        """The state envelope of a stored snapshot (path, state as payload), or raise Rejected."""
        ...

    def seal_info(self, node: str, info: dict[str, Any]) -> dict[str, Any]: ...

    def open_info(self, node: str, info: object) -> dict[str, Any]:
        """The heartbeat info as the node sent it, or raise Rejected."""
        ...


def _sender_hint(data: bytes) -> str:
    """The sender of a plain envelope, best effort, for rate-limited logging of what failed."""
    try:
        pos = 5
        for _ in range(2):  # skip swarm and path
            pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
        length = int.from_bytes(data[pos : pos + 2], "big")
        return data[pos + 2 : pos + 2 + min(length, 128)].decode("utf-8", "replace")
    except (IndexError, ValueError):
        return ""


def classify_plain(data: bytes, exc: WireError) -> str:
    """The reason a plain envelope failed to decode (wire.py reports it as text only)."""
    if not data or data[:2] != MAGIC[: len(data[:2])]:
        return GARBAGE
    if len(data) < 5:
        return TRUNCATED
    if data[2] != WIRE_VERSION:
        return UNKNOWN_VERSION
    text = str(exc)
    if "flags" in text:
        return NO_KEY
    if "truncated" in text:
        return TRUNCATED
    if "the limit is" in text:
        return OVERSIZE
    if "is for swarm" in text:
        return WRONG_SWARM
    return MALFORMED


class PlainCodec:
    """No key: envelopes travel as encoded by `swarm/wire.py`, presence as JSON."""

    def __init__(self, swarm: str) -> None:
        self.swarm = swarm

    def seal(self, env: Envelope, context: bytes = LOG) -> bytes:
        return encode(env)

    def open(self, data: bytes, context: bytes = LOG) -> Decoded:
        try:
            return Decoded(decode(data, swarm=self.swarm))
        except WireError as exc:
            raise Rejected(classify_plain(data, exc), str(exc), _sender_hint(data)) from None

    def path_field(self, path: str) -> str:
        return path

    def seal_snapshot(self, env: Envelope, field: str, covered_id: str) -> bytes:
        """The state as is, or, for a protected file (signed: swarm/protect/), the envelope
        itself so its signature is kept."""
        return encode(env) if env.signature else env.payload

    def open_snapshot(self, field: str, covered_id: str, data: bytes) -> Envelope:
        """The state itself, or a signed envelope holding it; the sender of a bare state is
        unknown ('')."""
        if data[:2] == MAGIC:
            try:
                env = decode(data, swarm=self.swarm)
            except WireError:
                pass
            else:
                if env.path == field and env.signature:
                    return env
        return Envelope(self.swarm, field, "", Kind.STATE, data)

    def seal_info(self, node: str, info: dict[str, Any]) -> dict[str, Any]:
        return info

    def open_info(self, node: str, info: object) -> dict[str, Any]:
        if not isinstance(info, dict):
            raise Rejected(MALFORMED_PRESENCE, "heartbeat info is not an object", node)
        if set(info) == {"sealed"}:  # what a keyed node sends (transport/sealed.py)
            raise Rejected(NO_KEY, "heartbeat sealed with a swarm key", node)
        return info


class ReplayGuard:
    """Remembers the last nonces of each sender; a live message whose nonce is known is a replay.

    Bounded both ways (nonces per sender, senders) so a flood cannot grow it; a replay older than
    the window gets through, which is harmless: applying a CRDT update twice changes nothing.
    """

    def __init__(self, per_sender: int = 10_000, senders: int = 1_024) -> None:
        self._per_sender = per_sender
        self._senders = senders
        self._seen: OrderedDict[str, OrderedDict[bytes, None]] = OrderedDict()

    def fresh(self, sender: str, nonce: bytes) -> bool:
        """True the first time `nonce` is seen from `sender` (and remember it)."""
        nonces = self._seen.get(sender)
        if nonces is None:
            nonces = self._seen[sender] = OrderedDict()
            if len(self._seen) > self._senders:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(sender)
        if nonce in nonces:
            return False
        nonces[nonce] = None
        if len(nonces) > self._per_sender:
            nonces.popitem(last=False)
        return True

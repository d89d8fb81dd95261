"""Which files are protected, who may change them, and the checks on every way in and out.

Opt-in: with no `writers` configured nothing is checked and protected files sync like any other.
With writers, an update, state or snapshot of a protected file is taken only if it is signed by
a listed writer (the envelope's sender, with that writer's key, over swarm, path, sender, kind
and payload: swarm/wire.py `signed_bytes`). A node that is not a writer never sends one; a
local write to a protected file there is kept aside and undone on disk (swarm/node.py asks
`refuses_local`). Every refusal is counted per (node, file) for `swarm status`.

This is on top of the swarm key, which every node holds: the key lets a node into the swarm, a
writer key lets it change these files.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pathspec import GitIgnoreSpec

from swarm.protect.keys import public_text
from swarm.wire import Envelope, Kind, signed_bytes

log = logging.getLogger(__name__)

DEFAULT_PROTECT = ("SOUL.md", "IDENTITY.md", "AGENTS.md", "soul.json", "safety/**")
_REPORTED = 50  # (node, file) pairs told in heartbeats

UNSIGNED = "unsigned"
NOT_A_WRITER = "not a writer"
BAD_SIGNATURE = "bad signature"
LOCAL_WRITE = "local write by a node that is not a writer (undone on disk, kept in the store)"


@dataclass
class Refusal:
    node: str
    path: str
    reason: str
    count: int = 0
    last: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Protection:
    def __init__(
        self,
        node_id: str,
        patterns: Iterable[str] = DEFAULT_PROTECT,
        writers: Mapping[str, Ed25519PublicKey] | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.node_id = node_id
        self.writers = dict(writers or {})
        self.active = bool(self.writers)
        self._spec = GitIgnoreSpec.from_lines(list(patterns))
        self._key = key
        mine = self.writers.get(node_id)
        self.is_writer = (
            not self.active
            or (key is not None and mine is not None and public_text(mine) == public_text(key))
        )
        self.refusals: dict[tuple[str, str], Refusal] = {}

    def protects(self, path: str) -> bool:
        """Whether `path` is guarded here (never, while no writers are configured)."""
        return self.active and self._spec.match_file(path)

    def refuses_local(self, path: str) -> bool:
        """Whether a change this node makes to `path` must be undone (it is not a writer)."""
        return self.protects(path) and not self.is_writer

    # -- out -------------------------------------------------------------------------------

    def outgoing(self, env: Envelope) -> Envelope | None:
        """`env` ready to send: signed if its file is protected; None if this node may not
        send it (not a writer)."""
        if env.kind not in (Kind.UPDATE, Kind.STATE) or not self.protects(env.path):
            return env
        if not self.is_writer or self._key is None:
            return None
        return dataclasses.replace(env, signature=self._key.sign(signed_bytes(env)))

    # -- in --------------------------------------------------------------------------------

    def admits(self, env: Envelope) -> bool:
        """Whether an update, state or snapshot may change our document of `env.path`; a
        refusal is counted against its sender and file."""
        if env.kind not in (Kind.UPDATE, Kind.STATE) or not self.protects(env.path):
            return True
        public = self.writers.get(env.sender)
        if not env.signature:
            reason = UNSIGNED
        elif public is None:
            reason = NOT_A_WRITER
        else:
            try:
                public.verify(env.signature, signed_bytes(env))
                return True
            except InvalidSignature:
                reason = BAD_SIGNATURE
        self.refuse(env.sender or "unknown", env.path, reason)
        return False

    def refuse(self, node: str, path: str, reason: str) -> None:
        refusal = self.refusals.get((node, path))
        if refusal is None:
            if len(self.refusals) >= 10 * _REPORTED:  # a flood of names: keep the newest
                oldest = min(self.refusals, key=lambda k: self.refusals[k].last)
                del self.refusals[oldest]
            refusal = self.refusals[(node, path)] = Refusal(node, path, reason)
            log.warning("refused a change of protected %s from %s: %s", path, node, reason)
        refusal.reason = reason
        refusal.count += 1
        refusal.last = time.time()

    def report(self) -> list[dict[str, Any]]:
        """The newest refusals, for heartbeats and `swarm status`."""
        newest = sorted(self.refusals.values(), key=lambda r: r.last, reverse=True)
        return [refusal.to_json() for refusal in newest[:_REPORTED]]

"""`swarm doctor`'s check of the guarded files: is this node the writer its settings say, with the
key they list? Reads the state folder only (no key or database is created)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.config import DaemonSettings
from swarm.doctor.checks import Check, Status
from swarm.protect.keys import KEY_FILE, parse_writer, public_text


def _stored_node_id(state: Path) -> str | None:
    """The node id the daemon keeps in its state database, read without writing anything."""
    db = state / "state.db"
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'node_id'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def check_writers(settings: DaemonSettings) -> Check:
    if not settings.writers:
        return Check("writers", Status.OK, "no writers listed: protected files sync like others")
    writers = dict(parse_writer(entry) for entry in settings.writers)
    state = settings.resolved_state_dir
    node = settings.node or _stored_node_id(state)
    if node is None:
        return Check("writers", Status.WARN, "this node's id is not known yet (no --node or state)")
    if node not in writers:
        return Check(
            "writers",
            Status.OK,
            f"{node} is not one of the {len(writers)} writers: its agents cannot change "
            f"{', '.join(settings.protect)}",
        )
    fix = (
        f"run `swarm keygen --node --state-dir {state}` on this node and list what it prints"
        " in writers on every node"
    )
    try:
        raw = (state / KEY_FILE).read_bytes()
        mine = public_text(Ed25519PrivateKey.from_private_bytes(raw))
    except (OSError, ValueError):
        return Check(
            "writers", Status.FAIL, f"{node} is listed as a writer but has no signing key", fix
        )
    if mine != public_text(writers[node]):
        return Check(
            "writers",
            Status.FAIL,
            f"{node} is listed as a writer with another key than its own: every node would"
            " refuse its changes of protected files",
            fix,
        )
    return Check("writers", Status.OK, f"{node} is one of the {len(writers)} writers")

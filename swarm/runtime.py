"""A sidecar's parts and the one rule for when it is ready.

`open_runtime` turns settings into the parts (store, node, transport, replicator); the daemon
(`swarm.daemon`) runs them. The HTTP side, metrics and the control socket read a `Runtime`, never
the daemon module, so the imports point one way: daemon -> http/control/metrics -> runtime.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from swarm.config import DaemonSettings, SwarmSettings
from swarm.node import Node, NodeOptions
from swarm.problems import Problems
from swarm.replication import ReplicationOptions, Replicator
from swarm.store import Store
from swarm.transport.codec import Codec
from swarm.transport.keyring import KeyFileError
from swarm.transport.redis_client import RedisSecurity
from swarm.transport.redis_errors import CONNECTION
from swarm.transport.redis_transport import RedisTransport

if TYPE_CHECKING:
    from swarm.protect.guard import Protection
from swarm.transport.sealed import codec_from_settings

log = logging.getLogger("swarm.daemon")


class DaemonError(Exception):
    """The daemon cannot start; the message is one line."""


@dataclass
class Runtime:
    """Everything a running sidecar is made of; the HTTP side reads it."""

    settings: DaemonSettings
    node_id: str
    store: Store
    node: Node
    transport: RedisTransport
    replicator: Replicator
    reconciled: asyncio.Event
    state_lock: IO[bytes] | None = None

    @property
    def ready(self) -> bool:
        return not_ready_reason(self) is None


def not_ready_reason(runtime: Runtime) -> str | None:
    """Why the sidecar is not ready, or None when it is: the one readiness rule (`/readyz`,
    `swarm_ready`, the control socket's status, sd_notify's caller)."""
    transport, node = runtime.transport, runtime.node
    problems = transport.problems
    if not transport.connected:
        known = problems.get(CONNECTION) if problems else None
        if known is not None:
            return known.message
        error = transport.last_error
        return "Redis unreachable" + (f": {error}" if error else "")
    if problems:
        return problems.newest()
    if not runtime.replicator.caught_up:
        return "catching up from Redis"
    if not runtime.reconciled.is_set():
        return "initial reconcile of the memory folder not finished"
    if node.deletions_held is not None:
        return f"deletions held: {node.deletions_held} (run swarm confirm-deletes)"
    if node.flood.held is not None:
        return node.flood.held
    return None


def node_id_for(store: Store, requested: str | None) -> str:
    """The node id: as requested, else the stable one kept in the state folder."""
    if requested:
        return requested
    stored = store.get_meta("node_id")
    if stored:
        return stored
    created = f"{socket.gethostname().split('.')[0] or 'node'}-{secrets.token_hex(3)}"
    store.set_meta("node_id", created)
    return created


def load_codec(settings: SwarmSettings) -> Codec:
    """The swarm key's codec (plain without a key); DaemonError naming a bad key setting."""
    try:
        return codec_from_settings(settings)
    except KeyFileError as exc:
        raise DaemonError(str(exc)) from None


def transport_for(
    settings: SwarmSettings, node_id: str, codec: Codec | None = None
) -> RedisTransport:
    """The Redis transport the settings describe: swarm key, Redis credentials and TLS."""
    security = RedisSecurity(
        username=settings.redis_username,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        ca_file=settings.redis_ca_file,
    )
    return RedisTransport(
        settings.redis_url,
        settings.swarm,
        node_id,
        codec=codec if codec is not None else load_codec(settings),
        security=security,
        sentinel_password=(
            settings.sentinel_password.get_secret_value() if settings.sentinel_password else None
        ),
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_ms,
    )


def open_runtime(settings: DaemonSettings) -> Runtime:
    codec = load_codec(settings)  # before anything is opened: a bad key stops here
    root = settings.dir
    if not root.is_dir():
        raise DaemonError(f"memory folder {root} does not exist or is not a folder")
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise DaemonError(f"memory folder {root} is not readable and writable by this user")
    lock = _lock_state_dir(settings.resolved_state_dir)
    store = Store(settings.resolved_state_dir)
    node_id = node_id_for(store, settings.node)
    options = NodeOptions.from_settings(settings, node_id)
    node = Node(options, store)
    node.protection = protection_for(settings, node_id)
    node.load()
    transport = transport_for(settings, node_id, codec)
    # Redis trouble and a swarm key mismatch: one log line per cause, /readyz, status, metrics.
    transport.problems = Problems(logging.getLogger("swarm.problems"))
    replicator = Replicator(
        node,
        transport,
        ReplicationOptions(
            swarm=settings.swarm,
            node_id=node_id,
            role=settings.role,
            heartbeat_interval=settings.heartbeat_interval,
            offline_after=settings.offline_after,
        ),
    )
    runtime = Runtime(settings, node_id, store, node, transport, replicator, asyncio.Event())
    runtime.state_lock = lock
    return runtime


def protection_for(settings: DaemonSettings, node_id: str) -> Protection:
    """The guard of protected files; the node's signing key is read (or created) only when
    writers are configured."""
    from swarm.protect.guard import Protection
    from swarm.protect.keys import WriterKeyError, node_key, parse_writer

    writers = dict(parse_writer(entry) for entry in settings.writers)
    if not writers:
        return Protection(node_id, settings.protect)
    try:
        key = node_key(settings.resolved_state_dir)
    except WriterKeyError as exc:
        raise DaemonError(str(exc)) from None
    guard = Protection(node_id, settings.protect, writers, key)
    log.info(
        "protected files (%s): this node %s one of their %d writers",
        ", ".join(settings.protect), "is" if guard.is_writer else "is not", len(writers),
    )
    return guard


def _lock_state_dir(state_dir: Path) -> IO[bytes]:
    """One daemon per state folder: two would both ingest every agent write (doubling it) and
    race on renders. The lock dies with the process, so a crash never leaves it stale."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(state_dir / "daemon.lock", "wb")  # noqa: SIM115 - held for the process
    except OSError as exc:
        problem = "is not a folder" if state_dir.exists() else (exc.strerror or str(exc))
        raise DaemonError(
            f"state folder {state_dir} (--state-dir / SWARM_STATE_DIR) {problem}"
            + ("" if state_dir.exists() else " (cannot be created)")
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DaemonError(
            f"another swarm daemon is already using the state folder {state_dir}"
        ) from None
    return handle


def redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"

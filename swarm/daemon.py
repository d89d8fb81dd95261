"""`swarm daemon`: one sidecar process, from settings to a clean exit.

Start-up order: open the store (a corrupt one stops here, untouched), rebuild documents, subscribe,
catch up from Redis (bounded wait: Redis being down must not stop local work), reconcile the folder,
then watch. Shutdown on SIGTERM/SIGINT: stop taking new work, flush the outbox within the grace
period, persist, exit 0; a second signal exits at once (every commit is already durable).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from swarm.config import DaemonSettings, SwarmSettings
from swarm.crypto import KeyFileError, codec_from_settings
from swarm.node import Node, NodeOptions
from swarm.problems import Problems
from swarm.replication import ReplicationOptions, Replicator
from swarm.sd_notify import sd_notify
from swarm.store import Store
from swarm.transport.codec import Codec
from swarm.transport.redis_client import RedisSecurity
from swarm.transport.redis_transport import RedisTransport

if TYPE_CHECKING:
    from swarm.http import HttpServer
    from swarm.protect.guard import Protection

log = logging.getLogger("swarm.daemon")

_SWITCH_INTERVAL_S = 0.0005
_INITIAL_CATCHUP_WAIT = 3.0


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
        return (
            self.reconciled.is_set()
            and self.replicator.caught_up
            and self.transport.connected
            and self.node.deletions_held is None
            and self.node.flood.held is None
            and not self.transport.problems
        )


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
    options = NodeOptions(
        root=root,
        state_dir=settings.resolved_state_dir,
        debounce_ms=settings.debounce_ms,
        max_bytes=settings.max_file_bytes,
        include=settings.include,
        ignore=settings.ignore,
        private=settings.private,
        delete_guard_share=settings.delete_guard_share,
        new_files_per_minute=settings.new_files_per_minute,
        new_mb_per_minute=settings.new_mb_per_minute,
        node_id=node_id,
        role=settings.role,
    )
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


async def serve(runtime: Runtime, stop: asyncio.Event) -> None:
    """Run every loop of the sidecar until `stop` is set, then shut down gracefully."""
    node, replicator = runtime.node, runtime.replicator
    # Renders and file reads run in worker threads; with Python's default 5 ms GIL switch
    # interval a message arriving meanwhile could wait that long for the event loop.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    # One commit per turn of the loop, still before anything leaves the node (see store.py).
    runtime.store.defer_commits(asyncio.get_running_loop())
    http = _bind_http(runtime)  # before anything runs: a taken address stops the start
    await runtime.transport.start()
    log.info(
        "node %s syncing %s in swarm %s via %s",
        runtime.node_id,
        runtime.settings.dir,
        runtime.settings.swarm,
        _redact(runtime.settings.redis_url),
    )
    work_stop, http_stop = asyncio.Event(), asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            serving = group.create_task(http.serve(http_stop)) if http is not None else None
            group.create_task(replicator.run(work_stop))
            watching = asyncio.Event()
            group.create_task(node.watch_loop(work_stop, watching))
            group.create_task(node.render_loop(work_stop))
            group.create_task(node.maintenance_loop(work_stop))
            await watching.wait()
            await replicator.wait_caught_up(_INITIAL_CATCHUP_WAIT)
            await node.reconcile()
            runtime.reconciled.set()
            from swarm.control import serve_control  # imported late: only the daemon needs it

            group.create_task(serve_control(runtime, work_stop))
            log.info("ready: %d files, outbox %d", len(node.docs), runtime.store.outbox_depth())
            sd_notify("READY=1")
            await stop.wait()
            log.info("stopping: flushing the outbox (grace %.1fs)", runtime.settings.grace)
            sd_notify("STOPPING=1")
            work_stop.set()  # no new work: the watcher stops taking agent writes
            await _final_flush(runtime)
            http_stop.set()  # /readyz and /metrics answered through the flush; now stop
            if serving is not None:
                await serving
            raise _Shutdown
    except* _Shutdown:
        pass
    finally:
        await runtime.node.close()
        await runtime.transport.close()
        runtime.store.close()
        if runtime.state_lock is not None:
            runtime.state_lock.close()
        log.info("stopped")


def _bind_http(runtime: Runtime) -> HttpServer | None:
    address = runtime.settings.http_address
    if address is None:
        return None
    from swarm.http import HttpServer  # imported late: only the daemon needs it

    http = HttpServer(runtime)
    http.bind(*address)  # OSError (address taken): a one-line error, exit 2
    log.info("http on %s:%d", address[0], http.port)
    return http


async def _final_flush(runtime: Runtime) -> None:
    try:
        left = await asyncio.wait_for(runtime.replicator.flush(), runtime.settings.grace)
    except TimeoutError:
        left = runtime.store.outbox_depth()
    except Exception as exc:  # Redis down at shutdown: the outbox stays for the next start
        log.warning("outbox not flushed: %s", exc)
        left = runtime.store.outbox_depth()
    if left:
        log.warning("%d updates stay in the outbox; they are sent on the next start", left)


class _Shutdown(Exception):
    """Raised inside the task group to cancel every loop at once, after the final flush."""


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


async def run(settings: DaemonSettings) -> int:
    runtime = open_runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting now (everything stored is committed)")
            runtime.store.commit()  # the turn in flight (group commit)
            os._exit(128 + signum)
        log.info("%s received", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await serve(runtime, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0

"""`swarm status`: does every instance of the agent hold the same memory, and if not, who lags.

Status reads only Redis (heartbeats, snapshots, log), never a local daemon. The rules, also
documented in docs/status-schema.json:

- A node is **online** while its last heartbeat, stamped with the Redis server's clock, is younger
  than the node's own offline timeout; otherwise it is **offline**: shown, never blocking.
- The **target** of a file is the union of the state vectors of the online nodes and of what Redis
  holds for it (snapshot + log tail). Convergence compares state vectors only.
- A node's **lag** is the number of operations (Yjs clock units) the targets hold that its state
  vectors lack, summed over files; a file it does not hold at all counts in full.
- A node's **disk differs** for a file when it reports that its disk does not hold the file's
  document yet (a render pending or failed), or when its document's content hash differs from
  the one most nodes holding the same operations report. Paths a node refuses by its own policy
  (private, ignored) are not counted against it.
- A node is **converged** when its lag is 0, no file of it waits on missing operations
  (`pending`) and its disk differs for no file: the same bytes on every disk. For an offline node
  this is judged from its last heartbeat.
- The swarm is **converged** when at least one node is online and every online node is converged.
  No online node means nothing can be vouched for: not converged.
- A node's **state** is the first that applies: `offline` (heartbeat expired); `error` (it
  reports a problem: a render that fails, Redis refusing it, a swarm key it lacks, deletions held;
  or it lags and reports a last error); `behind` (it lags, or a render has been pending for
  `STUCK_S` seconds); `syncing` (a render pending for less; or it holds everything but is still
  catching up or has local updates not yet in Redis); `up to date`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import pycrdt
from rich.console import Console
from rich.live import Live

from swarm.bridge.pathrules import path_problem
from swarm.bridge.reader import DEFAULT_MAX_BYTES
from swarm.config import SwarmSettings
from swarm.heartbeat import Heartbeat
from swarm.memory import UpdateError, vector
from swarm.memory.vector import StateVector
from swarm.status_disks import DiskReport, odd_content, protected_refusals, within_limit
from swarm.status_files import parse_not_synced
from swarm.status_show import render
from swarm.status_view import (
    FileFacts,
    FileView,
    NodeState,
    NodeView,
    RedisHeld,
    SwarmView,
)
from swarm.transport import codec
from swarm.transport.base import NodeRecord, TransportError, parse_stream_id
from swarm.wire import Kind

# Redis unreachable must be reported within ~3 s: the transport's own timeouts are 2 s, this
# bounds the first read whatever they become.
CONNECT_TIMEOUT_S = 3.0
POLL_INTERVAL_S = 0.25  # --wait
WATCH_INTERVAL_S = 1.0  # --watch
LOG_READ_LIMIT = 1_000_000  # entries of the log tail read to learn what Redis holds
STUCK_S = 10.0  # a render pending this long is not "syncing" any more: the node is behind


class StatusError(Exception):
    """Status cannot be computed (Redis unreachable...); the message is one line."""


# -- computing the view (pure) ---------------------------------------------------------------


def parse_files(beat: Heartbeat) -> dict[str, FileFacts]:
    """The per-file facts of a heartbeat, decoded; a malformed entry is left out, not fatal."""
    return {
        path: FileFacts(
            sv=fact.state_vector(),
            size=fact.size,
            exists=fact.exists,
            pending=fact.pending,
            hash=fact.hash,
            changed=fact.changed_at,
        )
        for path, fact in beat.file_facts().items()
    }


def _state(
    online: bool, behind: bool, differs: dict[str, str], stuck: bool, beat: Heartbeat,
    last_error: str | None,
) -> NodeState:
    if not online:
        return NodeState.OFFLINE
    if beat.held or beat.problems:  # an operator must act
        return NodeState.ERROR
    if any(reason.startswith("render failed") for reason in differs.values()):
        return NodeState.ERROR
    if behind:
        return NodeState.ERROR if last_error else NodeState.BEHIND
    if stuck or any(not reason.startswith("render pending") for reason in differs.values()):
        return NodeState.BEHIND
    if differs or not beat.ready or beat.outbox > 0:
        return NodeState.SYNCING
    return NodeState.UP_TO_DATE


def _node_view(
    record: NodeRecord,
    beat: Heartbeat,
    files: dict[str, FileFacts],
    behind: dict[str, int],
    online: bool,
    now_ms: int,
    other_content: set[str],
) -> NodeView:
    last_error = beat.last_error
    disk = DiskReport.parse(beat)
    age = max(0.0, (now_ms - record.seen_ms) / 1000)
    differs = {path: f"render failed: {reason}" for path, reason in disk.failed.items()}
    for path, seconds in disk.pending.items():
        differs.setdefault(path, f"render pending for {seconds + age:.1f} s")
    for path in other_content:
        differs.setdefault(path, "content differs from the other nodes holding the same state")
    stuck = any(seconds + age >= STUCK_S for seconds in disk.pending.values())
    reported = beat.problems
    if reported:
        last_error = next(iter(reported.values()))
    elif last_error is None and disk.failed:
        path, reason = next(iter(disk.failed.items()))
        last_error = f"{path}: {reason}"
    converged = not behind and not differs
    return NodeView(
        node=record.node,
        role=beat.role,
        host=beat.host,
        pid=beat.pid or None,
        online=online,
        state=_state(online, bool(behind), differs, stuck, beat, last_error),
        converged=converged,
        ready=beat.ready,
        lag=sum(behind.values()),
        last_seen=age,
        last_seen_at=record.seen_ms / 1000,
        outbox=beat.outbox,
        last_error=last_error,
        files=len(files),
        behind=behind,
        skipped=beat.skipped,
        disk_differs=dict(sorted(differs.items())),
        refused=tuple(sorted(beat.refused)),
        not_synced=parse_not_synced(beat.not_synced),
        protected_refused=protected_refusals(beat.protected_refused),
    )


def _behind(
    files: dict[str, FileFacts], targets: dict[str, StateVector], refused: Iterable[str] = ()
) -> dict[str, int]:
    """path -> operations missing, for every file not held completely (pending counts); paths
    the node refuses by its policy are not missing there."""
    skip = set(refused)
    behind: dict[str, int] = {}
    for path, target in targets.items():
        if path in skip:
            continue
        fact = files.get(path)
        lag = vector.missing(fact.sv if fact else {}, target)
        if lag or (fact is not None and fact.pending):
            behind[path] = lag
    return behind


def build_view(
    swarm: str,
    now_ms: int,
    records: Iterable[NodeRecord],
    redis: RedisHeld,
    unreadable: dict[str, tuple[str, int]] | None = None,
) -> SwarmView:
    """The swarm's convergence from heartbeats and what Redis holds (rules: module docstring).
    `unreadable`: live nodes (node -> (rejection reason, seen ms)) whose heartbeat is sealed
    with another swarm key: shown in error, and nothing can be vouched for them."""
    records = list(records)
    beats = {record.node: Heartbeat.read(record.info) for record in records}
    facts = {node: parse_files(beat) for node, beat in beats.items()}
    online = sorted(record.node for record in records if record.online(now_ms))
    targets: dict[str, StateVector] = {path: dict(sv) for path, sv in redis.vectors.items()}
    for node in online:
        for path, fact in facts[node].items():
            targets[path] = vector.union([targets.get(path, {}), fact.sv])

    odd, agreed = odd_content(facts, online, targets)
    nodes = tuple(
        _node_view(
            record,
            beats[record.node],
            facts[record.node],
            _behind(facts[record.node], targets, beats[record.node].refused),
            record.node in online,
            now_ms,
            odd.get(record.node, set()),
        )
        for record in records
    )
    files = []
    for path in sorted(targets):
        target = targets[path]
        lagging = tuple(node.node for node in nodes if node.online and path in node.behind)
        differing = tuple(node.node for node in nodes if node.online and path in node.disk_differs)
        holders = [facts[node][path] for node in online if path in facts[node]]
        complete = [fact for fact in holders if vector.covers(fact.sv, target)]
        shown = complete[0] if complete else (holders[0] if holders else None)
        changes = [
            (facts[node][path].changed or 0.0, node) for node in facts if path in facts[node]
        ]
        changed_at, changed_by = max(changes, default=(0.0, None))
        files.append(
            FileView(
                path=path,
                converged=bool(online) and not lagging and not differing,
                size=shown.size if shown else None,
                exists=shown.exists if shown else True,
                lagging=lagging,
                digest=vector.digest(target),
                hash=agreed.get(path),
                disk_differs=differing,
                changed_at=changed_at or None,
                changed_by=changed_by if changed_at else None,
            )
        )
    sealed = tuple(
        _unreadable_node(node, reason, seen_ms, now_ms)
        for node, (reason, seen_ms) in sorted((unreadable or {}).items())
        if node not in facts
    )
    nodes = tuple(sorted((*nodes, *sealed), key=lambda n: n.node))
    converged = bool(online) and all(node.converged for node in nodes if node.online)
    return SwarmView(swarm, now_ms / 1000, converged, nodes, tuple(files), redis)


def _unreadable_node(node: str, reason: str, seen_ms: int, now_ms: int) -> NodeView:
    why = codec.key_trouble({node: reason}).replace("this node", "this command")
    return NodeView(
        node=node, role="", host="", pid=None, online=True, state=NodeState.ERROR,
        converged=False, ready=False, lag=0, last_seen=max(0.0, (now_ms - seen_ms) / 1000),
        last_seen_at=seen_ms / 1000, outbox=0,
        last_error=why,
        files=0, behind={}, skipped={},
    )  # fmt: skip


def redis_vectors(
    snapshots: dict[str, tuple[str, bytes]],
    log: Iterable[tuple[str, str, Kind, bytes]],
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> RedisHeld:
    """Per file, the state vector of its snapshot plus the log entries it does not cover.

    `log` holds (stream id, path, kind, payload) in log order. Documents are rebuilt the way
    nodes rebuild them (MemoryDoc's causal buffer), without any genesis fix-up of their own.
    What no node takes is left out, by the rules of the nodes' edge (swarm/edge.py): a path no
    file system takes, updates that hold no operation at all (garbage someone published), and
    an update that makes the file grow past `max_bytes`.
    """
    updates: dict[str, list[bytes]] = {path: [state] for path, (_, state) in snapshots.items()}
    covered = {path: parse_stream_id(cid) for path, (cid, _) in snapshots.items()}
    entries = 0
    for stream_id, path, kind, payload in log:
        entries += 1
        if kind not in (Kind.UPDATE, Kind.STATE) or path_problem(path) is not None:
            continue
        if path in covered and parse_stream_id(stream_id) <= covered[path]:
            continue
        updates.setdefault(path, []).append(payload)
    vectors: dict[str, StateVector] = {}
    unreadable: list[str] = []
    for path, path_updates in updates.items():
        valid = [update for update in path_updates if _decodes(update)]
        try:
            held = within_limit(path, valid, max_bytes).state_vector_dict()
        except UpdateError:
            unreadable.append(path)
            continue
        if held:
            vectors[path] = held
    return RedisHeld(vectors, len(snapshots), entries, tuple(sorted(unreadable)))


def _decodes(update: bytes) -> bool:
    try:
        pycrdt.get_state(update)
    except Exception:
        return False
    return True


# -- reading Redis ---------------------------------------------------------------------------


async def fetch_view(settings: SwarmSettings) -> SwarmView:
    """One look at the swarm, with the daemon's Redis credentials, TLS and swarm key;
    StatusError when Redis cannot be read or the settings cannot be used."""
    from swarm.runtime import DaemonError, transport_for  # the daemon's own recipe

    try:
        transport = transport_for(settings, "status")
    except (DaemonError, TransportError, ValueError) as exc:
        raise StatusError(str(exc)) from None
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                now_ms, records = await transport.node_records_with_files()
        except TimeoutError:
            raise StatusError(f"Redis did not answer within {CONNECT_TIMEOUT_S:.0f} s") from None
        snapshots = await transport.snapshots()
        log = [
            (m.stream_id or "0-0", m.envelope.path, m.envelope.kind, m.envelope.payload)
            for m in await transport.read_log("0-0", count=LOG_READ_LIMIT)
        ]
    except TransportError as exc:
        raise StatusError(f"cannot read swarm {settings.swarm!r} from Redis: {exc}") from None
    finally:
        await transport.close()
    rejected = transport.rejected_by_reason
    if not records and (rejected.get(codec.NO_KEY) or rejected.get(codec.WRONG_KEY)):
        raise StatusError(
            f"swarm {settings.swarm!r} is sealed with a key this command does not hold "
            "(set SWARM_KEY_FILE or SWARM_KEY as for the daemon)"
        )
    limit = getattr(settings, "max_file_bytes", DEFAULT_MAX_BYTES)  # the daemons' setting
    held = redis_vectors(snapshots, log, limit)
    held = replace(held, rejected=rejected)
    return build_view(settings.swarm, now_ms, records, held, transport.unreadable_nodes)


# -- the command -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusOptions:
    settings: SwarmSettings
    as_json: bool = False
    with_files: bool = False
    wait: float | None = None  # seconds to wait for convergence
    watch: bool = False


def exit_code(view: SwarmView) -> int:
    return 0 if view.converged else 1


async def run(options: StatusOptions, console: Console) -> int:
    """Show the swarm once, until converged (`wait`), or continuously (`watch`); the exit code:
    0 converged, 1 not converged (by the deadline), StatusError for anything else."""
    deadline = None if options.wait is None else time.monotonic() + options.wait
    if options.watch:
        return await _watch(options, console, deadline)
    view = await fetch_view(options.settings)
    while not view.converged and deadline is not None and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
        view = await fetch_view(options.settings)
    _show(view, options, console)
    return exit_code(view)


def _show(view: SwarmView, options: StatusOptions, console: Console) -> None:
    if options.as_json:  # plain write: rich would wrap long lines at the console width
        print(json.dumps(view.to_json(), sort_keys=True), file=console.file, flush=True)
    else:
        console.print(render(view, with_files=options.with_files))


async def _watch(options: StatusOptions, console: Console, deadline: float | None) -> int:
    view = await fetch_view(options.settings)
    since = time.time()
    with Live(
        render(view, with_files=options.with_files, since=since), console=console, transient=False
    ) as live:
        while not (deadline is not None and (view.converged or time.monotonic() >= deadline)):
            await asyncio.sleep(WATCH_INTERVAL_S)
            latest = await fetch_view(options.settings)
            if latest.converged != view.converged:
                since = time.time()
            view = latest
            live.update(render(view, with_files=options.with_files, since=since))
    return exit_code(view)

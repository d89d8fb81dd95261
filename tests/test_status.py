"""`swarm status`: convergence from state vectors, its JSON schema, exit codes, and real swarms."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from daemon_harness import DaemonGroup, daemon_env, run_cli, swarm_command, wait_until
from pydantic import SecretStr

from swarm.config import SwarmSettings
from swarm.devtools.devredis import RedisServer, free_port
from swarm.memory import MemoryDoc, vector
from swarm.runtime import transport_for
from swarm.status import (
    NodeState,
    RedisHeld,
    StatusError,
    build_view,
    fetch_view,
    redis_vectors,
)
from swarm.transport.base import NodeRecord
from swarm.transport.keyring import format_key, generate_key
from swarm.wire import Kind

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "status-schema.json").read_text())
NOW_MS = 1_800_000_000_000
TTL_MS = 5_000


def validate(report: dict[str, Any]) -> None:
    jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)


def heartbeat(docs: dict[str, MemoryDoc], **info: Any) -> dict[str, Any]:
    files = {
        path: {
            "sv": base64.b64encode(doc.state_vector()).decode(),
            "digest": vector.digest(doc.state_vector_dict()),
            "size": len(doc.content.encode()),
            "exists": doc.exists,
            "pending": False,
        }
        for path, doc in docs.items()
    }
    base: dict[str, Any] = {"role": "", "host": "h", "pid": 1, "ready": True, "outbox": 0}
    return {**base, "last_error": None, "skipped": {}, "files": files, **info}


def record(node: str, info: dict[str, Any], age_ms: int = 100) -> NodeRecord:
    return NodeRecord(node, NOW_MS - age_ms, TTL_MS, info)


def copy_of(doc: MemoryDoc) -> MemoryDoc:
    return MemoryDoc.restore(doc.path, [doc.encode_state()])


@pytest.fixture
def memory() -> MemoryDoc:
    doc = MemoryDoc("MEMORY.md")
    doc.write("# memory\n- first\n")
    return doc


# -- the rules, on heartbeats ------------------------------------------------------------------


def test_nodes_holding_the_same_state_are_converged(memory: MemoryDoc) -> None:
    records = [record(n, heartbeat({"MEMORY.md": copy_of(memory)})) for n in ("a", "b")]
    view = build_view("team", NOW_MS, records, RedisHeld())
    assert view.converged
    assert [(n.node, n.state, n.lag, n.converged) for n in view.nodes] == [
        ("a", NodeState.UP_TO_DATE, 0, True),
        ("b", NodeState.UP_TO_DATE, 0, True),
    ]
    assert [(f.path, f.converged, f.lagging) for f in view.files] == [("MEMORY.md", True, ())]
    validate(view.to_json())


def test_a_node_missing_operations_is_behind_by_exactly_those(memory: MemoryDoc) -> None:
    stale = copy_of(memory)
    before = memory.state_vector_dict()
    memory.write("# memory\n- first\n- second\n")
    added = vector.missing(before, memory.state_vector_dict())
    daily = MemoryDoc("memory/2026-11-25.md")
    daily.write("- today\n")
    a = record("a", heartbeat({"MEMORY.md": memory, daily.path: daily}))
    b = record("b", heartbeat({"MEMORY.md": stale}))
    view = build_view("team", NOW_MS, [a, b], RedisHeld())
    node_b = view.nodes[1]
    assert not view.converged
    assert node_b.state is NodeState.BEHIND and not node_b.converged
    # a file b does not hold at all counts in full
    assert node_b.behind == {
        "MEMORY.md": added,
        daily.path: sum(daily.state_vector_dict().values()),
    }
    assert node_b.lag == sum(node_b.behind.values()) > 0
    assert view.nodes[0].converged
    assert {f.path: f.lagging for f in view.files} == {"MEMORY.md": ("b",), daily.path: ("b",)}
    assert view.files_differing == 2
    validate(view.to_json())


def test_an_offline_node_is_shown_but_does_not_block(memory: MemoryDoc) -> None:
    stale = copy_of(memory)
    memory.write("# memory\n- first\n- second\n")
    gone = record("gone", heartbeat({"MEMORY.md": stale}), age_ms=TTL_MS + 1)
    view = build_view(
        "team", NOW_MS, [record("a", heartbeat({"MEMORY.md": memory})), gone], RedisHeld()
    )
    assert view.converged
    offline = view.nodes[1]
    assert (offline.online, offline.state, offline.converged) == (False, NodeState.OFFLINE, False)
    assert offline.lag > 0 and offline.last_seen == pytest.approx((TTL_MS + 1) / 1000)
    assert view.files[0].lagging == ()


def test_no_online_node_is_not_converged(memory: MemoryDoc) -> None:
    assert not build_view("team", NOW_MS, [], RedisHeld()).converged
    gone = record("gone", heartbeat({"MEMORY.md": memory}), age_ms=TTL_MS + 1)
    view = build_view("team", NOW_MS, [gone], RedisHeld())
    assert not view.converged and view.online == 0
    validate(view.to_json())


def test_operations_only_redis_holds_put_every_node_behind(memory: MemoryDoc) -> None:
    stale = copy_of(memory)
    memory.write("# memory\n- first\n- published, then its writer vanished\n")
    held = RedisHeld({"MEMORY.md": memory.state_vector_dict()}, log_entries=2)
    view = build_view("team", NOW_MS, [record("a", heartbeat({"MEMORY.md": stale}))], held)
    assert not view.converged
    assert view.nodes[0].state is NodeState.BEHIND and view.nodes[0].lag > 0


def test_states_error_syncing_and_pending(memory: MemoryDoc) -> None:
    stale = copy_of(memory)
    memory.write("# memory\n- first\n- second\n")
    pending = heartbeat({"MEMORY.md": copy_of(memory)})
    pending["files"]["MEMORY.md"]["pending"] = True
    records = [
        record("a", heartbeat({"MEMORY.md": memory}, outbox=3)),
        record("b", heartbeat({"MEMORY.md": stale}, last_error="render failed: disk full")),
        record("c", heartbeat({"MEMORY.md": copy_of(memory)}, ready=False)),
        record("d", pending),
    ]
    view = build_view("team", NOW_MS, records, RedisHeld())
    states = {n.node: (n.state, n.converged) for n in view.nodes}
    assert states == {
        "a": (NodeState.SYNCING, True),  # holds everything, its updates are not in Redis yet
        "b": (NodeState.ERROR, False),
        "c": (NodeState.SYNCING, True),  # still catching up
        "d": (NodeState.BEHIND, False),  # waits on operations that never arrived
    }
    assert not view.converged


def test_malformed_heartbeat_entries_are_ignored(memory: MemoryDoc) -> None:
    info = heartbeat({"MEMORY.md": memory}, pid="x", outbox=None, skipped=[1])
    info["files"]["bad.md"] = {"sv": "not base64!"}
    info["files"]["worse.md"] = "nope"
    view = build_view("team", NOW_MS, [record("a", info)], RedisHeld())
    assert view.converged and view.nodes[0].files == 1 and view.nodes[0].pid is None
    validate(view.to_json())


def test_redis_vectors_replay_snapshot_and_uncovered_log_tail() -> None:
    doc = MemoryDoc("MEMORY.md")
    first = doc.write("one\n")
    snapshot = doc.encode_state()
    second = doc.write("one\ntwo\n")
    assert first is not None and second is not None
    log = [
        ("5-0", "MEMORY.md", Kind.UPDATE, first),  # covered by the snapshot
        ("6-0", "MEMORY.md", Kind.SYNC_REQUEST, vector.encode({})),
        ("7-0", "MEMORY.md", Kind.UPDATE, b"\xff garbage"),
        ("8-0", "MEMORY.md", Kind.UPDATE, second),
    ]
    held = redis_vectors({"MEMORY.md": ("5-0", snapshot)}, log)
    assert held.vectors == {"MEMORY.md": doc.state_vector_dict()}
    assert (held.snapshots, held.log_entries, held.unreadable) == (1, 4, ())


# -- the command -------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`swarm status ARGS` as a user runs it (a subprocess, exit code and streams)."""
    return run_cli("status", *args, env=daemon_env(env), timeout=30)


def assert_one_line_error(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("swarm: "), done.stderr


def test_unreachable_redis_fails_fast_with_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(StatusError, match="cannot read swarm 'team' from Redis"):
        asyncio.run(fetch_view(SwarmSettings(swarm="team", redis_url=url)))
    assert time.monotonic() - started < 3.0
    assert_one_line_error(cli("--swarm", "team", "--redis-url", url))


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_redis_that_does_not_answer_fails_within_three_seconds(silent_server: int) -> None:
    url = f"redis://127.0.0.1:{silent_server}/0"
    started = time.monotonic()
    with pytest.raises(StatusError, match=r"cannot read swarm|did not answer"):
        asyncio.run(fetch_view(SwarmSettings(swarm="team", redis_url=url)))
    assert time.monotonic() - started < 3.2


@pytest.mark.parametrize(
    "args",
    [
        ["--swarm", "team", "--wait", "-1"],
        ["--swarm", "bad name"],
        ["--swarm", "team", "--watch", "--json"],
        [],  # no swarm at all
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    done = cli(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip()


def test_settings_come_from_the_environment_and_the_daemon_config(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "swarm.toml"
    config.write_text(f'[swarm]\ndir = "{tmp_path}"\nswarm = "team"\ndebounce_ms = 10\n')
    done = cli("--json", env={"SWARM_CONFIG": str(config), "SWARM_REDIS_URL": redis_server.url})
    assert done.returncode == 1, done.stderr  # an empty swarm is not converged
    report = json.loads(done.stdout)
    validate(report)
    assert (report["swarm"], report["converged"], report["nodes"]) == ("team", False, [])


async def test_a_sealed_swarm_needs_its_key(redis_server: RedisServer, memory: MemoryDoc) -> None:
    keyed = SwarmSettings(
        swarm="team", redis_url=redis_server.url, key=SecretStr(format_key(generate_key()))
    )
    node = transport_for(keyed, "a")
    try:
        await node.heartbeat(heartbeat({"MEMORY.md": memory}), ttl_s=30)
    finally:
        await node.close()
    with pytest.raises(StatusError, match="sealed with a key this command does not hold"):
        await fetch_view(SwarmSettings(swarm="team", redis_url=redis_server.url))
    view = await fetch_view(keyed)
    assert [(n.node, n.online, n.files) for n in view.nodes] == [("a", True, 1)]
    assert view.converged


# -- real daemons --------------------------------------------------------------------------------

STAY_ONLINE = {"SWARM_HEARTBEAT_INTERVAL": "0.2", "SWARM_OFFLINE_AFTER": "60"}
LEAVE_FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.2", "SWARM_OFFLINE_AFTER": "1.5"}


STATUS_ARGS = ("status", "--swarm", "team", "--json")


def status(redis_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli(*STATUS_ARGS, "--redis-url", redis_url, *args, timeout=30)
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    validate(report)
    return done.returncode, report


def by_node(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["node"]: node for node in report["nodes"]}


def look(redis_url: str) -> dict[str, Any]:
    """The JSON report, computed in the test process: cheap enough to poll."""
    view = asyncio.run(fetch_view(SwarmSettings(swarm="team", redis_url=redis_url)))
    return view.to_json()


def test_status_of_a_real_swarm(redis_server: RedisServer, tmp_path: Path) -> None:
    url = redis_server.url
    seen: list[dict[str, Any]] = [{}]

    def until(condition: Callable[[dict[str, Any]], bool], what: str) -> None:
        def check() -> bool:
            seen.append(look(url))
            return condition(seen[-1])

        wait_until(check, what, 20, lambda: json.dumps(seen[-1], indent=1))

    with DaemonGroup(tmp_path, url) as group:
        a = group.add("a", env=STAY_ONLINE).start()
        b = group.add("b", env=STAY_ONLINE).start()
        c = group.add("c", env=LEAVE_FAST).start()
        for daemon in (a, b, c):
            daemon.wait_ready()
        (a.dir / "MEMORY.md").write_text("# memory\n- first\n")
        until(lambda r: all(n["files"] == 1 for n in r["nodes"]), "every node has MEMORY.md")

        # converged: exit 0, every node converged
        code, report = status(url, "--wait", "10")
        assert code == 0 and report["converged"] and len(report["nodes"]) == 3
        assert all(n["converged"] and n["state"] == "up to date" for n in report["nodes"])
        files = [(f["path"], f["converged"], f["lagging"]) for f in report["files"]]
        assert files == [("MEMORY.md", True, [])]
        shown = run_cli(
            "status", "--swarm", "team", "--redis-url", url, "--files", "--watch", "--wait", "10"
        )
        assert shown.returncode == 0, shown.stderr
        assert "converged" in shown.stdout and "MEMORY.md" in shown.stdout

        # b cannot receive while a edits: not converged, b lags, exit 1
        b.signal(signal.SIGSTOP)
        try:
            (a.dir / "MEMORY.md").write_text("# memory\n- first\n- second, while b sleeps\n")
            until(lambda r: by_node(r)["b"]["lag"] > 0, "b lags")
            code, report = status(url)
            assert code == 1 and not report["converged"]
            node_b = by_node(report)["b"]
            assert node_b["online"] and node_b["state"] == "behind" and node_b["lag"] > 0
            assert by_node(report)["a"]["converged"] and by_node(report)["c"]["converged"]
            assert report["files"][0]["lagging"] == ["b"]
            waiting = subprocess.Popen(
                swarm_command(*STATUS_ARGS, "--redis-url", url, "--wait", "20"),
                env=daemon_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            b.signal(signal.SIGCONT)
        out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, err
        report = json.loads(out)
        assert report["converged"] and by_node(report)["b"]["lag"] == 0

        # c stops: shown offline once its heartbeat expires; the rest is still converged
        assert c.stop() == 0
        until(lambda r: not by_node(r)["c"]["online"], "c offline")
        code, report = status(url)
        assert code == 0 and report["converged"] and report["online"] == 2
        assert by_node(report)["c"]["state"] == "offline"
        assert all(by_node(report)[n]["converged"] for n in ("a", "b"))

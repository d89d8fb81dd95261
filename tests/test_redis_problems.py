"""What keeps a node from syncing reaches its user: one log line per cause (not per failed
message), the reason in `/readyz`, `error` with `last_error` in `swarm status`, and a metric.
Every cause is produced for real: swarm keys that differ, a Redis out of memory under
`noeviction`, a read-only replica, an ACL that lacks a command, a Redis that goes away, a
password it refuses, a host name that does not resolve."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    FAST_SYNC_ENV,
    DaemonGroup,
    DaemonProcess,
    InProcessDaemon,
    daemon_settings,
    run_cli,
    wait_until,
    wait_until_async,
    write_file,
)
from test_http import get, metrics
from test_security_redis import documented_acl

from swarm.devtools.devredis import RedisServer, free_port
from swarm.runtime import not_ready_reason
from swarm.transport.keyring import format_key, generate_key

pytestmark = pytest.mark.slow

def add(group: DaemonGroup, node: str, **env: str) -> tuple[DaemonProcess, int]:
    port = free_port()
    daemon = group.add(
        node, env={**FAST_SYNC_ENV, **env}, extra_args=["--http", f"127.0.0.1:{port}"]
    )
    return daemon, port


def start(*daemons: DaemonProcess) -> None:
    for daemon in daemons:
        daemon.start()
    for daemon in daemons:
        daemon.wait_ready()


def problem_metric(port: int, cause: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    _, text = get(port, "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "swarm_problem" and sample.labels.get("cause") == cause:
                return sample.value
    raise AssertionError(f"no swarm_problem metric for {cause}")


def readyz(port: int) -> tuple[int, str]:
    return get(port, "/readyz")


def status_json(group: DaemonGroup, **env: str) -> dict[str, Any]:
    from daemon_harness import daemon_env

    done = run_cli(
        "status", "--swarm", group.swarm, "--redis-url", group.redis_url, "--json",
        env=daemon_env(env),
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def node_of(report: dict[str, Any], node: str) -> dict[str, Any]:
    return next(n for n in report["nodes"] if n["node"] == node)


def lines_with(daemon: DaemonProcess, text: str) -> list[str]:
    return [line for line in daemon.current_log().splitlines() if text in line]


def test_a_node_with_another_swarm_key_or_none_is_an_error_everywhere(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key, other = format_key(generate_key()), format_key(generate_key())
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, a_port = add(group, "a", SWARM_KEY=key)
        b, b_port = add(group, "b", SWARM_KEY=other)
        c, c_port = add(group, "c")  # no key at all, in a keyed swarm
        start(a, b, c)
        # a and b: each other's heartbeat sealed with another key, c's not sealed at all;
        # c: a's and b's sealed while it has no key.
        expected = {"a": ("does not hold", "not sealed"), "b": ("does not hold", "not sealed")}
        expected["c"] = ("has none",)
        for daemon, port in ((a, a_port), (b, b_port), (c, c_port)):
            wait_until(
                lambda p=port, words=expected[daemon.node]: readyz(p)[0] == 503
                and all(word in readyz(p)[1] for word in ("swarm key mismatch", *words)),
                f"{daemon.node} not ready: swarm key mismatch ({expected[daemon.node]})",
                explain=group.logs,
            )
            assert problem_metric(port, "swarm-key") == 1
        report = status_json(group, SWARM_KEY=key)
        assert not report["converged"]
        for node in ("b", "c"):  # unreadable with a's key: in error, never "converged"
            entry = node_of(report, node)
            assert entry["state"] == "error" and "swarm key" in entry["last_error"]
        assert node_of(report, "a")["state"] == "error"  # a cannot read b and c either
        for daemon in (a, b, c):
            wait_until(lambda d=daemon: len(lines_with(d, "swarm key mismatch")) >= 1, "logged")
        rejected_before = metrics(a_port)["swarm_rejected_messages_total"]
        wait_until(  # many heartbeats later, still one line per node
            lambda: metrics(a_port)["swarm_rejected_messages_total"] >= rejected_before + 10,
            "more heartbeats rejected",
        )
        for daemon in (a, b, c):
            assert len(lines_with(daemon, "swarm key mismatch")) == 1, daemon.current_log()


def wait_failing(daemon: DaemonProcess, port: int, cause: str, words: str) -> None:
    wait_until(
        lambda: readyz(port)[0] == 503 and words in readyz(port)[1],
        f"{daemon.node} not ready: {words}",
        explain=daemon.current_log,
    )
    assert problem_metric(port, cause) == 1


def write_refused(
    group: DaemonGroup, a: DaemonProcess, port: int, cause: str, words: str, *, status: bool
) -> None:
    """a's agent writes while Redis refuses: reported (in status too, if its heartbeat still
    gets through), and logged once however often the outbox retries."""
    errors = metrics(port)["swarm_publish_errors_total"]
    write_file(a.dir / "MEMORY.md", f"- written while Redis refuses: {cause}\n", atomic=True)
    wait_failing(a, port, cause, words)
    wait_until(lambda: metrics(port)["swarm_publish_errors_total"] >= errors + 3, "retries")
    assert len(lines_with(a, words)) == 1, a.current_log()
    if status:
        entry = node_of(status_json(group), a.node)
        assert entry["state"] == "error" and words in entry["last_error"]


def wait_healed(a: DaemonProcess, port: int, b: DaemonProcess, cause: str) -> None:
    text = f"- written while Redis refuses: {cause}\n"
    wait_until(lambda: _read(b.dir / "MEMORY.md") == text, "edit arrives", explain=b.current_log)
    wait_until(lambda: readyz(port)[0] == 200, "a ready again", explain=a.current_log)
    assert problem_metric(port, cause) == 0


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def test_redis_refusing_writes_is_reported_once_per_cause_and_heals(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    admin = redis_server.client()
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, a_port = add(group, "a")
        b, _ = add(group, "b")
        start(a, b)

        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        write_refused(group, a, a_port, "redis-oom", "out of memory", status=True)
        admin.config_set("maxmemory", 0)
        wait_healed(a, a_port, b, "redis-oom")
        assert lines_with(a, "accepts publish again")

        # A replica of a master that is not there: read-only, its data kept. Heartbeats are
        # writes too, so status sees a node going offline rather than its reason.
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        write_refused(group, a, a_port, "redis-readonly", "read-only replica", status=False)
        admin.execute_command("REPLICAOF", "NO", "ONE")
        wait_healed(a, a_port, b, "redis-readonly")


def test_an_acl_without_a_command_it_needs_is_reported_and_heals(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    admin = redis_server.client()
    admin.execute_command(*documented_acl("team", "pw").split())
    admin.execute_command("ACL", "SETUSER", "swarm-team", "-xadd")  # the one it lacks
    creds = {"SWARM_REDIS_USERNAME": "swarm-team", "SWARM_REDIS_PASSWORD": "pw"}
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, a_port = add(group, "a", **creds)
        b, _ = add(group, "b", **creds)
        start(a, b)
        write_refused(group, a, a_port, "redis-noperm", "ACL of this user", status=True)
        admin.execute_command("ACL", "SETUSER", "swarm-team", "+xadd")
        wait_healed(a, a_port, b, "redis-noperm")


def test_redis_going_away_and_coming_back_is_logged_once_each(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, port = add(group, "a")
        start(a)
        redis_server.stop()
        write_file(a.dir / "MEMORY.md", "- kept in the outbox\n", atomic=True)
        wait_failing(a, port, "redis-connection", "unreachable")
        wait_until(lambda: metrics(port)["swarm_publish_errors_total"] >= 3, "retries")
        assert len(lines_with(a, "unreachable")) == 1, a.current_log()
        assert any("WARNING" in line for line in lines_with(a, "unreachable"))
        redis_server.start()
        wait_until(lambda: readyz(port)[0] == 200, "ready again", 20, a.current_log)
        assert len(lines_with(a, "answers again")) == 1, a.current_log()


def test_a_password_redis_refuses_is_reported_at_start(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.client().config_set("requirepass", "right")
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, port = add(group, "a", SWARM_REDIS_PASSWORD="wrong")
        a.start()
        wait_until(lambda: " ready: " in a.current_log() or not a.running, "a started")
        wait_failing(a, port, "redis-connection", "refused the credentials")
        assert any("ERROR" in line for line in lines_with(a, "refused the credentials"))
        assert len(lines_with(a, "refused the credentials")) == 1, a.current_log()


async def test_a_host_name_that_does_not_resolve_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Name resolution fails here at the resolver (no DNS query leaves the machine)."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "redis.swarm-test.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    caplog.set_level(logging.INFO)
    settings = daemon_settings(
        tmp_path / "m", tmp_path / "s", "a", "redis://redis.swarm-test.invalid:6379/0"
    )
    async with InProcessDaemon(settings) as a:
        runtime = a.runtime
        assert runtime is not None
        await wait_until_async(
            lambda: "cannot resolve" in (not_ready_reason(runtime) or ""), "reason in /readyz"
        )
    errors = [r for r in caplog.records if "cannot resolve" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR

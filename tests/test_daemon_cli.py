"""`swarm daemon` as users and their scripts run it: errors, signals, Redis coming and going."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from daemon_harness import (
    Agent,
    DaemonGroup,
    daemon_env,
    holds_all,
    read_tree,
    run_cli,
    wait_until,
)

from swarm.devtools.devredis import RedisServer

pytestmark = pytest.mark.slow


def error_lines(stderr: str) -> list[str]:
    """The lines that state an error (click may add usage lines around its own)."""
    return [line for line in stderr.splitlines() if line.startswith(("swarm:", "Error:"))]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def daemon_args(folder: Path, *extra: str, url: str = "redis://127.0.0.1:1/0") -> list[str]:
    return [
        "daemon", "--dir", str(folder), "--swarm", "team", "--node", "n1",
        "--redis-url", url, "--http", "0", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "env", "setting"),
    [
        (["--debounce-ms", "-5"], {}, "debounce_ms"),
        (["--swarm", "bad{name}"], {}, "swarm"),
        (["--redis-url", "http://127.0.0.1:1"], {}, "redis_url"),
        (["--log-level", "loud"], {}, "log_level"),
        ([], {"SWARM_HEARTBEAT_INTERVAL": "often"}, "heartbeat_interval"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_it(
    tmp_path: Path, extra: list[str], env: dict[str, str], setting: str
) -> None:
    result = run_cli(*daemon_args(tmp_path, *extra), env=daemon_env(env))
    assert result.returncode == 2
    assert_one_line_error(result, setting)
    assert not (tmp_path / ".swarm").exists(), "nothing is created for a refused start"


def test_missing_dir_exits_2_and_says_how_to_pass_it() -> None:
    result = run_cli("daemon", "--swarm", "team", "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert_one_line_error(result, "dir", "--dir", "SWARM_DIR")


def test_nonexistent_dir_and_a_file_as_dir_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli(*daemon_args(missing))
    assert result.returncode != 0
    assert_one_line_error(result, str(missing))
    assert not missing.exists()
    a_file = tmp_path / "MEMORY.md"
    a_file.write_text("# not a folder\n")
    result = run_cli(*daemon_args(a_file))
    assert result.returncode != 0
    assert_one_line_error(result, str(a_file))
    assert a_file.read_text() == "# not a folder\n"


def test_unreadable_dir_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        if os.geteuid() == 0:  # root reads anything: drop the capabilities that allow it
            no_override = "-dac_override,-dac_read_search"
            drop = ["setpriv", f"--inh-caps={no_override}", f"--bounding-set={no_override}"]
            result = subprocess.run(
                [*drop, *_python_m_swarm(), *daemon_args(folder)],
                env=daemon_env(),
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
            )
        else:
            result = run_cli(*daemon_args(folder))
    finally:
        folder.chmod(0o755)
    assert result.returncode != 0
    assert_one_line_error(result, str(folder))


def _python_m_swarm() -> list[str]:
    import sys

    return [sys.executable, "-m", "swarm"]


def test_garbled_state_db_is_a_one_line_error_and_is_left_unchanged(tmp_path: Path) -> None:
    folder, state = tmp_path / "mem", tmp_path / "state"
    folder.mkdir()
    state.mkdir()
    garbage = os.urandom(8192)
    (state / "state.db").write_bytes(garbage)
    result = run_cli(*daemon_args(folder, "--state-dir", str(state)))
    assert result.returncode != 0
    assert_one_line_error(result, "state.db")
    assert (state / "state.db").read_bytes() == garbage
    # nothing beside it either (no -wal/-shm, no new database); only the daemon's lock file
    assert sorted(p.name for p in state.iterdir()) == ["daemon.lock", "state.db"]


def test_redis_unreachable_at_start_keeps_running_and_syncs_once_redis_appears(
    tmp_path: Path,
) -> None:
    server = RedisServer()  # its port is chosen, nothing listens on it yet
    try:
        with DaemonGroup(tmp_path, server.url) as group:
            a = group.add("a").start().wait_ready()
            early = Agent(a.dir, "a", in_place=0.0)
            early.append("MEMORY.md", "- written while Redis was down")
            wait_until(
                lambda: _outbox_depth(a.state_dir) >= 1, "a ingested the edit into its outbox"
            )
            assert a.running
            server.start()
            b = group.add("b").start().wait_ready()
            wait_until(
                lambda: holds_all(b.dir, early.written),
                "the edit made while Redis was down reached b",
                explain=group.logs,
            )
            Agent(b.dir, "b", in_place=0.0).append("MEMORY.md", "- from b")
            wait_until(lambda: read_tree(a.dir) == read_tree(b.dir), "and b's edits reach a")
            assert "Traceback" not in a.log_text()
    finally:
        server.close()


def _outbox_depth(state_dir: Path) -> int:
    """Read-only look into a running daemon's store."""
    db = state_dir / "state.db"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:  # schema not created yet
            return 0


def test_sigterm_flushes_the_outbox_and_exits_0(tmp_path: Path, redis_server: RedisServer) -> None:
    with DaemonGroup(tmp_path, redis_server.url, swarm="team") as group:
        a, b = group.add("a", env={"SWARM_GRACE": "20"}).start(), group.add("b").start()
        a.wait_ready(), b.wait_ready()
        redis_server.pause()  # publishing stalls: the edit waits in a's outbox
        try:
            Agent(a.dir, "a", in_place=0.0).append("MEMORY.md", "- the last edit")
            wait_until(lambda: _outbox_depth(a.state_dir) >= 1, "the edit is in a's outbox")
        finally:
            redis_server.resume()
        a.signal(signal.SIGTERM)
        assert a.wait() == 0, a.current_log()
        assert _outbox_depth(a.state_dir) == 0, "the outbox was flushed before exiting"
        wait_until(
            lambda: "- the last edit" in read_tree(b.dir).get("MEMORY.md", ""),
            "the other node has the last edit",
            explain=group.logs,
        )


def test_second_sigint_during_shutdown_exits_at_once_without_losing_the_outbox(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a = group.add("a", env={"SWARM_GRACE": "60"}).start().wait_ready()
        redis_server.pause()  # the final flush hangs: shutdown would take the whole grace
        try:
            Agent(a.dir, "a", in_place=0.0).append("MEMORY.md", "- kept in the outbox")
            wait_until(lambda: _outbox_depth(a.state_dir) >= 1, "the edit is in a's outbox")
            a.signal(signal.SIGINT)
            wait_until(lambda: "stopping" in a.current_log(), "a is shutting down")
            second = time.monotonic()
            a.signal(signal.SIGINT)
            code = a.wait(timeout=5)
            assert time.monotonic() - second < 3.0
            assert code != 0, "an interrupted shutdown does not claim success"
        finally:
            redis_server.resume()
        assert _outbox_depth(a.state_dir) >= 1, "the unsent edit is still stored"
        a.start().wait_ready()
        b = group.add("b").start().wait_ready()
        wait_until(
            lambda: "- kept in the outbox" in read_tree(b.dir).get("MEMORY.md", ""),
            "the edit left on the next start",
            explain=group.logs,
        )


def test_a_second_daemon_on_the_same_state_folder_is_refused(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        first = group.add("a").start().wait_ready()
        second = run_cli(
            "daemon", "--dir", str(first.dir), "--swarm", "team", "--node", "a2",
            "--redis-url", redis_server.url, "--http", "0",
            "--state-dir", str(first.state_dir),
        )  # fmt: skip
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "already using the state folder" in lines[0], second.stderr
        assert first.running  # the first one is untouched

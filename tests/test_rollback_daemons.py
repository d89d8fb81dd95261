"""`swarm rollback` on real daemons and a real redis-server: a file goes back to an earlier content
on every node (also one that was offline), the rollback can be rolled back, one node's edits can be
undone keeping the others', and a moment before the held history is refused in one line."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemon_harness import DaemonGroup, DaemonProcess, read_tree, run_cli, wait_until, write_file

from swarm.devtools.devredis import RedisServer

pytestmark = pytest.mark.slow


def holds(daemon: DaemonProcess, text: str) -> bool:
    return read_tree(daemon.dir).get("MEMORY.md") == text


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def rollback(daemon: DaemonProcess, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    import subprocess

    from daemon_harness import REPO, daemon_env, swarm_command

    done = subprocess.run(
        swarm_command("rollback", "MEMORY.md", "--dir", str(daemon.dir), "--state-dir",
                      str(daemon.state_dir), *args),
        env=daemon_env(), cwd=REPO, capture_output=True, text=True, input=stdin or "",
        timeout=30, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_rollback_to_a_moment_reaches_every_node_and_can_be_undone(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        first = "# Notes\n- keep\n- old\n"
        write_file(a.dir / "MEMORY.md", first, atomic=True)
        wait_until(lambda: holds(a, first) and holds(b, first), "the first version everywhere")
        before = time.time()
        second = "# Notes\n- keep\n- new from b\n"
        write_file(b.dir / "MEMORY.md", second, atomic=True)
        wait_until(lambda: holds(a, second), "b's edit reaches a")
        after = time.time()

        # Without --yes it shows the change and asks; "n" changes nothing.
        code, out, _err = rollback(a, "--to", iso(before), stdin="n\n")
        assert code == 1 and "+- old" in out and "-- new from b" in out, out
        assert holds(a, second)

        b.stop()  # offline: it merges the rollback when back
        code, out, err = rollback(a, "--to", iso(before), "--yes")
        assert code == 0, err
        assert holds(a, first)  # the daemon answers once its file shows it
        b.start().wait_ready()
        wait_until(lambda: holds(b, first), "the rollback reaches b once back")

        code, _out, err = rollback(a, "--to", iso(after), "--yes")
        assert code == 0, err
        wait_until(lambda: holds(a, second) and holds(b, second), "the rollback rolled back")

        code, out, err = rollback(a, "--to", "2001-01-01T00:00:00Z", "--yes")
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "history of it starts at" in err and holds(a, second)


def test_undo_node_removes_one_nodes_edits_and_keeps_the_others(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        write_file(a.dir / "MEMORY.md", "# Notes\n- base\n", atomic=True)
        wait_until(lambda: holds(b, "# Notes\n- base\n"), "the base reaches b")
        since = time.time()
        write_file(b.dir / "MEMORY.md", "# Notes\n- base\n- junk from b\n", atomic=True)
        wait_until(lambda: holds(a, "# Notes\n- base\n- junk from b\n"), "b's line reaches a")
        write_file(a.dir / "MEMORY.md", "# Notes\n- base\n- junk from b\n- good a\n", atomic=True)
        wait_until(lambda: holds(b, "# Notes\n- base\n- junk from b\n- good a\n"), "a's line")

        code, _out, err = rollback(a, "--undo-node", "b", "--since", iso(since), "--yes")
        assert code == 0, err
        final = "# Notes\n- base\n- good a\n"
        wait_until(lambda: holds(a, final) and holds(b, final), "b's line gone everywhere")


def test_rollback_without_a_daemon_says_so(tmp_path: Path) -> None:
    done = run_cli("rollback", "MEMORY.md", "--dir", str(tmp_path), "--to", "-1m", "--yes")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no daemon is running" in done.stderr

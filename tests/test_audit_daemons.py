"""`swarm blame` and `swarm log` on real daemons and a real redis-server: every node names the same
author for each line, also after a restart and on a node that joined from snapshots, and a stale
whole-file write leaves the other node's line to its author."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from daemon_harness import DaemonGroup, DaemonProcess, read_tree, run_cli, wait_until, write_file

from swarm.devtools.devredis import RedisServer
from swarm.transport.redis_keys import SwarmKeys

pytestmark = pytest.mark.slow


def blame_of(daemon: DaemonProcess, path: str = "MEMORY.md") -> list[tuple[str, str, str]]:
    done = run_cli("blame", path, "--dir", str(daemon.dir), "--state-dir",
                   str(daemon.state_dir), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [(line["text"], line["node"], line["role"]) for line in json.loads(done.stdout)]


def holds(daemon: DaemonProcess, text: str) -> bool:
    return read_tree(daemon.dir).get("MEMORY.md") == text


def test_blame_and_log_name_each_lines_writer_on_every_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a = group.add("a", extra_args=("--role", "cloud")).start()
        b = group.add("b", extra_args=("--role", "laptop")).start()
        a.wait_ready(), b.wait_ready()
        write_file(a.dir / "MEMORY.md", "# Notes\n- from a\n", atomic=True)
        wait_until(lambda: holds(b, "# Notes\n- from a\n"), "a's file reaches b")
        write_file(b.dir / "MEMORY.md", "# Notes\n- from a\n- from b\n", atomic=True)
        final = "# Notes\n- from a\n- from b\n- later a\n"
        wait_until(lambda: holds(a, "# Notes\n- from a\n- from b\n"), "b's line reaches a")
        # a's agent rewrites the whole file from what it read before b's line came
        write_file(a.dir / "MEMORY.md", "# Notes\n- from a\n- later a\n", atomic=True)
        wait_until(lambda: holds(a, final) and holds(b, final), "both hold every line")

        expected = [
            ("# Notes", "a", "cloud"),
            ("- from a", "a", "cloud"),
            ("- from b", "b", "laptop"),
            ("- later a", "a", "cloud"),
        ]
        assert blame_of(a) == expected
        assert blame_of(b) == expected

        done = run_cli("log", "MEMORY.md", "--dir", str(a.dir), "--state-dir", str(a.state_dir),
                       "--json", "--node", "b")  # fmt: skip
        assert done.returncode == 0, done.stderr
        edits = json.loads(done.stdout)["edits"]
        assert [(e["nodes"], e["added"], e["removed"]) for e in edits] == [
            (["b"], ["- from b"], [])
        ]
        text = run_cli("log", "MEMORY.md", "--dir", str(b.dir), "--state-dir", str(b.state_dir))
        assert text.returncode == 0 and "+ - later a" in text.stdout, text.stdout

        b.stop()
        b.start().wait_ready()
        assert blame_of(b) == expected

        # A node that joins once the swarm has compacted starts from snapshots, not the log.
        snap = SwarmKeys.for_swarm("team").snap
        client = redis.Redis.from_url(redis_server.url)
        try:
            wait_until(lambda: client.hlen(snap) > 0, "a snapshot is written")
        finally:
            client.close()
        late = group.add("late").start().wait_ready()
        wait_until(lambda: holds(late, final), "the late node holds the file")
        assert blame_of(late) == expected


def test_blame_of_a_file_the_node_does_not_sync_is_one_line_of_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = run_cli("blame", "MEMORY.md", "--dir", str(tmp_path), "--state-dir", str(state))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no swarm state" in done.stderr

"""Real daemons in an agent's workspace: what is not memory stays on its node and status says
why; a flood of new files is held (status, /readyz, metric) until an operator confirms it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daemon_harness import DaemonGroup, daemon_env, read_tree, run_cli, wait_until
from test_http import FAST, get, metrics

from swarm.devtools.devredis import RedisServer, free_port

pytestmark = pytest.mark.slow


def status_json(redis_url: str) -> dict[str, object]:
    done = run_cli("status", "--json", "--swarm", "team", "--redis-url", redis_url)
    return dict(json.loads(done.stdout))


def test_a_workspace_syncs_its_memory_only_and_status_says_why(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.add("a", env=FAST), group.add("b", env=FAST)
        for rel in ("MEMORY.md", "memory/2026-01-02.md", "repo/README.md",
                    "node_modules/pkg/README.md", "drafts/x.md"):  # fmt: skip
            (a.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (a.dir / rel).write_text(f"# {rel}\n")
        (a.dir / "repo/.git").mkdir()
        (a.dir / ".gitignore").write_text("drafts/\nmemory/\n")  # memory/ syncs all the same
        for daemon in (a.start(), b.start()):
            daemon.wait_ready()
        wait_until(
            lambda: set(read_tree(b.dir)) == {"MEMORY.md", "memory/2026-01-02.md"},
            "only the memory on b",
            15,
            lambda: str(read_tree(b.dir)),
        )

        def reported() -> dict[str, object]:
            nodes = status_json(redis_server.url)["nodes"]
            assert isinstance(nodes, list)
            return next(n for n in nodes if n["node"] == "a")["not_synced"]  # type: ignore[no-any-return]

        wait_until(lambda: reported()["paths"], "a reports what it skips", 15)
        assert reported()["paths"] == {
            "drafts/": ".gitignore",
            "node_modules/": "dependencies",
            "repo/": "nested git repository",
        }
        done = run_cli("status", "--files", "--swarm", "team", "--redis-url", redis_server.url)
        assert "not synced on a: " in done.stdout and "nested git repository" in done.stdout


def test_a_flood_of_new_files_is_held_until_confirmed(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        port = free_port()
        a = group.add(
            "a",
            env={**FAST, "SWARM_NEW_FILES_PER_MINUTE": "5"},
            extra_args=["--http", f"127.0.0.1:{port}"],
        )
        b = group.add("b", env=FAST)
        for daemon in (a.start(), b.start()):
            daemon.wait_ready()
        (a.dir / "MEMORY.md").write_text("# memory\n")
        wait_until(lambda: (b.dir / "MEMORY.md").exists(), "MEMORY.md on b", 15)

        flood = a.dir / "unpacked"
        flood.mkdir()
        for i in range(12):
            (flood / f"note{i:02d}.md").write_text(f"# note {i}\n")
        wait_until(lambda: get(port, "/readyz")[0] == 503, "a not ready: files held", 15)
        assert "new files" in get(port, "/readyz")[1] and "confirm-files" in get(port, "/readyz")[1]
        wait_until(lambda: metrics(port)["swarm_new_files_held"] >= 7, "the metric shows it", 15)
        node_a = next(n for n in status_json(redis_server.url)["nodes"] if n["node"] == "a")  # type: ignore[attr-defined]
        assert node_a["state"] == "error" and "new files" in node_a["last_error"]

        # what is known keeps syncing; what is held stays here
        with (a.dir / "MEMORY.md").open("a") as handle:
            handle.write("- still syncing\n")
        wait_until(lambda: "still syncing" in (b.dir / "MEMORY.md").read_text(), "edit on b", 15)
        on_b = set(read_tree(b.dir / "unpacked")) if (b.dir / "unpacked").exists() else set()
        assert len(on_b) <= 5, on_b  # at most the budget went out before the hold

        done = run_cli("confirm-files", "--dir", str(a.dir), "--state-dir", str(a.state_dir),
                       env=daemon_env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: len(read_tree(b.dir / "unpacked")) == 12, "every note on b once confirmed", 20
        )
        wait_until(lambda: get(port, "/readyz")[0] == 200, "a ready again", 15)
        assert metrics(port)["swarm_new_files_held"] == 0

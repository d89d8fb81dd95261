"""`swarm demo` end to end (private Redis, two sidecars, two scripted agents, the proof), and
`swarm verify` (what compose's verify service runs) on the folders such a run leaves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROLES = ("cloud", "local")


def swarm(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, on a console wide enough that no message wraps."""
    return subprocess.run(
        [sys.executable, "-m", "swarm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "250"} if env is None else env,
    )


def log_records(workspace: Path, role: str) -> list[dict[str, object]]:
    log = workspace / ".demo" / f"{role}-entries.jsonl"
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real demo run: its workdir and what it printed."""
    workdir = tmp_path_factory.mktemp("demo") / "run"
    result = swarm("demo", "--workdir", str(workdir), "--entries", "8", timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result.stdout


@pytest.fixture
def nodes(demo_run: tuple[Path, str], tmp_path: Path) -> dict[str, Path]:
    """A copy of the demo's two folders, to damage."""
    workdir, _ = demo_run
    return {role: Path(shutil.copytree(workdir / role, tmp_path / role)) for role in ROLES}


def test_swarm_demo_runs_end_to_end_and_proves_one_memory(demo_run: tuple[Path, str]) -> None:
    workdir, stdout = demo_run
    assert "demo passed" in stdout
    cloud, local = workdir / "cloud", workdir / "local"
    # The demo's claim, checked independently: MEMORY.md byte-identical on both nodes...
    digest = {
        hashlib.sha256((root / "MEMORY.md").read_bytes()).hexdigest() for root in (cloud, local)
    }
    assert len(digest) == 1
    assert digest.pop() in stdout.replace("\n", "")
    # ...and every entry each agent logged present exactly once, on both nodes.
    for role in ROLES:
        entries = log_records(workdir / role, role)
        assert len(entries) >= 8
        for entry in entries:
            if entry.get("kind") == "focus":
                continue
            for root in (cloud, local):
                text = (root / str(entry["file"])).read_text(encoding="utf-8")
                assert text.splitlines().count(entry["line"]) == 1, (root, entry)


def test_verify_proves_a_demo_run_and_tells_its_story(demo_run: tuple[Path, str]) -> None:
    workdir, _ = demo_run
    done = swarm("verify", "--wait", "0", str(workdir / "cloud"), str(workdir / "local"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "verify passed" in out
    for path in ("MEMORY.md", "SOUL.md", "memory/projects.md"):
        digest = hashlib.sha256((workdir / "cloud" / path).read_bytes()).hexdigest()
        assert digest[:16] in out, path
    assert hashlib.sha256((workdir / "cloud" / "MEMORY.md").read_bytes()).hexdigest() in out

    records = {role: log_records(workdir / role, role) for role in ROLES}
    regular = sum(r["kind"] != "focus" for role in ROLES for r in records[role])
    assert f"{regular} entries (8 cloud, 8 local) each present exactly once" in out
    # The line both changed: the story shows what MEMORY.md really holds for it.
    memory = (workdir / "cloud" / "MEMORY.md").read_text(encoding="utf-8").splitlines()
    kept = [line for line in memory if "[cloud-focus]" in line or "[local-focus]" in line]
    assert kept and all(line in done.stdout for line in kept)
    assert "changed at the same moment" in out
    # The stale rewrite: the local lines written while cloud held its old copy are named.
    stale = next(r for r in records["cloud"] if r["stale"])
    assert isinstance(stale["read_at"], float) and isinstance(stale["at"], float)
    meanwhile = [
        f"[{r['id']}]" for r in records["local"]
        if r["file"] == "MEMORY.md" and r["kind"] != "focus"
        and stale["read_at"] < r["at"] <= stale["at"]
    ]  # fmt: skip
    assert "the stale rewrite: cloud wrote MEMORY.md back" in out
    assert f"([{stale['id']}])" in out
    assert all(token in out for token in meanwhile)


def test_verify_fails_when_an_entry_is_lost_on_every_node(nodes: dict[str, Path]) -> None:
    """Identical folders are not enough: an entry merged away everywhere is a lost edit."""
    lost = next(r for r in log_records(nodes["local"], "local") if r["kind"] != "focus")
    for root in nodes.values():
        path = root / str(lost["file"])
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("".join(f"{line}\n" for line in lines if line != lost["line"]), "utf-8")
    done = swarm("verify", "--wait", "0", *map(str, nodes.values()))
    assert done.returncode == 1
    assert f"entries lost or duplicated: cloud: [{lost['id']}] appears 0 times" in done.stdout


def test_verify_fails_when_an_entry_is_there_twice(nodes: dict[str, Path]) -> None:
    doubled = next(r for r in log_records(nodes["cloud"], "cloud") if r["kind"] != "focus")
    for root in nodes.values():
        path = root / str(doubled["file"])
        path.write_text(path.read_text(encoding="utf-8") + f"{doubled['line']}\n", "utf-8")
    done = swarm("verify", "--wait", "0", *map(str, nodes.values()))
    assert done.returncode == 1
    assert f"[{doubled['id']}] appears 2 times" in done.stdout


def test_verify_fails_when_one_byte_differs_and_shows_both_hashes(nodes: dict[str, Path]) -> None:
    path = nodes["local"] / "memory" / "projects.md"
    path.write_bytes(path.read_bytes() + b" ")
    done = swarm("verify", "--wait", "0", *map(str, nodes.values()))
    assert done.returncode == 1
    assert "files differ between the nodes: memory/projects.md" in done.stdout
    for root in nodes.values():
        digest = hashlib.sha256((root / "memory" / "projects.md").read_bytes()).hexdigest()
        assert digest[:16] in done.stdout


def test_verify_cannot_check_without_two_folders_or_the_agents_logs(
    nodes: dict[str, Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "at least two": [str(nodes["cloud"])],
        "not a directory": [str(nodes["cloud"]), str(tmp_path / "missing")],
        "no agent logs": [str(empty), str(empty)],
    }
    for expected, folders in cases.items():
        done = swarm("verify", "--wait", "0", *folders)
        assert done.returncode == 2, (expected, done.stdout)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (expected, done.stderr)

    log = nodes["cloud"] / ".demo" / "cloud-entries.jsonl"
    log.write_text("garbage\n" + log.read_text(encoding="utf-8"), encoding="utf-8")
    done = swarm("verify", "--wait", "0", *map(str, nodes.values()))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"swarm: {log}:1: not an agent log line (Expecting value: line 1 column 1 (char 0))"
    ]


def test_verify_asks_status_first_and_stops_when_redis_is_unreachable(
    nodes: dict[str, Path],
) -> None:
    from swarm.devtools.devredis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    done = swarm(
        "verify", "--swarm", "demo", "--redis-url", url, "--wait", "0", *map(str, nodes.values())
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swarm: `swarm status` failed:")
    assert "verify passed" not in done.stdout


def test_swarm_demo_without_redis_says_how_to_install_it(tmp_path: Path) -> None:
    result = swarm(
        "demo",
        "--workdir",
        str(tmp_path / "d"),
        timeout=60,
        env={"PATH": "/nonexistent", "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "redis-server" in lines[0] and "apt-get install" in lines[0]
    assert "Traceback" not in result.stderr

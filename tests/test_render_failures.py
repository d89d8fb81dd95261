"""A render the file system refuses (no permission, no space, read-only) is retried with backoff
until it works, and meanwhile `swarm status` says which file on which node, and why, instead of
"converged". Real daemons, real refusals: a daemon without CAP_DAC_OVERRIDE facing a mode 000
file, and a small tmpfs as the memory folder, filled up or remounted read-only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    FAST_SYNC_ENV,
    DaemonGroup,
    DaemonProcess,
    run_cli,
    wait_until,
    write_file,
)

from swarm.devtools.devredis import RedisServer

pytestmark = pytest.mark.slow

# The daemon under test runs as root (as the tests do) without the capability that lets root
# ignore file permissions: what a non-root daemon meets.
NO_DAC_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
HEAL_DEADLINE_S = 45.0  # the retry backoff is capped at 30 s


def status(group: DaemonGroup) -> tuple[int, dict[str, Any]]:
    done = run_cli("status", "--swarm", group.swarm, "--redis-url", group.redis_url, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def node_of(report: dict[str, Any], node: str) -> dict[str, Any]:
    return next(n for n in report["nodes"] if n["node"] == node)


def wait_for_reported_failure(group: DaemonGroup, node: str, path: str, reason: str) -> None:
    """Until status says `node` cannot render `path` for `reason`, and is not converged."""

    def reported() -> bool:
        code, report = status(group)
        entry = node_of(report, node)
        differs = entry.get("disk_differs", {}).get(path, "")
        return (
            code == 1
            and not report["converged"]
            and entry["state"] == "error"
            and differs.startswith("render failed")
            and reason in differs
            and path in (entry["last_error"] or "")
        )

    wait_until(reported, f"status reports {path} on {node}: {reason}", explain=group.logs)


def wait_converged(group: DaemonGroup) -> None:
    wait_until(lambda: status(group)[0] == 0, "status converged", HEAL_DEADLINE_S, group.logs)


def start_pair(group: DaemonGroup, b_wrapper: tuple[str, ...] = ()) -> tuple[DaemonProcess, ...]:
    a = group.add("a", env=FAST_SYNC_ENV)
    b = group.add("b", env=FAST_SYNC_ENV, wrapper=b_wrapper)
    for daemon in (a, b):
        daemon.start()
    for daemon in (a, b):
        daemon.wait_ready()
    return a, b


def seed(a: DaemonProcess, b: DaemonProcess, text: str) -> None:
    write_file(a.dir / "MEMORY.md", text, atomic=True)
    wait_until(lambda: _read(b.dir / "MEMORY.md") == text, "seed reaches b")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, PermissionError):
        return None


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_an_unwritable_file_is_reported_then_healed_once_writable(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = start_pair(group, NO_DAC_OVERRIDE)
        seed(a, b, "- one\n")
        (b.dir / "MEMORY.md").chmod(0)
        write_file(a.dir / "MEMORY.md", "- one\n- two\n", atomic=True)
        wait_for_reported_failure(group, "b", "MEMORY.md", "Permission denied")
        assert b.running
        assert b.current_log().count("cannot render MEMORY.md") == 1  # once per cause

        (b.dir / "MEMORY.md").chmod(0o644)
        wait_until(
            lambda: _read(b.dir / "MEMORY.md") == "- one\n- two\n",
            "b renders once the file is writable again",
            HEAL_DEADLINE_S,
            group.logs,
        )
        wait_converged(group)
        assert node_of(status(group)[1], "b")["last_error"] is None


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted after the test."""
    mount = tmp_path / "b" / "memory-folder"
    mount.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_no_space_and_a_read_only_file_system_are_reported_then_healed(
    redis_server: RedisServer, tmp_path: Path, small_tmpfs: Path
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = start_pair(group)
        assert b.dir == small_tmpfs
        seed(a, b, "- one\n")

        filler = small_tmpfs / "filler.bin"  # not a memory file: never synced
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        write_file(a.dir / "MEMORY.md", "- one\n" + "- two\n" * 20, atomic=True)
        wait_for_reported_failure(group, "b", "MEMORY.md", "No space left on device")
        assert b.running
        filler.unlink()
        wait_until(
            lambda: _read(b.dir / "MEMORY.md") == "- one\n" + "- two\n" * 20,
            "b renders once there is space",
            HEAL_DEADLINE_S,
            group.logs,
        )
        wait_converged(group)

        subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
        write_file(a.dir / "MEMORY.md", "- three\n", atomic=True)
        wait_for_reported_failure(group, "b", "MEMORY.md", "Read-only file system")
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
        wait_until(
            lambda: _read(b.dir / "MEMORY.md") == "- three\n",
            "b renders once the file system is writable",
            HEAL_DEADLINE_S,
            group.logs,
        )
        wait_converged(group)
        assert a.running and b.running
        assert os.listdir(small_tmpfs) == ["MEMORY.md"]  # no temp file left behind


async def test_a_deleted_file_is_in_the_trash_before_it_leaves_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever sees the file gone (an agent, a test, `swarm restore`) finds its content kept:
    the trash entry is committed before the render removes the file."""
    import sqlite3

    from node_harness import eventually, two_nodes, write_atomically

    import swarm.node.render

    seen_at_removal: list[int] = []
    real_remove = swarm.node.render.remove_file

    def remove_and_look(path: Path, **kwargs: Any) -> bool:
        removed = real_remove(path, **kwargs)
        with sqlite3.connect(tmp_path / "sb" / "state.db") as db:  # another reader, as a CLI
            rows = db.execute("SELECT count(*) FROM trash WHERE path = 'MEMORY.md'").fetchone()
        seen_at_removal.append(int(rows[0]))
        return removed

    monkeypatch.setattr(swarm.node.render, "remove_file", remove_and_look)
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(a.root / "MEMORY.md", "- keep me\n")
        await eventually(lambda: b.read("MEMORY.md") == "- keep me\n", what="create")
        (a.root / "MEMORY.md").unlink()
        await eventually(lambda: seen_at_removal, what="the render deleted the file")
        assert seen_at_removal == [1]
        assert b.node.store.trashed("MEMORY.md")[0][1] == "- keep me\n"

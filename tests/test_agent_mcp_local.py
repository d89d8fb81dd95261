"""`swarm mcp` and `swarm remember` with no daemon running: edits go into the files themselves,
under a lock, and every path outside the memory folder is refused with a clear message."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import date
from pathlib import Path

import pytest
from daemon_harness import (
    REPO,
    START_DEADLINE_S,
    STOP_DEADLINE_S,
    daemon_env,
    run_cli,
    swarm_command,
    wait_until,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_harness import TOOLS, mcp_session, ok, refused

from swarm.devtools.devredis import free_port

pytestmark = pytest.mark.slow

TODAY = "memory/today"
SEED = "# Agent memory\n\n## Decisions\n- use markdown\n\n## Notes\n- one\n- same\n- same\n"


def folder(tmp_path: Path) -> Path:
    root = tmp_path / "memory-folder"
    (root / "memory" / "private").mkdir(parents=True)
    (root / "MEMORY.md").write_text(SEED)
    (root / "memory" / "private" / "diary.md").write_text("- secret\n")
    return root


async def test_every_tool_works_on_the_files_without_a_daemon(tmp_path: Path) -> None:
    root = folder(tmp_path)
    async with mcp_session(tmp_path / "mcp.log", "--dir", str(root)) as session:
        listed = await session.list_tools()
        assert {tool.name for tool in listed.tools} == TOOLS

        added = await ok(session, "memory_append", text="- chose Postgres", section="Decisions")
        assert added["stored"] == "file" and added["line"] == 5
        assert "no daemon" in added["note"]
        assert (root / "MEMORY.md").read_text() == SEED.replace(
            "- use markdown\n", "- use markdown\n- chose Postgres\n"
        )
        on_disk = (root / "MEMORY.md").read_text()
        assert await ok(session, "memory_read", path="MEMORY.md") == on_disk

        await ok(session, "memory_replace", path="MEMORY.md", old="- one", new="- first")
        assert "- first\n- same\n" in (root / "MEMORY.md").read_text()

        daily = await ok(session, "memory_append", text="- standup", path="memory/today")
        today = f"memory/{date.today().isoformat()}.md"
        assert daily["path"] == today
        assert (root / today).read_text() == "- standup\n"

        found = await ok(session, "memory_search", query="POSTGRES")
        assert found["matches"] == [
            {
                "path": "MEMORY.md",
                "line": 5,
                "text": "- chose Postgres",
                "before": ["## Decisions", "- use markdown"],
                "after": ["", "## Notes"],
            }
        ]
        regex = await ok(session, "memory_search", query=r"^- s\w+", regex=True, paths=["memory/*"])
        assert [(m["path"], m["text"]) for m in regex["matches"]] == [
            (today, "- standup"),
            ("memory/private/diary.md", "- secret"),
        ]

        files = {item["path"]: item for item in await ok(session, "memory_list")}
        assert set(files) == {"MEMORY.md", today, "memory/private/diary.md"}
        assert files["memory/private/diary.md"]["private"] is True
        assert files["MEMORY.md"]["size"] == (root / "MEMORY.md").stat().st_size
        assert await ok(session, "memory_read", path="memory/private/diary.md") == "- secret\n"

        status = await ok(session, "memory_status")
        assert status["daemon"] is False and status["view"] is None
        assert "no --swarm" in status["view_error"] and "no daemon" in status["summary"]


async def test_refusals_name_the_problem_and_change_nothing(tmp_path: Path) -> None:
    root = folder(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.md").write_text("not memory\n")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "notes.txt").write_text("text\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    async with mcp_session(tmp_path / "mcp.log", "--dir", str(root)) as session:
        cases = [
            ("memory_read", {"path": "/etc/passwd"}, "is absolute"),
            ("memory_read", {"path": "../outside/x.md"}, "leads out of the memory folder ('..')"),
            ("memory_append", {"text": "- x", "path": "linked/x.md"}, "linked is a symbolic link"),
            ("memory_read", {"path": "linked/x.md"}, "linked is a symbolic link"),
            ("memory_append", {"text": "- x", "path": "notes.txt"}, "is not a memory file"),
            ("memory_read", {"path": ".swarm/state.md"}, "is ignored by swarm"),
            ("memory_read", {"path": "GONE.md"}, "GONE.md does not exist"),
            ("memory_append", {"text": "  \n"}, "the text to append is empty"),
            (
                "memory_replace",
                {"path": "MEMORY.md", "old": "- same", "new": "- x"},
                "'- same' occurs 2 times (lines 8, 9)",
            ),
            (
                "memory_replace",
                {"path": "MEMORY.md", "old": "- missing", "new": "- x"},
                "no line reads '- missing'",
            ),
            ("memory_search", {"query": "(", "regex": True}, "not a valid regular expression"),
        ]
        for tool, arguments, message in cases:
            assert message in await refused(session, tool, **arguments)
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".swarm" not in p.parts}
    assert after == before
    assert (outside / "x.md").read_text() == "not memory\n"


def test_remember_takes_text_with_a_leading_dash_and_exits_by_outcome(tmp_path: Path) -> None:
    root = folder(tmp_path)
    result = run_cli("remember", "- chose Postgres", "--dir", str(root), "--section", "Decisions")
    assert result.returncode == 0, result.stderr
    assert "stored in MEMORY.md line 5" in result.stdout
    assert "- use markdown\n- chose Postgres\n" in (root / "MEMORY.md").read_text()
    # Words are joined as echo joins them; options may come first or last.
    result = run_cli("remember", "--dir", str(root), "-", "chose", "Redis", "--file", TODAY)
    assert result.returncode == 0, result.stderr
    assert (root / f"memory/{date.today().isoformat()}.md").read_text() == "- chose Redis\n"
    # Bad input: exit 2, one line, nothing written.
    snapshot = (root / "MEMORY.md").read_text()
    for args in (
        ["- x", "--file", "../escape.md"],
        ["- x", "--fiel", "MEMORY.md"],
        ["   "],
        ["- x", "--section", "##"],
    ):
        result = run_cli("remember", "--dir", str(root), *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("swarm: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
    assert (root / "MEMORY.md").read_text() == snapshot
    # --wait with no daemon: stored, but nobody received it: exit 1.
    result = run_cli("remember", "- waited", "--dir", str(root), "--wait", "0.5")
    assert result.returncode == 1
    assert "not delivered" in result.stderr and "no daemon" in result.stderr
    assert "- waited\n" in (root / "MEMORY.md").read_text()


def test_concurrent_remember_calls_keep_every_line(tmp_path: Path) -> None:
    """Without a daemon each call is a read-modify-write of the file: the edit lock makes them
    take turns, so none writes over another's line."""
    root = folder(tmp_path)
    lines = [f"- parallel {i}" for i in range(8)]
    procs = [
        subprocess.Popen(
            swarm_command("remember", line, "--dir", str(root), "--section", "Notes"),
            env=daemon_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for line in lines
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    text = (root / "MEMORY.md").read_text().splitlines()
    for line in lines:
        assert text.count(line) == 1, line
    notes = text.index("## Notes")
    assert set(text[notes + 1 :]) == {"- one", "- same", *lines}


def test_private_edit_without_daemon_leaves_mode_and_state_folder_private(tmp_path: Path) -> None:
    root = folder(tmp_path)
    diary = root / "memory" / "private" / "diary.md"
    os.chmod(diary, 0o600)
    result = run_cli("remember", "- more", "--dir", str(root), "--file", "memory/private/diary.md")
    assert result.returncode == 0, result.stderr
    assert "private file" in result.stdout
    assert diary.read_text() == "- secret\n- more\n"
    assert diary.stat().st_mode & 0o777 == 0o600
    assert (root / ".swarm").stat().st_mode & 0o777 == 0o700


async def test_streamable_http_serves_the_same_tools(tmp_path: Path) -> None:
    root = folder(tmp_path)
    port = free_port()
    log = (tmp_path / "mcp-http.log").open("wb")
    proc = subprocess.Popen(
        swarm_command("mcp", "--dir", str(root), "--http", f"127.0.0.1:{port}"),
        env=daemon_env(),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:

        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "mcp-http.log").read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, "swarm mcp --http listens", START_DEADLINE_S)
        url = f"http://127.0.0.1:{port}/mcp"
        async with (
            streamable_http_client(url) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
            await ok(session, "memory_append", text="- over http", section="Notes")
            assert "- over http" in await ok(session, "memory_read", path="MEMORY.md")
    finally:
        proc.terminate()
        proc.wait(timeout=STOP_DEADLINE_S)
        log.close()

"""What the disk can hold besides plain edits: empty files, a crash's leftovers, symbolic links
swapped in after a path was accepted. Nodes run in-process (node_harness) on real folders."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonGroup, wait_until
from node_harness import Running, eventually, running_node, two_nodes, write_atomically

from swarm.config import SwarmSettings
from swarm.devredis import RedisServer
from swarm.status import fetch_view
from swarm.store import Store
from swarm.transport.memory import MemoryBus

_libc = ctypes.CDLL(None, use_errno=True)
WRITER = Path(__file__).parent / "writer_process.py"


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE), as an attacker racing us would."""
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def temp_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".swarm-tmp"))


# -- empty files -----------------------------------------------------------------------------


async def test_a_new_empty_file_reaches_the_other_node_and_fills_later(tmp_path: Path) -> None:
    """An agent creates a topic file before it writes anything in it (`: > memory/topic.md`)."""
    async with two_nodes(tmp_path) as (a, b):
        (a.root / "memory").mkdir()
        (a.root / "memory" / "topic.md").touch()
        await eventually(lambda: b.read("memory/topic.md") == "", what="empty file on b")
        assert b.node.doc("memory/topic.md").state_vector() == (
            a.node.doc("memory/topic.md").state_vector()
        )
        (b.root / "memory" / "topic.md").write_text("- first\n", encoding="utf-8")
        await eventually(lambda: a.read("memory/topic.md") == "- first\n", what="filled on a")


def swarm_view(redis_url: str) -> dict[str, Any]:
    view = asyncio.run(fetch_view(SwarmSettings(swarm="team", redis_url=redis_url)))
    report: dict[str, Any] = view.to_json()
    return report


@pytest.mark.slow
def test_status_is_not_converged_while_a_node_lacks_a_new_empty_file(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        wait_until(lambda: swarm_view(redis_server.url)["converged"], "converged at start")
        b.signal(signal.SIGSTOP)  # b cannot take anything in
        try:
            (a.dir / "topic.md").touch()
            wait_until(
                lambda: any(f["path"] == "topic.md" for f in swarm_view(redis_server.url)["files"]),
                "a reports topic.md",
            )
            report = swarm_view(redis_server.url)
            assert not report["converged"], report
        finally:
            b.signal(signal.SIGCONT)
        wait_until(lambda: (b.dir / "topic.md").exists(), "the empty file on b", explain=group.logs)
        assert (b.dir / "topic.md").read_bytes() == b""
        wait_until(lambda: swarm_view(redis_server.url)["converged"], "converged again")


# -- a writer holding the file ----------------------------------------------------------------


async def test_a_remote_edit_waits_while_an_agent_holds_the_file_open_for_writing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No render lands under a writer: the file is pending (not failed) until it is closed,
    then both the writer's lines and the remote edit are on both disks."""
    caplog.set_level(logging.INFO, logger="swarm.node")
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(a.root / "MEMORY.md", "- one\n")
        await eventually(lambda: b.read("MEMORY.md") == "- one\n", what="seed")
        with open(a.root / "MEMORY.md", "a", encoding="utf-8") as writer:
            writer.write("- streamed 1\n")
            writer.flush()
            write_atomically(b.root / "MEMORY.md", "- one\n- from b\n")
            await eventually(
                lambda: "- from b\n" in a.node.doc("MEMORY.md").content, what="edit reached a"
            )
            # renders are tried, less and less often, and say so once
            await eventually(lambda: "held open for writing" in caplog.text, what="renders wait")
            assert a.node.disk_states()["MEMORY.md"].state == "pending"
            assert a.read("MEMORY.md") == "- one\n- streamed 1\n", "rendered under the writer"
            writer.write("- streamed 2\n")
        want = {"- one", "- from b", "- streamed 1", "- streamed 2"}
        for node in (a, b):
            await eventually(
                lambda n=node: set((n.read("MEMORY.md") or "").splitlines()) == want,
                what=f"both lines on {node.name}",
            )
        assert a.read("MEMORY.md") == b.read("MEMORY.md")
        assert "keeps changing" not in caplog.text
        # The render's record follows its file onto the disk (the write runs in a thread): for
        # that moment the file is still pending, then synced.
        await eventually(lambda: "MEMORY.md" not in a.node.disk_states(), what="synced on a")


async def test_a_rewrite_paused_halfway_is_taken_whole_not_as_deleting_its_second_half(
    tmp_path: Path,
) -> None:
    """An agent rewriting MEMORY.md in place (open 'w') writes its first half, thinks for a
    second, then writes the rest and a new line. The half-written file must never be taken as
    the agent deleting the second half: the other node's agent would see those lines vanish
    (and act on it) until the rest arrives."""
    old = "".join(f"- kept {number:02d}\n" for number in range(20))
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(a.root / "MEMORY.md", old)
        await eventually(lambda: b.read("MEMORY.md") == old, what="seed on b")
        writer = await asyncio.create_subprocess_exec(
            sys.executable, str(WRITER), "rewrite", str(a.root / "MEMORY.md"), "agent", "1.0"
        )
        seen_on_b: set[str] = set()
        while writer.returncode is None:
            seen_on_b.add(b.read("MEMORY.md") or "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.wait(), 0.01)
        assert writer.returncode == 0
        assert all(text.startswith(old) for text in seen_on_b), "b lost lines for a while"
        want = old + "agent new\n"
        for node in (a, b):
            await eventually(lambda n=node: n.read("MEMORY.md") == want, what=f"{node.name}")
        assert a.node.doc("MEMORY.md").content == want


# -- a crash's leftovers ---------------------------------------------------------------------


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def leave_temp(folder: Path, name: str, text: str, ino_in_name: int | None, token: str) -> Path:
    """A render temp file `.NAME.INO.TOKEN.swarm-tmp`; INO is the file's own inode when None."""
    path = folder / f".{name}.scratch"
    path.write_text(text, encoding="utf-8")
    ino = path.stat().st_ino if ino_in_name is None else ino_in_name
    final = folder / f".{name}.{ino}.{token}.swarm-tmp"
    path.rename(final)
    return final


async def test_a_write_left_in_a_swapped_out_file_by_a_crash_is_merged_at_start(
    tmp_path: Path,
) -> None:
    """SIGKILL after a render swapped its text in, before it read the old file: the old file,
    holding an agent's line, is left at the render's temp name. The next start merges that line
    (based on what the old file held: a line deleted since stays deleted), takes the file on disk
    for the render it is, removes a temp file of a render that never swapped, and leaves no temp
    file behind."""
    base = "# Memory\n- one\n- two\n- three\n"
    rendered = "# Memory\n- one\n- three\n- four\n"  # the swarm removed "two", added "four"
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(a.root / "MEMORY.md", base)
        await eventually(lambda: b.read("MEMORY.md") == base, what="seed")
        write_atomically(b.root / "MEMORY.md", rendered)
        await eventually(lambda: a.read("MEMORY.md") == rendered, what="render on a")
        await eventually(lambda: a.node.store.last_version("MEMORY.md") == rendered, what="rec")
    # The state the crash left: the store still names `base` as what a's disk holds...
    with Store(tmp_path / "sa") as store:
        store.record_version("MEMORY.md", base)
    # ...the old file, with the line an agent appended as the render swapped it out...
    leave_temp(a.root, "MEMORY.md", base + "- agent line\n", None, digest(rendered))
    # ...and a render's new text that never replaced anything (it still has "two").
    live = (a.root / "MEMORY.md").stat().st_ino  # the file it would have replaced, still there
    leave_temp(a.root, "MEMORY.md", base + "- never swapped\n", live, digest("x"))

    async with running_node(MemoryBus(), "a", a.root, tmp_path / "sa") as again:
        want = rendered + "- agent line\n"
        await eventually(lambda: again.read("MEMORY.md") == want, what="agent line merged")
        await eventually(lambda: temp_files(again.root) == [], what="temp files removed")
        assert again.node.doc("MEMORY.md").content == want
        assert again.node.store.last_version("MEMORY.md") == want


# -- symbolic links ----------------------------------------------------------------------------


def outside_folder(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "topic.md").write_text("secret outside the memory folder\n", encoding="utf-8")
    return outside


def outside_untouched(outside: Path) -> bool:
    return sorted(os.listdir(outside)) == ["topic.md"] and (outside / "topic.md").read_text(
        encoding="utf-8"
    ) == "secret outside the memory folder\n"


def reported(node: Running, needle: str) -> bool:
    problems = [node.node.counters.last_error or "", *node.node.counters.skipped_files.values()]
    return any(needle in problem for problem in problems)


async def test_a_synced_folder_swapped_for_a_link_out_is_neither_read_nor_written(
    tmp_path: Path,
) -> None:
    outside = outside_folder(tmp_path)
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(b.root / "memory" / "topic.md", "- one\n")  # a has synced it since
        await eventually(lambda: a.read("memory/topic.md") == "- one\n", what="seed")
        link = tmp_path / "link"
        os.symlink(outside, link)
        exchange(a.root / "memory", link)  # memory/ is now a link to the outside folder

        applied = a.node.counters.remote_applied
        write_atomically(b.root / "memory" / "topic.md", "- one\n- two\n")  # a remote edit
        await eventually(lambda: a.node.counters.remote_applied > applied, what="edit reached a")
        await a.node.rescan()  # and a read of every file
        await eventually(
            lambda: reported(a, "symbolic link") or not outside_untouched(outside),
            what="refusal reported",
        )
        assert outside_untouched(outside), "written outside the memory folder"
        assert reported(a, "symbolic link")
        assert (a.root / "memory").is_symlink()
        assert b.read("memory/topic.md") == "- one\n- two\n"  # nothing from outside published


async def test_a_synced_file_swapped_for_a_link_out_is_neither_read_nor_replaced(
    tmp_path: Path,
) -> None:
    outside = outside_folder(tmp_path)
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(b.root / "MEMORY.md", "- one\n")
        await eventually(lambda: a.read("MEMORY.md") == "- one\n", what="seed")
        link = tmp_path / "link"
        os.symlink(outside / "topic.md", link)
        exchange(a.root / "MEMORY.md", link)

        applied = a.node.counters.remote_applied
        write_atomically(b.root / "MEMORY.md", "- one\n- two\n")
        await eventually(lambda: a.node.counters.remote_applied > applied, what="edit reached a")
        await a.node.rescan()

        def link_kept() -> bool:
            return (a.root / "MEMORY.md").is_symlink()

        def intact() -> bool:
            return outside_untouched(outside) and link_kept()

        await eventually(lambda: reported(a, "symbolic link") or not intact(), what="refusal")
        assert link_kept(), "the agent's link was replaced by a regular file"
        assert outside_untouched(outside), "written outside the memory folder"
        assert reported(a, "symbolic link")
        assert os.readlink(a.root / "MEMORY.md") == str(outside / "topic.md")
        assert b.read("MEMORY.md") == "- one\n- two\n"


async def test_links_inside_the_folder_are_not_followed_either(tmp_path: Path) -> None:
    """A link to another synced file would render one file from two documents: not synced."""
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(a.root / "MEMORY.md", "- one\n")
        await eventually(lambda: b.read("MEMORY.md") == "- one\n", what="seed")
        os.symlink("MEMORY.md", a.root / "alias.md")
        (a.root / "memory").mkdir()
        os.symlink("..", a.root / "memory" / "up")
        write_atomically(a.root / "memory" / "marker.md", "x\n")
        await eventually(lambda: b.read("memory/marker.md") == "x\n", what="marker")
        await a.node.rescan()
        await eventually(lambda: reported(a, "symbolic link"), what="link reported")
        assert b.read("alias.md") is None
        assert not (b.root / "memory" / "up").exists()
        assert a.read("MEMORY.md") == b.read("MEMORY.md") == "- one\n"

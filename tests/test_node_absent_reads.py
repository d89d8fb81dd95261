"""An agent's write never removes what a render put there after the agent read the file: not
when it read no file at all, nor when its write was displaced by a later render.

Seen in the three-daemon test: all agents create the daily file at once. Node b renders a's new
file before b's agent (which read "no such file") writes its own first version: that write
replaced the render, and diffed against it, it removed a's line on every node. The agent never
saw that line; its write derives from the absent file, so it only adds.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from node_harness import eventually, two_nodes, write_atomically

from swarm.bridge.displaced import Displaced

DAILY = "memory/2026-11-25.md"


def write_in_place(path: Path, text: str) -> None:
    """Truncate, then write (`open('w')`): onto the inode the render left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


@pytest.mark.parametrize("header", ["", "# 2026-11-25\n"], ids=["plain", "same-header"])
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in-place"])
async def test_a_new_file_written_over_a_render_it_never_read_keeps_the_rendered_lines(
    tmp_path: Path, atomic: bool, header: str
) -> None:
    async with two_nodes(tmp_path) as (a, b):
        agent_read = b.read(DAILY)  # b's agent reads: no such file yet
        assert agent_read is None
        write_atomically(a.root / DAILY, header + "- a note\n")
        await eventually(
            lambda: b.read(DAILY) == header + "- a note\n", what="b rendered a's new file"
        )
        # b's agent writes its own first version, from what it read (nothing), over the render
        (write_atomically if atomic else write_in_place)(b.root / DAILY, header + "- b note\n")
        want = {*header.splitlines(), "- a note", "- b note"}
        await eventually(
            lambda: [want, want]
            == [set((node.read(DAILY) or "").splitlines()) for node in (a, b)]
            and a.read(DAILY) == b.read(DAILY)
            and len((a.read(DAILY) or "").splitlines()) == len(want),
            what="both notes on both nodes, the header once",
        )


async def test_a_new_file_written_after_a_peer_revived_a_deleted_one_keeps_the_peers_lines(
    tmp_path: Path,
) -> None:
    """The same after a deletion: the file is gone on b, a's agent writes it again, b renders
    it, and b's agent (which saw the file gone) writes a new file over the render."""
    async with two_nodes(tmp_path) as (a, b):
        write_atomically(b.root / DAILY, "- old note\n")
        await eventually(lambda: a.read(DAILY) == "- old note\n", what="seed")
        os.unlink(b.root / DAILY)
        await eventually(lambda: a.read(DAILY) is None, what="the deletion reached a")
        agent_read = b.read(DAILY)  # b's agent sees the file gone
        assert agent_read is None
        write_atomically(a.root / DAILY, "- a note\n")
        await eventually(lambda: b.read(DAILY) == "- a note\n", what="b rendered a's new file")
        write_atomically(b.root / DAILY, "- b note\n")
        await eventually(
            lambda: {"- a note", "- b note"}
            == set((a.read(DAILY) or "").splitlines())
            == set((b.read(DAILY) or "").splitlines()),
            what="both notes on both nodes",
        )


async def test_a_rendered_file_the_agent_read_and_cut_stays_cut(tmp_path: Path) -> None:
    """The agent that did read the render and removed a line (keeping more than it removed:
    a write that keeps as many lines as it removes could as well be a new file that happens to
    repeat a line, and then nothing is removed): the removal stands."""
    async with two_nodes(tmp_path) as (a, b):
        rendered = "# 2026-11-25\n- a note\n- a typo\n"
        write_atomically(a.root / DAILY, rendered)
        await eventually(lambda: b.read(DAILY) == rendered, what="rendered")
        want = "# 2026-11-25\n- a note\n- b note\n"
        write_atomically(b.root / DAILY, want)
        await eventually(lambda: a.read(DAILY) == want == b.read(DAILY), what="the cut stands")


async def test_a_displaced_write_from_a_read_before_the_replaced_render_keeps_what_came_since(
    tmp_path: Path,
) -> None:
    """b's agent reads, a's lines are rendered twice, and b's agent writes to the file the second
    render takes away (displaced, merged later as a write based on what that render replaced).
    The agent's read is older than that: the line the first render added must stay."""
    async with two_nodes(tmp_path) as (a, b):
        lines = ["- a one\n", "- a two\n", "- a three\n"]
        write_atomically(a.root / DAILY, lines[0])
        await eventually(lambda: b.read(DAILY) == lines[0], what="first render")
        agent_read = b.read(DAILY)
        write_atomically(a.root / DAILY, "".join(lines[:2]))
        await eventually(lambda: b.read(DAILY) == "".join(lines[:2]), what="second render")
        replaced = b.read(DAILY)
        write_atomically(a.root / DAILY, "".join(lines))
        await eventually(lambda: b.read(DAILY) == "".join(lines), what="third render")
        assert agent_read is not None and replaced is not None
        # What the displaced watch hands over once the agent closed the old file (displaced.py).
        handle = cast(Displaced, SimpleNamespace(rel=DAILY, expected=replaced, keep=False))
        await b.node._merge_displaced(handle, agent_read + "- b note\n")
        want = {"- a one", "- a two", "- a three", "- b note"}
        await eventually(
            lambda: [want, want] == [set((n.read(DAILY) or "").splitlines()) for n in (a, b)],
            what="every line on both nodes",
        )

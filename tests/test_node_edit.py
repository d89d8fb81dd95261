"""`Node.edit`: an agent's append made as a CRDT edit of the document. Edits made at the same
moment on two nodes, and an agent's own file write the node has not read yet, are all kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from node_harness import eventually, two_nodes, write_atomically

from swarm.memory.edits import plan_append

SEED = "## Decisions\n- first\n\n## Notes\n- n\n"


def under(section: str, text: str) -> Callable[[str], str]:
    return lambda current: plan_append(current, text, section).content


async def test_appends_at_the_same_moment_on_two_nodes_both_stay_in_the_section(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path) as (a, b):
        await asyncio.to_thread(write_atomically, a.root / "MEMORY.md", SEED)
        await eventually(lambda: b.read("MEMORY.md") == SEED, what="seed on b")
        # Neither edit has seen the other: both run before any message is delivered.
        await asyncio.gather(
            a.node.edit("MEMORY.md", under("Decisions", "- from a")),
            b.node.edit("MEMORY.md", under("Decisions", "- from b")),
        )
        await eventually(
            lambda: a.read("MEMORY.md") == b.read("MEMORY.md")
            and "- from a" in (a.read("MEMORY.md") or "")
            and "- from b" in (a.read("MEMORY.md") or ""),
            what="both edits on both nodes",
        )
        lines = (a.read("MEMORY.md") or "").splitlines()
        assert lines[:2] == ["## Decisions", "- first"]
        assert sorted(lines[2:4]) == ["- from a", "- from b"]
        assert lines[4:] == ["", "## Notes", "- n"]


async def test_an_agent_write_not_yet_read_is_kept_beside_the_edit(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        await asyncio.to_thread(write_atomically, a.root / "MEMORY.md", SEED)
        await eventually(lambda: a.node.docs.get("MEMORY.md") is not None, what="a ingested")
        await eventually(lambda: b.read("MEMORY.md") == SEED, what="seed on b")
        # The agent appends to the file itself; before the node reads it, an edit arrives.
        await asyncio.to_thread(
            write_atomically, a.root / "MEMORY.md", SEED + "- agent wrote this\n"
        )
        await a.node.edit("MEMORY.md", under("Decisions", "- through the api"))
        await a.node.ingest("MEMORY.md")
        await eventually(
            lambda: all(
                "- agent wrote this" in (n.read("MEMORY.md") or "")
                and "- through the api" in (n.read("MEMORY.md") or "")
                for n in (a, b)
            ),
            what="both on both nodes",
        )
        assert a.read("MEMORY.md") == b.read("MEMORY.md")

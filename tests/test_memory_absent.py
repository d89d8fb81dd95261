"""Merge rules for a write whose agent may have read the file as absent (the empty version among
the bases, see `Node._record_absent`): it adds its lines and removes none it never saw, while a
cut made on a version it did read still stands."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.memory import MemoryDoc
from swarm.memory.merge import choose_base

ABSENT = ""


def _text(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _doc(lines: list[str]) -> MemoryDoc:
    """A document holding `lines`, made by a peer (this node never wrote to it)."""
    peer = MemoryDoc("memory/day.md")
    peer.write(_text(lines))
    doc = MemoryDoc("memory/day.md")
    doc.apply(peer.encode_state())
    return doc


_peer_lines = st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True).map(
    lambda ns: [f"- peer {n}" for n in ns]
)
_agent_lines = st.lists(st.integers(0, 10_000), min_size=1, max_size=6, unique=True).map(
    lambda ns: [f"- agent {n}" for n in ns]
)


@settings(max_examples=150, deadline=None)
@given(
    peer=_peer_lines,
    agent=_agent_lines,
    header=st.booleans(),
    data=st.data(),
)
def test_a_write_from_the_absent_file_removes_no_line_it_never_saw(
    peer: list[str], agent: list[str], header: bool, data: st.DataObject
) -> None:
    """The node rendered some of the peer's lines (versions growing to what it holds now) after
    the agent read no file; the agent writes its own new file (maybe starting with the same
    header line as the peer's). Every peer line stays, every agent line arrives."""
    peer = ["# 2026-11-25", *peer] if header else peer
    doc = _doc(peer)
    sizes = data.draw(st.lists(st.integers(1, len(peer)), unique=True, max_size=4), label="sizes")
    renders = [_text(peer[:n]) for n in sorted(sizes)]
    if not renders or data.draw(st.booleans(), label="newest render is all of it"):
        renders.append(doc.content)
    written = _text(["# 2026-11-25", *agent] if header else agent)
    doc.write(written, [*reversed(renders), ABSENT])
    lines = doc.content.splitlines()
    assert set(peer) | set(agent) <= set(lines)
    assert len(lines) == len(set(lines))  # a shared header is not doubled


@settings(max_examples=150, deadline=None)
@given(lines=_peer_lines, agent=_agent_lines, data=st.data())
def test_a_cut_made_on_a_rendered_version_stands_with_the_absent_file_among_the_bases(
    lines: list[str], agent: list[str], data: st.DataObject
) -> None:
    """The agent read the render (all the node holds), removed fewer lines than it kept, and
    added its own: the removed lines are gone, as they were before the absence was a base."""
    doc = _doc(lines)
    cut = data.draw(
        st.lists(st.sampled_from(lines), unique=True, max_size=(len(lines) - 1) // 2),
        label="cut",
    )
    kept = [line for line in lines if line not in cut]
    doc.write(_text(kept + agent), [doc.content, ABSENT])
    assert doc.content == _text(kept + agent)


def test_the_absent_file_wins_a_tie_with_a_render() -> None:
    render = "# 2026-11-25\n- peer note\n"
    written = "# 2026-11-25\n- agent note\n"
    assert choose_base(written, [render, render, ABSENT]) == ABSENT
    assert choose_base(written, [render, render]) == render  # as before without it

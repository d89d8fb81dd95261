"""Stale whole-file rewrites: finding what a write was based on, and merging it three ways.

Agents read a file, think, then write the whole file back. If a remote edit was rendered in between,
diffing the write against the current text would delete that edit (the lost update users report on
OpenClaw). So a write is diffed against the version it was *based on*, and that change is merged
with everything that happened since.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pycrdt

from swarm.memory.diff import LineEdit, edit_distance, line_edits
from swarm.memory.text import split_lines
from swarm.memory.ytext import apply_line_edits

# Fixed client ids inside the throw-away merge document: the base, then the concurrent sides. The
# lower id sorts first where both sides insert at one spot, so what the swarm already holds comes
# before the stale writer's lines.
_BASE_CLIENT, _THEIRS_CLIENT, _OURS_CLIENT = 1, 2, 3


def choose_base(written: str, candidates: Sequence[str]) -> str:
    """The candidate version the write most plausibly started from.

    `candidates` is the current text first, then versions the agent may have read, newest first
    (never one older than the agent's own last write: an agent always sees what it wrote). The
    true base is the one the write changes least: a stale read "deletes" every line added since
    and "re-adds" every line removed since, while the agent's own change is the same whatever the
    base. On a tie between the current text and an older version, the older one wins: merging
    from it keeps what happened since, while diffing against the current text would delete it, and
    no edit may be lost on a guess. Among older versions the newest wins, except the empty
    text (the file as absent, or empty: see `Node._record_absent`): it wins every tie, since a
    write merged from it removes nothing (a new file's header line that a peer's new file has
    too is no sign that the agent read the peer's file).
    """
    new_lines = _keys(written)
    current_cost = edit_distance(_keys(candidates[0]), new_lines)
    if current_cost == 0:
        return candidates[0]
    best, best_cost = candidates[0], current_cost + 1  # any older version at <= cost beats it
    for candidate in candidates[1:]:
        cost = edit_distance(_keys(candidate), new_lines)
        if cost < best_cost or (cost == best_cost and not candidate):
            best, best_cost = candidate, cost
            if cost == 0:
                break
    return best if best_cost <= current_cost else candidates[0]


def merge3(base: str, ours: str, theirs: str) -> str:
    """Merge two descendants of `base` with CRDT semantics: each side's line edits are replayed as
    concurrent operations on a scratch document, so the result is exactly what two nodes making
    those edits at the same time would converge to (whole lines, nothing either side added is
    lost)."""
    base_lines = split_lines(base)
    root: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_BASE_CLIENT)
    root_text = root.get("text", type=pycrdt.Text)
    root_text.insert(0, base)
    seed = root.get_update()

    def replay(client: int, edits: list[LineEdit]) -> bytes:
        fork: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
        fork_text = fork.get("text", type=pycrdt.Text)
        fork.apply_update(seed)
        before = fork.get_state()
        with fork.transaction():
            apply_line_edits(fork_text, base_lines, edits)
        return fork.get_update(before)

    their_lines = split_lines(theirs)
    # Lines the swarm added since the base that the writer also has were seen by the writer, not
    # written again: replaying them from both sides would double them.
    already_added = Counter(_key(line) for line in their_lines)
    already_added.subtract(_key(line) for line in base_lines)
    our_edits = []
    for edit in line_edits(base_lines, split_lines(ours)):
        kept = []
        for line in edit.lines:
            if already_added[_key(line)] > 0:
                already_added[_key(line)] -= 1
            else:
                kept.append(line)
        if kept or edit.stop > edit.start:
            our_edits.append(LineEdit(edit.start, edit.stop, tuple(kept)))

    merged: pycrdt.Doc[Any] = pycrdt.Doc()
    merged_text = merged.get("text", type=pycrdt.Text)
    merged.apply_update(seed)
    merged.apply_update(replay(_THEIRS_CLIENT, line_edits(base_lines, their_lines)))
    merged.apply_update(replay(_OURS_CLIENT, our_edits))
    return str(merged_text)


def _key(line: str) -> str:
    """A line without its terminator: "\n" and "\r\n" endings of one line are the same line."""
    return line.rstrip("\r\n")


def _keys(text: str) -> list[str]:
    return [_key(line) for line in split_lines(text)]

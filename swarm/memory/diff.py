"""Line-granular edit scripts between two stored (fully terminated) texts.

A changed line is replaced as a whole line, so two nodes editing one line at the same time end with
both versions as whole lines instead of interleaved characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher


@dataclass(frozen=True)
class LineEdit:
    """Replace old lines [start, stop) with `lines` (an insertion when start == stop)."""

    start: int
    stop: int
    lines: tuple[str, ...]


def _common_affixes(old: list[str], new: list[str]) -> tuple[int, int]:
    """Lengths of the common line prefix and suffix; trimming them first keeps the usual edit
    (an append, one changed line) linear even in a large file."""
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    return head, tail


def line_edits(old: list[str], new: list[str]) -> list[LineEdit]:
    """The smallest set of whole-line edits turning `old` into `new`, in ascending order."""
    head, tail = _common_affixes(old, new)
    old_mid = old[head : len(old) - tail]
    new_mid = new[head : len(new) - tail]
    if not old_mid and not new_mid:
        return []
    if not old_mid or not new_mid:
        return [LineEdit(head, head + len(old_mid), tuple(new_mid))]
    matcher = SequenceMatcher(None, old_mid, new_mid, autojunk=False)
    return [
        LineEdit(head + i1, head + i2, tuple(new_mid[j1:j2]))
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def edit_distance(old: list[str], new: list[str]) -> int:
    """Lines removed plus lines added by the change from `old` to `new`."""
    return sum(edit.stop - edit.start + len(edit.lines) for edit in line_edits(old, new))


def insertions_only(old: list[str], new: list[str]) -> list[LineEdit]:
    """Edits that add what `new` has and `old` lacks, deleting nothing (a union of lines)."""
    return [
        LineEdit(edit.stop, edit.stop, edit.lines) for edit in line_edits(old, new) if edit.lines
    ]


def apply_edits(old: list[str], edits: list[LineEdit]) -> list[str]:
    """Apply ascending, non-overlapping edits to a list of lines (the reference semantics)."""
    out: list[str] = []
    pos = 0
    for edit in edits:
        out.extend(old[pos : edit.start])
        out.extend(edit.lines)
        pos = edit.stop
    out.extend(old[pos:])
    return out

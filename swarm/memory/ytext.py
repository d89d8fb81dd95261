"""Applying whole-line edits to a pycrdt `Text`, converting line indices to UTF-8 byte offsets."""

from __future__ import annotations

import pycrdt

from swarm.memory.diff import LineEdit
from swarm.memory.text import byte_offsets


def apply_line_edits(text: pycrdt.Text, old_lines: list[str], edits: list[LineEdit]) -> None:
    """Apply edits computed against `old_lines` (which must equal the text's content).

    Edits run from the last to the first so earlier byte offsets stay valid. A replacement inserts
    the new lines before deleting the old ones: the insert then anchors on the line before, exactly
    where a concurrent replacement of the same line by another node anchors too, so the two
    versions end up side by side as whole lines.
    """
    offsets = byte_offsets(old_lines)
    for edit in reversed(edits):
        start = offsets[edit.start]
        removed = offsets[edit.stop] - start
        inserted = "".join(edit.lines)
        if inserted:
            text.insert(start, inserted)
        if removed:
            begin = start + len(inserted.encode("utf-8"))
            del text[begin : begin + removed]

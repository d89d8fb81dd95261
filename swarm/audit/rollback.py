"""`swarm rollback`: an earlier content of a file, or a file without one node's recent edits, made
the current content as a new edit of this node (so history is kept and a rollback can itself be
rolled back; nodes offline meanwhile merge it when back).

The target is computed from the history this node holds (swarm/audit/history.py); a moment before
it is refused. Undoing a node reverts each of its edits since then, newest first, as a three-way
merge onto the current text: lines others wrote (even next to, or over, that node's lines) stay.
"""

from __future__ import annotations

import difflib
import hashlib

from swarm.audit.history import History, HistoryError
from swarm.memory.merge import merge3


def text_to(history: History, moment: float) -> str:
    """The file as it was at `moment`; HistoryError if it did not exist then."""
    text = history.text_at(moment)
    if text is None:
        raise HistoryError(
            f"{history.path} did not exist then on this node; delete the file to get there"
        )
    return text


def text_without(history: History, current: str, node: str, since: float) -> str:
    """`current` with every edit `node` made since `since` reverted."""
    history.text_at(since)  # refuses a moment before the held history
    result = current
    for edit in reversed(history.edits):
        if edit.at is None or edit.at < since:
            break
        if edit.nodes == (node,):
            result = merge3(edit.after or "", edit.before or "", result)
    return result


def unified(path: str, current: str, target: str) -> str:
    """The change a rollback makes, as a unified diff ('' when none)."""
    lines = difflib.unified_diff(
        current.splitlines(keepends=True),
        target.splitlines(keepends=True),
        f"{path} (now)",
        f"{path} (after the rollback)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def digest(text: str) -> str:
    """Names the content a preview was computed from: the rollback applies only to it."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

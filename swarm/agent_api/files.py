"""The memory folder seen directly: reading, listing and searching files, and editing one in place
when no daemon can take the edit (or the file is private and never goes to the daemon).

A direct edit reads the file, computes the new text and replaces the file atomically, all under
an exclusive flock on `<state_dir>/edit.lock`: two `swarm remember` calls at once both keep their
lines. It never overwrites a write it did not see: the replace is refused if the file changed in
between, and the edit is made again on the new text.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from swarm.agent_api.paths import Kind, MemoryPaths
from swarm.bridge import RenderConflict, RenderError, read_stable, write_atomic
from swarm.memory.edits import Placement

EDIT_LOCK = "edit.lock"
_EDIT_ATTEMPTS = 20
SEARCH_CONTEXT = 2  # lines shown before and after a match
SEARCH_LIMIT = 200  # matches returned at most


class FileProblem(ValueError):
    """A file that cannot be read or written as asked; the message is one line."""


def read_text(root: Path, rel: str, max_bytes: int) -> str | None:
    """The file's text, or None when it does not exist; FileProblem if it is not readable text."""
    result = read_stable(root / rel, root=root, max_bytes=max_bytes, settle=0.0)
    if result.missing:
        return None
    if result.text is None:
        raise FileProblem(f"{rel}: {result.problem or 'unreadable'}")
    return result.text


def list_files(paths: MemoryPaths) -> list[dict[str, Any]]:
    """Every memory file with its size, last change (local time) and whether it syncs."""
    listed = []
    for rel, kind in paths.files():
        try:
            st = (paths.root / rel).stat()
        except OSError:
            continue  # removed while listing
        listed.append(
            {
                "path": rel,
                "size": st.st_size,
                "modified": datetime.fromtimestamp(st.st_mtime).astimezone().isoformat(
                    timespec="seconds"
                ),
                "private": kind is Kind.PRIVATE,
            }
        )
    return listed


@dataclass(frozen=True)
class Match:
    path: str
    line: int  # 1-based
    text: str
    before: list[str]
    after: list[str]


def compile_query(query: str, regex: bool) -> re.Pattern[str]:
    """A plain query matches case-insensitively as a substring; a regex is a Python regex."""
    if not query:
        raise FileProblem("the query is empty")
    if not regex:
        return re.compile(re.escape(query), re.IGNORECASE)
    try:
        return re.compile(query)
    except re.error as exc:
        raise FileProblem(f"not a valid regular expression: {exc}") from None


def search_text(path: str, text: str, pattern: re.Pattern[str]) -> Iterator[Match]:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if pattern.search(line):
            yield Match(
                path,
                index + 1,
                line,
                lines[max(0, index - SEARCH_CONTEXT) : index],
                lines[index + 1 : index + 1 + SEARCH_CONTEXT],
            )


@contextlib.contextmanager
def edit_lock(state_dir: Path) -> Iterator[None]:
    """Exclusive across processes (`swarm remember`, MCP servers, the daemon's private edits)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(state_dir / EDIT_LOCK, "ab")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise FileProblem(f"cannot lock {state_dir / EDIT_LOCK}: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def edit_file(
    root: Path,
    rel: str,
    change: Callable[[str], Placement],
    *,
    state_dir: Path,
    max_bytes: int,
) -> Placement:
    """Apply `change` (current text -> placement) to the file itself, atomically, under the edit
    lock. A missing file counts as empty and is created (with its folders)."""
    with edit_lock(state_dir):
        for _ in range(_EDIT_ATTEMPTS):
            current = read_text(root, rel, max_bytes)
            placed = change(current or "")
            if current is not None and placed.content == current:
                return placed
            try:
                written = write_atomic(
                    root / rel,
                    placed.content,
                    expected=current,
                    expect_missing=current is None,
                    root=root,
                )
            except RenderConflict:
                time.sleep(0.02)  # someone else wrote it meanwhile: edit their version
                continue
            except RenderError as exc:
                raise FileProblem(str(exc)) from None
            if written.displaced is not None:
                # A writer opened the old file as it was replaced: it stays on disk, and the
                # daemon merges it when it starts (swarm/bridge/displaced.py).
                written.displaced.close()
            return placed
    raise FileProblem(f"{rel} keeps changing: the edit was not made, try again")

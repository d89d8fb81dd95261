"""Which paths of the memory folder sync.

Patterns use gitignore syntax (pathspec). As in git, a file inside an ignored folder stays
ignored even when a later `!pattern` names it: the scan prunes ignored folders, so accepting
such a file would make the watcher and the scan disagree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from pathspec import GitIgnoreSpec

from swarm.bridge.pathrules import path_problem

DEFAULT_INCLUDE: tuple[str, ...] = ("*.md",)
DEFAULT_IGNORE: tuple[str, ...] = (
    ".swarm/",
    ".git/",
    "memory/runtime/",
    "*.swp",
    "*.swo",
    "*~",
    ".#*",
    r"\#*#",  # a leading "#" starts a comment in gitignore syntax
    "*.tmp",
    ".*.swarm-tmp*",
    "4913",
    ".DS_Store",
)
# Never syncable, whatever .swarmignore negates: swarm's own state and its render temp files.
TEMP_MARK = ".swarm-tmp"
PROTECTED_IGNORE: tuple[str, ...] = (".swarm/", ".git/", f".*{TEMP_MARK}*")
SWARMIGNORE = ".swarmignore"


class PathPolicy:
    """Decides whether a POSIX path relative to the memory folder is synced."""

    def __init__(
        self,
        root: Path,
        *,
        include: Sequence[str] = DEFAULT_INCLUDE,
        ignore: Sequence[str] = (),
        state_dir: Path | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self._real_root = Path(os.path.realpath(root))
        self._include = GitIgnoreSpec.from_lines(list(include))
        protected = list(PROTECTED_IGNORE)
        if state_dir is not None:
            state_rel = self.relative(Path(os.path.abspath(state_dir)))
            if state_rel is not None:
                protected.append("/" + _escape(state_rel) + "/")
        self._protected = GitIgnoreSpec.from_lines(protected)
        self._extra_ignore = tuple(ignore)
        self.generation = 0
        self._ignore = self._build_ignore()

    def reload(self) -> None:
        """Re-read `.swarmignore` after it changed."""
        self._ignore = self._build_ignore()
        self.generation += 1  # lets callers that cache `accepts` notice

    def accepts(self, rel: str) -> bool:
        """True when `rel` names a file inside the root that is included and not ignored (by
        its name alone)."""
        name = rel.rpartition("/")[2]
        if name.startswith(".") and TEMP_MARK in name:
            return False  # a render's temp file (protected below too): every render makes one
        if path_problem(rel) is not None:
            return False
        if not self._include.match_file(rel) or self._ignored(rel):
            return False
        # Links are not looked at here: an answer about the disk would be stale by the time of
        # the I/O. Reads and renders refuse them at the moment they happen (folder.py).
        return not any(self.ignores_dir(parent) for parent in _parent_dirs(rel))

    def ignores_dir(self, rel_dir: str) -> bool:
        """True when the folder `rel_dir` (POSIX, relative) is ignored as a whole."""
        return self._ignored(rel_dir.rstrip("/") + "/")

    def relative(self, path: Path) -> str | None:
        """The POSIX path of `path` relative to the root, or None when it is not inside."""
        absolute = Path(os.path.abspath(path))
        for base in (self.root, self._real_root):
            try:
                rel = absolute.relative_to(base)
            except ValueError:
                continue
            posix = rel.as_posix()
            return None if posix == "." else posix
        return None

    def _ignored(self, rel: str) -> bool:
        return self._protected.match_file(rel) or self._ignore.match_file(rel)

    def _build_ignore(self) -> GitIgnoreSpec:
        return GitIgnoreSpec.from_lines(
            [*DEFAULT_IGNORE, *self._extra_ignore, *_read_lines(self.root / SWARMIGNORE)]
        )


def _parent_dirs(rel: str) -> Iterable[str]:
    parents = PurePosixPath(rel).parents
    return (p.as_posix() for p in reversed(parents) if p.as_posix() != ".")


def _escape(rel: str) -> str:
    return "".join("\\" + ch if ch in "*?[]!#\\" else ch for ch in rel)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []

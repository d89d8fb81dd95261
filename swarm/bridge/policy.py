"""Which paths of the memory folder sync, and why the others do not.

Patterns use gitignore syntax (pathspec). As in git, a file inside an ignored folder stays
ignored even when a later `!pattern` names it: the scan prunes ignored folders, so accepting
such a file would make the watcher and the scan disagree. Both ask the same two questions,
`folder_reason` and `file_reason` (`ignores_dir` and `accepts` are their yes/no): the settings
(`include`, `ignore`, `private`, `.swarmignore`) first, then the workspace's defaults
(`workspace.py`: nested repositories, dependencies, virtual environments, build and cache
folders, `.gitignore`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from pathspec import GitIgnoreSpec

from swarm import defaults
from swarm.bridge.pathrules import path_problem
from swarm.bridge.workspace import Workspace

DEFAULT_INCLUDE: tuple[str, ...] = defaults.INCLUDE
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

# Reasons a path does not sync, as status shows them (besides the workspace's, workspace.py).
IGNORED = "ignored (ignore setting, .swarmignore or editor temp file)"
PRIVATE = "private (never leaves this node)"
NOT_INCLUDED = "not a memory file (include)"
SWARM_STATE = "swarm's own state"


class PathPolicy:
    """Decides whether a POSIX path relative to the memory folder is synced."""

    def __init__(
        self,
        root: Path,
        *,
        include: Sequence[str] = DEFAULT_INCLUDE,
        ignore: Sequence[str] = (),
        private: Sequence[str] = (),
        state_dir: Path | None = None,
        workspace_defaults: bool = True,
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
        self._private = GitIgnoreSpec.from_lines(list(private))
        self.workspace = Workspace(self.root) if workspace_defaults else None
        self.generation = 0
        self._ignore = self._build_ignore()

    def reload(self) -> None:
        """Re-read `.swarmignore`, and look at the disk again for the workspace's defaults
        (after `.swarmignore`, a `.gitignore`, a `.git` or a `pyvenv.cfg` changed)."""
        self._ignore = self._build_ignore()
        if self.workspace is not None:
            self.workspace.forget()
        self.generation += 1  # lets callers that cache `accepts` notice

    def accepts(self, rel: str) -> bool:
        """True when `rel` names a file inside the root that is included and not ignored (by
        its name and the workspace's folders; links are not looked at here: an answer about the
        disk would be stale by the time of the I/O, reads and renders refuse them then)."""
        return self.file_reason(rel) is None

    def ignores_dir(self, rel_dir: str) -> bool:
        """True when the folder `rel_dir` (POSIX, relative) is ignored as a whole."""
        return self.folder_reason(rel_dir) is not None

    def file_reason(self, rel: str) -> str | None:
        """Why the file `rel` does not sync (its own name, then its folders), None if it does."""
        name = rel.rpartition("/")[2]
        if name.startswith(".") and TEMP_MARK in name:
            return SWARM_STATE  # a render's temp file (protected below too): every render makes one
        problem = path_problem(rel)
        if problem is not None:
            return problem
        reason = self._name_reason(rel)
        if reason is None and not self._include.match_file(rel):
            reason = NOT_INCLUDED
        if reason is None:
            reason = next(filter(None, map(self.folder_reason, _parent_dirs(rel))), None)
        if reason is None and self.workspace is not None:
            reason = self.workspace.file_reason(rel)
        return reason

    def folder_reason(self, rel_dir: str) -> str | None:
        """Why the folder `rel_dir` (POSIX, relative) is skipped as a whole, None if not."""
        rel_dir = rel_dir.rstrip("/")
        reason = self._name_reason(rel_dir + "/")
        if reason is None and self.workspace is not None:
            reason = self.workspace.folder_reason(rel_dir)
        return reason

    def _name_reason(self, rel: str) -> str | None:
        if self._protected.match_file(rel):
            return SWARM_STATE
        if self._private.match_file(rel):
            return PRIVATE
        if self._ignore.match_file(rel):
            return IGNORED
        return None

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

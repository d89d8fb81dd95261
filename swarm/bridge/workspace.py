"""What an agent's workspace holds besides its memory, and is skipped by default.

An OpenClaw workspace is the agent's working directory: it clones repositories and installs
packages there. Their `README.md` and docs are not the agent's memory, and syncing them would
fill Redis with other people's files. So, by default, a folder is not entered when it is:

- a nested repository: it holds its own `.git` (a folder, or the file of a worktree/submodule);
- dependencies: `node_modules/`, `bower_components/`, `jspm_packages/`;
- a virtual environment: it holds `pyvenv.cfg` (whatever its name), or is named `.venv/`,
  `venv/` or `.conda/`;
- build output or a cache: `build/`, `dist/`, `target/`, `out/`, `_build/`, `__pycache__/`,
  `*.egg-info/`, `.cache/`, `.tox/`, `.nox/`, `.mypy_cache/`, `.pytest_cache/`, `.ruff_cache/`,
  `.hypothesis/`, `.gradle/`, `.next/`, `.nuxt/`, `.svelte-kit/`, `.parcel-cache/`, `.turbo/`,
  `.terraform/`, `coverage/`, `htmlcov/`;

and the workspace's `.gitignore` files are honoured (each in its folder, as git reads them).

The OpenClaw layout itself (`AGENTS.md`, `SOUL.md`, `USER.md`, `IDENTITY.md`, `TOOLS.md`,
`HEARTBEAT.md`, `MEMORY.md`, `memory/`, `skills/`) always syncs by these rules: a `.gitignore`
that keeps the memory out of git does not keep it out of the swarm, and nothing under `memory/`
(the agent's own notes: a topic may well be called `build`) is taken for a repository, a
dependency or a build folder. `.swarmignore`, `ignore` and `private` still apply to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from pathspec import GitIgnoreSpec

GITIGNORE = ".gitignore"
LAYOUT_FILES = frozenset(
    {"AGENTS.md", "SOUL.md", "USER.md", "IDENTITY.md", "TOOLS.md", "HEARTBEAT.md", "MEMORY.md"}
)
LAYOUT_FOLDERS = ("memory", "skills")
_NOTES_FOLDER = "memory"  # the agent's own notes: no workspace heuristic applies inside

# Reasons, as status shows them.
NESTED_REPO = "nested git repository"
DEPENDENCIES = "dependencies"
VIRTUAL_ENV = "virtual environment"
BUILD_OR_CACHE = "build or cache folder"
GITIGNORED = ".gitignore"

_FOLDER_NAMES: dict[str, str] = {
    **dict.fromkeys(("node_modules", "bower_components", "jspm_packages"), DEPENDENCIES),
    **dict.fromkeys((".venv", "venv", ".conda"), VIRTUAL_ENV),
    **dict.fromkeys(
        (
            "build", "dist", "target", "out", "_build", "__pycache__", ".cache", ".tox", ".nox",
            ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".gradle", ".next",
            ".nuxt", ".svelte-kit", ".parcel-cache", ".turbo", ".terraform", "coverage", "htmlcov",
        ),
        BUILD_OR_CACHE,
    ),
}  # fmt: skip
_MARKERS = ((".git", NESTED_REPO), ("pyvenv.cfg", VIRTUAL_ENV))
MARKER_NAMES = frozenset({GITIGNORE, *(name for name, _ in _MARKERS)})
_CACHE_LIMIT = 10_000  # folders remembered (a huge tree cannot grow memory without bound)


def in_layout(rel: str) -> bool:
    """True for the OpenClaw layout's files and everything under its folders."""
    top = rel.split("/", 1)[0]
    return rel in LAYOUT_FILES or (top in LAYOUT_FOLDERS and "/" in rel)


class Workspace:
    """The default skips of one workspace folder; the answers about the disk (markers, the
    `.gitignore` files) are remembered until `forget` (a marker or `.gitignore` changed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._markers: dict[str, str | None] = {}
        self._gitignores: dict[str, GitIgnoreSpec | None] = {}

    def forget(self) -> None:
        self._markers.clear()
        self._gitignores.clear()

    def folder_reason(self, rel_dir: str) -> str | None:
        """Why the folder `rel_dir` (POSIX, relative, not the root) is skipped, or None."""
        if rel_dir == _NOTES_FOLDER or rel_dir.startswith(_NOTES_FOLDER + "/"):
            return None
        name = rel_dir.rpartition("/")[2]
        reason = _FOLDER_NAMES.get(name)
        if reason is None and name.endswith(".egg-info"):
            reason = BUILD_OR_CACHE
        if reason is None:
            reason = self._marker(rel_dir)
        if reason is None and not in_layout(rel_dir + "/x") and self.gitignored(rel_dir, True):
            reason = GITIGNORED
        return reason

    def file_reason(self, rel: str) -> str | None:
        """Why the file `rel` is skipped by its own name (its folders are asked apart)."""
        if not in_layout(rel) and self.gitignored(rel, False):
            return GITIGNORED
        return None

    def gitignored(self, rel: str, is_dir: bool) -> bool:
        """Whether git ignores `rel`: every `.gitignore` from the root down to its folder, each
        matching paths relative to its own folder, the deepest match winning."""
        parts = rel.split("/")
        verdict: bool | None = None
        for depth in range(len(parts)):
            spec = self._gitignore("/".join(parts[:depth]))
            if spec is None:
                continue
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            include = spec.check_file(sub).include
            if include is not None:
                verdict = include
        return bool(verdict)

    def _marker(self, rel_dir: str) -> str | None:
        if rel_dir in self._markers:
            return self._markers[rel_dir]
        found = None
        folder = self.root / rel_dir
        for name, reason in _MARKERS:
            if os.path.lexists(folder / name):
                found = reason
                break
        _remember(self._markers, rel_dir, found)
        return found

    def _gitignore(self, rel_dir: str) -> GitIgnoreSpec | None:
        if rel_dir in self._gitignores:
            return self._gitignores[rel_dir]
        file = self.root / rel_dir / GITIGNORE if rel_dir else self.root / GITIGNORE
        try:
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            spec = None
        else:
            spec = GitIgnoreSpec.from_lines(lines) if lines else None
        _remember(self._gitignores, rel_dir, spec)
        return spec


_V = TypeVar("_V")


def _remember(cache: dict[str, _V], key: str, value: _V) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value

"""Which paths an agent may name: memory files inside the folder, synced or private.

`memory/today` names the daily file `memory/YYYY-MM-DD.md` of the local date. A path that is
absolute, climbs out with `..`, or is not a memory file (not matched by `include`, or ignored) is
refused with a one-line reason. Symbolic links are refused by the reads and writes themselves, at
the moment of I/O (swarm/bridge/folder.py): a check here would be stale by then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path, PurePosixPath

from swarm.bridge import PathPolicy, scan

TODAY = "memory/today"


class PathRefused(ValueError):
    """A path the agent API will not touch; the message says why, in one line."""


class Kind(StrEnum):
    SYNCED = "synced"  # shared with the swarm
    PRIVATE = "private"  # readable and writable here, never sent anywhere


def daily_path(day: date) -> str:
    return f"memory/{day.isoformat()}.md"


@dataclass(frozen=True)
class MemoryPaths:
    """The daemon's path rules (include, ignore, private) for one memory folder."""

    root: Path
    include: tuple[str, ...]
    ignore: tuple[str, ...]
    private: tuple[str, ...]
    state_dir: Path
    today: Callable[[], date] = date.today

    @property
    def _synced(self) -> PathPolicy:
        return PathPolicy(
            self.root,
            include=self.include,
            ignore=(*self.ignore, *self.private),
            state_dir=self.state_dir,
        )

    @property
    def _memory(self) -> PathPolicy:
        return PathPolicy(
            self.root, include=self.include, ignore=self.ignore, state_dir=self.state_dir
        )

    def resolve(self, raw: str) -> tuple[str, Kind]:
        """The clean relative path `raw` names, and whether it syncs; PathRefused if neither."""
        rel = self.clean(raw)
        if not self._memory.accepts(rel):
            raise PathRefused(self._why_refused(rel))
        return rel, (Kind.SYNCED if self._synced.accepts(rel) else Kind.PRIVATE)

    def clean(self, raw: str) -> str:
        text = raw.strip()
        if not text:
            raise PathRefused("no path given: name a file such as MEMORY.md")
        if text == TODAY:
            return daily_path(self.today())
        if "\x00" in text or "\\" in text:
            raise PathRefused(f"{raw!r}: not a usable path")
        if text.startswith(("/", "~")):
            raise PathRefused(f"{raw!r} is absolute: give a path inside the memory folder")
        pure = PurePosixPath(text)
        if ".." in pure.parts:
            raise PathRefused(f"{raw!r} leads out of the memory folder ('..')")
        return pure.as_posix()

    def _why_refused(self, rel: str) -> str:
        if PathPolicy(self.root, include=("*",), state_dir=self.state_dir).accepts(rel):
            return f"{rel} is not a memory file (memory files match {', '.join(self.include)})"
        return f"{rel} is ignored by swarm (state folder, .swarmignore or an ignore pattern)"

    def files(self) -> list[tuple[str, Kind]]:
        """Every memory file in the folder, sorted, with whether it syncs."""
        synced = self._synced
        return [
            (rel, Kind.SYNCED if synced.accepts(rel) else Kind.PRIVATE)
            for rel in scan(self.root, self._memory)
        ]

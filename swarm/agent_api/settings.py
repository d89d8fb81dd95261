"""Settings of `swarm mcp` and `swarm remember`: the daemon's own (same flags, environment and
config file), so both see the folder, its private files and its state folder as the daemon does.
The swarm name and Redis are needed only to read the swarm's status when no daemon runs."""

from __future__ import annotations

from pathlib import Path

from swarm.agent_api.paths import MemoryPaths
from swarm.config import DaemonSettings


class AgentSettings(DaemonSettings):
    swarm: str | None = None  # type: ignore[assignment]

    def memory_paths(self) -> MemoryPaths:
        return MemoryPaths(
            root=self.dir,
            include=self.include,
            ignore=self.ignore,
            private=self.private,
            state_dir=self.resolved_state_dir,
        )


def agent_settings(dir_: Path, state_dir: Path | None = None, **values: object) -> AgentSettings:
    """Settings for a folder with everything else at the daemon's defaults (tests, scripts)."""
    return AgentSettings(dir=dir_, state_dir=state_dir, **values)  # type: ignore[arg-type]

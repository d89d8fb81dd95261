"""What `swarm keygen --node` reads of the daemon's settings: where the state folder is, and the
node id if one is set (else the one the daemon keeps there)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from swarm.config import Settings, setting


class NodeKeySettings(Settings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=False)

    dir: Path | None = setting("SWARM_DIR", None)
    state_dir: Path | None = setting("SWARM_STATE_DIR", None)
    node: str | None = setting("SWARM_NODE", None)

    @property
    def resolved_state_dir(self) -> Path | None:
        if self.state_dir is not None:
            return self.state_dir
        return self.dir / ".swarm" if self.dir is not None else None

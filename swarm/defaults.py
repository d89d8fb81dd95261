"""The defaults of what an operator can set about a node, stated once: the settings
(swarm/config.py), the node's options and the bridge all take them from here."""

from __future__ import annotations

from typing import Final

DEBOUNCE_MS: Final = 30  # quiet time after a change before the watcher reports it
MAX_FILE_BYTES: Final = 4 * 1024 * 1024  # a larger file is not synced
INCLUDE: Final[tuple[str, ...]] = ("*.md",)
# Never leave the node: not ingested, not published, a remote update for them is refused.
PRIVATE: Final[tuple[str, ...]] = ("memory/private/", "*.private.md")
# Mass-delete guard: more than this share of the known files gone at once is held.
DELETE_GUARD_SHARE: Final = 0.5
# New-file budget (swarm/flood.py): more new files (or megabytes) within a minute are held.
NEW_FILES_PER_MINUTE: Final = 200
NEW_MB_PER_MINUTE: Final = 50.0

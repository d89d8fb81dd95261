"""What a folder holds that does not sync, and why: for `swarm status --files` and the status
page, from the same walk and the same policy answers as the scan (watcher.py).

Bounded: a workspace can hold thousands of files that are not memory, so only counts by reason
and the first `SAMPLE_LIMIT` paths (skipped folders first, each as one entry, `name/`) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SAMPLE_LIMIT = 25


@dataclass
class Survey:
    counts: dict[str, int] = field(default_factory=dict)  # reason -> folders and files skipped
    folders: dict[str, str] = field(default_factory=dict)  # "name/" -> reason (sample)
    files: dict[str, str] = field(default_factory=dict)  # path -> reason (sample)

    def skipped(self, rel: str, reason: str, *, folder: bool) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        sample = self.folders if folder else self.files
        if len(self.folders) + len(self.files) < SAMPLE_LIMIT or (folder and self._evict()):
            sample[rel + "/" if folder else rel] = reason

    def _evict(self) -> bool:
        """Make room for a folder by dropping a file from the sample (folders say more)."""
        if not self.files:
            return False
        del self.files[next(iter(self.files))]
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "paths": {**dict(sorted(self.folders.items())), **dict(sorted(self.files.items()))},
        }

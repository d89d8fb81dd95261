"""The mass-delete guard: many files vanishing at once (an unmounted volume, a wiped folder) are
not deleted everywhere until an operator confirms (`swarm confirm-deletes`) or they come back."""

from __future__ import annotations

import logging

from swarm.node.core import NodeCore

log = logging.getLogger("swarm.node")

CONFIRM_DELETES_FILE = "confirm-deletes"


class DeletionGuard(NodeCore):
    def _guard_deletions(self, count: int) -> bool:
        """True (and hold deletions) when `count` files vanishing at once looks like an accident:
        an unmounted volume, a wiped folder. Other nodes keep their copies until an operator
        confirms (`swarm confirm-deletes`) or the files come back."""
        if self.deletions_held is not None:
            return True
        if not self.root.is_dir():
            self._hold(f"memory folder {self.root} is missing")
            return True
        known = sum(1 for exists in self._exists.values() if exists)
        if (
            count >= self.options.delete_guard_min
            and count > known * self.options.delete_guard_share
        ):
            self._hold(f"{count} of {known} files disappeared at once")
            return True
        return False

    def _hold(self, reason: str) -> None:
        self.deletions_held = reason
        self.counters.last_error = f"deletions held: {reason}; run `swarm confirm-deletes`"
        log.error("mass-delete guard: %s; deletions are not propagated until confirmed", reason)

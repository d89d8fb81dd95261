"""The network edge of a node: which paths and documents it takes from its peers.

Anyone who can publish on the swarm's Redis can name any path and send any update. Before an
update is stored or rendered its path must pass the rules local files pass (`bridge/pathrules.py`,
then this node's policy: private, ignored and not included paths are refused), and the document
it yields must fit the file size limit. A refusal is counted by reason (the
`swarm_rejected_messages` metric), logged once per path and reason, and remembered: anti-entropy
never asks for a refused path again, and heartbeats say which paths this node refuses so that
`swarm status` does not wait for them.
"""

from __future__ import annotations

import logging
import time

from swarm.bridge import PathPolicy
from swarm.bridge.pathrules import path_problem, shown
from swarm.bridge.reader import format_size

log = logging.getLogger(__name__)

# Reasons: label values of the rejection metric, beside the transport's (swarm.transport.codec).
BAD_PATH = "bad-path"  # no file system takes it (bridge/pathrules.py)
REFUSED_PATH = "refused-path"  # this node's policy: private, ignored or not included
OVERSIZE_FILE = "oversize-file"  # the document would exceed the file size limit
INAPPLICABLE = "inapplicable"  # the update does not decode or does not apply
APPLY_FAILED = "apply-failed"  # applying or storing it failed for another reason

_CACHE_LIMIT = 10_000  # remembered path answers (a flood of new paths cannot grow memory)
_REPORTED_LIMIT = 256  # refused paths told in heartbeats
_LOG_BURST = 20  # new refusal lines per minute at most; the rest are counted, then summarised
_LOG_WINDOW_S = 60.0


class Edge:
    def __init__(self, policy: PathPolicy, max_bytes: int) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.by_reason: dict[str, int] = {}
        self._answers: dict[str, tuple[str, str] | None] = {}
        self._generation = policy.generation
        self._logged: dict[tuple[str, str], None] = {}
        self._window_start = 0.0
        self._window_lines = 0
        self._suppressed = 0

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def refusal(self, path: str) -> tuple[str, str] | None:
        """(reason, detail) when this node never syncs `path`; None when it does. Remembered
        per policy generation (the policy resolves symlinks: too slow for every update)."""
        if self._generation != self.policy.generation:
            self._answers.clear()
            self._generation = self.policy.generation
        if path in self._answers:
            return self._answers[path]
        problem = path_problem(path)
        answer: tuple[str, str] | None
        if problem is not None:
            answer = (BAD_PATH, problem)
        elif not self.policy.accepts(path):
            answer = (REFUSED_PATH, "private, ignored or not included on this node")
        else:
            answer = None
        if len(self._answers) >= _CACHE_LIMIT:
            self._answers.clear()
        self._answers[path] = answer
        return answer

    def refused(self) -> dict[str, str]:
        """Paths seen from peers that this node refuses by its policy (some, not all, of a flood):
        for heartbeats, so status does not count them as missing here."""
        found: dict[str, str] = {}
        for path, answer in self._answers.items():
            if answer is not None and answer[0] == REFUSED_PATH:
                found[path] = answer[1]
                if len(found) >= _REPORTED_LIMIT:
                    break
        return found

    def oversize(self, size: int) -> str | None:
        """The problem with a document of `size` bytes, or None when it fits."""
        if size <= self.max_bytes:
            return None
        return f"larger than {format_size(self.max_bytes)} ({size:,} bytes)"

    def reject(self, path: str, reason: str, detail: str, count: int = 1) -> None:
        """Count `count` updates of `path` dropped for `reason`; log the first of each path and
        reason (bounded: a flood of new paths is summarised, not logged line by line)."""
        self.by_reason[reason] = self.by_reason.get(reason, 0) + count
        key = (reason, path)
        if key in self._logged:
            return
        if len(self._logged) >= _CACHE_LIMIT:
            self._logged.clear()
        self._logged[key] = None
        now = time.monotonic()
        if now - self._window_start > _LOG_WINDOW_S:
            self._window_start, self._window_lines = now, 0
        if self._window_lines >= _LOG_BURST:
            self._suppressed += 1
            return
        self._window_lines += 1
        more = f" ({self._suppressed} more paths refused, not logged)" if self._suppressed else ""
        self._suppressed = 0
        level = logging.INFO if reason == REFUSED_PATH else logging.WARNING
        log.log(level, "refusing updates of %s: %s: %s%s", shown(path), reason, detail, more)

"""Whether each file on this node's disk holds what its document says, and what to do when a
render fails.

A render that fails (no space, a read-only or refused file, a bug) quarantines its file: it is
not rendered again before its retry time, which backs off from `base` to `cap` seconds while the
failure lasts, and it is reported once per reason (log, status, metrics). The first render that
works again ends the quarantine. Meanwhile every other file renders as usual.

For `swarm status` each file is `ok` (the disk holds the document's content, as of the document
revision last confirmed), `pending` (the document moved on and the render has not happened yet:
normal for a few milliseconds, a problem when it lasts) or `error` (quarantined, with the reason).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from swarm.problems import Problems

log = logging.getLogger(__name__)

OK = "ok"
PENDING = "pending"
ERROR = "error"
RETRY_BASE_S = 0.5
RETRY_CAP_S = 30.0
_REPORTED_LIMIT = 100  # files listed in a heartbeat; the count is always exact


@dataclass
class Failure:
    reason: str
    attempts: int
    since: float  # time.time() of the first failure
    retry_at: float  # time.monotonic() of the next attempt


@dataclass(frozen=True)
class DiskState:
    state: str  # PENDING or ERROR (files that are OK are not listed)
    reason: str | None
    for_s: float  # how long the file has been in this state

    def to_json(self) -> dict[str, object]:
        return {"state": self.state, "reason": self.reason, "for_s": round(self.for_s, 3)}


class FileHealth:
    def __init__(self, *, base: float = RETRY_BASE_S, cap: float = RETRY_CAP_S) -> None:
        self.base = base
        self.cap = cap
        self.failures: dict[str, Failure] = {}
        self.problems = Problems(log, level=logging.ERROR)
        self._synced: dict[str, int] = {}  # path -> document revision last seen on disk
        self._pending_since: dict[str, float] = {}  # path -> monotonic time noticed out of date

    # -- failures ------------------------------------------------------------------------------

    def failed(self, path: str, reason: str) -> float:
        """A render of `path` failed: quarantine it; the delay until the next attempt."""
        now = time.monotonic()
        failure = self.failures.get(path)
        attempts = failure.attempts + 1 if failure is not None else 1
        delay = min(self.cap, self.base * 2.0 ** (attempts - 1))
        since = failure.since if failure is not None else time.time()
        self.failures[path] = Failure(reason, attempts, since, now + delay)
        self.problems.report(path, f"cannot render {path}: {reason}; retrying with backoff")
        return delay

    def quarantined(self, path: str) -> bool:
        """True while `path` waits for its retry time (renders before it are skipped)."""
        failure = self.failures.get(path)
        return failure is not None and time.monotonic() < failure.retry_at

    def release(self, path: str) -> None:
        """The retry time of `path` has come: its next render is attempted."""
        failure = self.failures.get(path)
        if failure is not None:
            failure.retry_at = 0.0

    def rendered(self, path: str, revision: int) -> None:
        """The disk now holds the document of `path` as of `revision`."""
        self._synced[path] = revision
        self._pending_since.pop(path, None)
        if self.failures.pop(path, None) is not None:
            self.problems.resolve(path, f"{path} rendered again")

    def forget(self, path: str) -> None:
        self._synced.pop(path, None)
        self._pending_since.pop(path, None)
        if self.failures.pop(path, None) is not None:
            self.problems.resolve(path)

    # -- state for status ----------------------------------------------------------------------

    def is_synced(self, path: str, revision: int) -> bool:
        return self._synced.get(path) == revision

    def state(self, path: str) -> DiskState:
        """PENDING or ERROR for a file the caller found out of date."""
        failure = self.failures.get(path)
        if failure is not None:
            return DiskState(ERROR, failure.reason, time.time() - failure.since)
        now = time.monotonic()
        since = self._pending_since.setdefault(path, now)
        return DiskState(PENDING, None, now - since)

    @staticmethod
    def summary(states: dict[str, DiskState]) -> dict[str, dict[str, object]]:
        """What a heartbeat tells: errors first, then the longest pending, bounded."""
        order = sorted(states.items(), key=lambda kv: (kv[1].state != ERROR, -kv[1].for_s))
        return {path: state.to_json() for path, state in order[:_REPORTED_LIMIT]}

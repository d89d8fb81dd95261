"""The cursor over the swarm log: the heart of "no lost message".

It only moves over log entries this node has applied (or published itself), in log order. Live
messages name the entry before them, so a dropped message shows up as a broken chain; a chain
still broken after a short grace, with nothing queued here, means a log read from the cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from swarm.transport.base import parse_stream_id

GAP_GRACE_S = 0.1  # how long a hole in the chain of log ids may last before the log is read


class LogCursor:
    def __init__(
        self,
        position: str,
        save: Callable[[str], None],
        backlog: Callable[[], int],
        on_gap: Callable[[], None],
        published: str = "0-0",
        save_published: Callable[[str], None] = lambda _id: None,
    ) -> None:
        """`save` persists a new position; `backlog` counts live messages not handled yet;
        `on_gap` asks for a log read; `published` is the newest entry this node published
        (`save_published` persists it)."""
        self.position = position
        # The newest log entry this node published: Redis acknowledged it, so a log without it
        # lost entries (see catchup.py).
        self.published = published
        self._save_published = save_published
        # Entries to look for in the log at the next catch-up: the newest ones known when Redis
        # failed or when a publish receipt showed a chain not through our last entry. After a
        # failover this node may publish to the new master before it catches up, so `published`
        # alone would already name an entry the new master holds.
        self.verify: set[str] = set()
        self._save = save
        self._backlog = backlog
        self._on_gap = on_gap
        self._links: dict[str, str] = {}  # prev id -> id, for entries beyond a gap
        self._gap_check_pending = False
        self._gap_at = "0-0"  # the position when a hole in the chain was noticed

    def behind(self, stream_id: str) -> bool:
        """Whether the log entry `stream_id` lies past the cursor."""
        return parse_stream_id(stream_id) > parse_stream_id(self.position)

    def link(self, prev: str, stream_id: str) -> None:
        """Advance over contiguous log entries; note a gap for a catch-up."""
        if not self.behind(stream_id):
            return
        self._links[prev] = stream_id
        moved = False
        while self.position in self._links:
            self.position = self._links.pop(self.position)
            moved = True
        if moved:
            self._save(self.position)
        if self._links and not self._gap_check_pending:
            # Our own publish receipts and other nodes' messages arrive in either order, so a
            # gap is normal for a moment; only one that outlives a short wait means a lost
            # message, worth a log read.
            self._arm_gap_check()

    def _arm_gap_check(self) -> None:
        self._gap_check_pending = True
        self._gap_at = self.position
        asyncio.get_running_loop().call_later(GAP_GRACE_S, self._check_gap)

    def _check_gap(self) -> None:
        """A lost message stops the cursor; one merely still queued here (a busy node) does
        not, or will move it once handled: only a cursor stuck with nothing queued means a
        log read."""
        self._gap_check_pending = False
        if not self._links:
            return
        if self.position != self._gap_at or self._backlog():
            self._arm_gap_check()
            return
        self._on_gap()

    def note_published(self, prev: str, stream_id: str) -> None:
        """A receipt of our own publish: (the entry before it, its id)."""
        if parse_stream_id(prev) < parse_stream_id(self.published):
            # In one log our last entry would come at or before `prev`. Two publishes of ours in
            # flight at once, or a log trimmed empty, do this too: the catch-up looks.
            self.suspect()
            self._on_gap()
        if parse_stream_id(stream_id) > parse_stream_id(self.published):
            self.published = stream_id
            self._save_published(stream_id)

    def suspect(self) -> None:
        """Redis failed, or the log's chain looked odd: look for our newest entries next time."""
        self.verify.update(i for i in (self.position, self.published) if i != "0-0")

    def newest_known(self) -> str:
        """The newest log entry this node knows exists (read or published)."""
        return max(self.position, self.published, key=parse_stream_id)

    def advance(self, stream_id: str, *, save: bool = True) -> None:
        """Move to `stream_id` if it lies ahead: every entry up to it has been applied."""
        if self.behind(stream_id):
            self.position = stream_id
            if save:
                self._save(stream_id)

    def reset(self) -> None:
        """Back to the start of the log (a log that lost the swarm's data is re-read). Ids of the
        log as it was mean nothing in the new one (whose clock may even be behind): what this
        node publishes from now on is what it knows to be there."""
        self.position = "0-0"
        self._links.clear()
        self.published = "0-0"
        self._save_published(self.published)
        self.verify.clear()

    def settle(self) -> None:
        """After a catch-up: forget links it passed, follow the chain beyond it, persist."""
        at = parse_stream_id(self.position)
        self._links = {p: i for p, i in self._links.items() if parse_stream_id(i) > at}
        while self.position in self._links:
            self.position = self._links.pop(self.position)
        self._save(self.position)

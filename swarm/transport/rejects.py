"""Counting and logging dropped input without letting a flood of it flood the log."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable


class RejectLog:
    """Counts rejections per reason; logs at most one line per sender per `interval_s`.

    The sender of a rejected input is whatever it claims (it may be forged): the limit only
    bounds the log volume, it identifies no one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = 60.0,
        max_senders: int = 1_024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.by_reason: dict[str, int] = {}
        self.total = 0
        self._log = logger
        self._interval = interval_s
        self._max_senders = max_senders
        self._clock = clock
        self._last: OrderedDict[str, float] = OrderedDict()  # sender -> when last logged
        self._suppressed: dict[str, int] = {}

    def reject(self, reason: str, sender: str, detail: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.total += 1
        who = sender or "?"
        now = self._clock()
        last = self._last.get(who)
        if last is not None and now - last < self._interval:
            self._suppressed[who] = self._suppressed.get(who, 0) + 1
            return
        self._last[who] = now
        self._last.move_to_end(who)
        if len(self._last) > self._max_senders:
            dropped, _ = self._last.popitem(last=False)
            self._suppressed.pop(dropped, None)
        more = self._suppressed.pop(who, 0)
        tail = f" ({more} more from this sender since the last report)" if more else ""
        self._log.warning("dropped input from %r: %s: %s%s", who, reason, detail, tail)

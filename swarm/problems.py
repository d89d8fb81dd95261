"""Conditions that hold until they do not, reported once per cause.

A Redis that refuses writes fails every publish, a file that cannot be rendered fails every
retry: logging each failure would bury the one line that matters. A `Problems` keeps what is
wrong now, by cause: a line when a cause starts (or its message changes), one when it ends.
What is active feeds `/readyz`, `swarm status` (`last_error`) and the metrics.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    message: str
    since: float  # time.time() when the cause started
    kind: str  # a new log line is due when it changes (the message alone may vary)


class Problems:
    """Active problems by cause key; at most `limit` are kept (the oldest are dropped, so a
    flood of distinct causes cannot grow memory)."""

    def __init__(self, logger: logging.Logger, *, level: int = logging.ERROR, limit: int = 1024):
        self._log = logger
        self._level = level
        self._limit = limit
        self._active: OrderedDict[str, Problem] = OrderedDict()

    def report(
        self, key: str, message: str, *, kind: str | None = None, level: int | None = None
    ) -> bool:
        """`key` is wrong, for the reason `message`; True (and one log line) if that is news:
        a new key, or a new `kind` of it (default: the message)."""
        kind = message if kind is None else kind
        known = self._active.get(key)
        self._active[key] = Problem(message, known.since if known else time.time(), kind)
        if known is not None and known.kind == kind:
            return False
        self._active.move_to_end(key)
        while len(self._active) > self._limit:
            self._active.popitem(last=False)
        self._log.log(self._level if level is None else level, "%s", message)
        return True

    def resolve(self, key: str, message: str | None = None) -> bool:
        """`key` is fine again; True (and one log line, `message` or a default) if it was not."""
        known = self._active.pop(key, None)
        if known is None:
            return False
        self._log.info("%s", message or f"resolved: {known.message}")
        return True

    def get(self, key: str) -> Problem | None:
        return self._active.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._active

    def __len__(self) -> int:
        return len(self._active)

    @property
    def active(self) -> dict[str, str]:
        """cause -> message, oldest first."""
        return {key: problem.message for key, problem in self._active.items()}

    def newest(self) -> str | None:
        """The message of the most recent cause still active."""
        return next(reversed(self._active.values())).message if self._active else None


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type, then its message with whitespace folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

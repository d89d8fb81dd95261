"""Give freed heap memory back to the operating system.

Importing a folder or catching up allocates and frees many file-sized strings and CRDT buffers.
glibc keeps the freed pages in the process (RSS stays at the peak) until `malloc_trim` returns
them; a sidecar's footprint is judged by its RSS, so the daemon trims after such bursts.

Under steady work (agents editing on every node, never a quiet second) the same happens slowly:
freed chunks scattered over glibc's arenas (one per thread that ever allocated: the event loop,
the file-reading and rendering worker threads) are never handed back, and RSS climbs for as long
as the work goes on. So while work goes on the daemon trims too, every `BUSY_TRIM_S`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from collections.abc import Callable
from enum import Enum

BUSY_TRIM_S = 30.0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return freed heap pages to the OS; False where the C library cannot."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))


class Trim(Enum):
    AT_REST = "at rest"  # a burst went quiet: drop caches too, then trim
    BUSY = "busy"  # work goes on: trim only (the caches are in use)


class TrimSchedule:
    """When to trim, from a count of work done that the caller passes at every maintenance pass:
    once a burst has gone quiet for one pass, and every `busy_every` seconds while it goes on.
    Never when nothing happened since the last trim (an idle daemon does nothing)."""

    def __init__(
        self, busy_every: float = BUSY_TRIM_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.busy_every = busy_every
        self._clock = clock
        self._seen = 0  # work at the previous pass
        self._rested_at = -1  # work at the last trim at rest (a start's load is work too)
        self._trimmed = clock()  # when the last trim happened

    def due(self, work: int) -> Trim | None:
        seen, self._seen = self._seen, work
        if work == self._rested_at:
            return None
        now = self._clock()
        if work == seen:
            self._rested_at, self._trimmed = work, now
            return Trim.AT_REST
        if now - self._trimmed >= self.busy_every:
            self._trimmed = now
            return Trim.BUSY
        return None

"""Give freed heap memory back to the operating system.

Importing a folder or catching up allocates and frees many file-sized strings and CRDT buffers.
glibc keeps the freed pages in the process (RSS stays at the peak) until `malloc_trim` returns
them; a sidecar's footprint is judged by its RSS, so the daemon trims after such bursts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


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

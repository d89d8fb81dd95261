"""Stable, bounded, UTF-8-only reads of memory files.

Agents often rewrite a file in place (truncate, then write). Reading right after the first write
event can see an empty or half-written file, and ingesting that would delete lines everywhere.
A read is trusted only when the file did not change while it was read and has been quiet for
`settle` seconds: a file whose mtime is older than that is returned at once (no added latency),
a freshly written one is re-checked after the rest of the quiet window.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_MIB = 1024 * 1024
_CHUNK = 1024 * 1024

StatKey = tuple[int, int, int]


@dataclass(frozen=True)
class ReadResult:
    text: str | None
    problem: str | None
    missing: bool = False
    stat: StatKey | None = None


def read_stable(
    path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    settle: float = 0.02,
    attempts: int = 5,
) -> ReadResult:
    """Read `path` once it is stable; never raises for a missing or unreadable file."""
    tries = max(1, attempts)
    for attempt in range(tries):
        outcome = _read_once(path, max_bytes)
        if isinstance(outcome, ReadResult):
            return outcome
        if outcome is None:  # changed during the read
            if attempt + 1 < tries:
                time.sleep(settle)
            continue
        data, key = outcome
        if _quiet_since(path, key, settle):
            return _decode(data, key, max_bytes)
    return ReadResult(None, f"still being written after {attempts} reads")


def format_size(size: int) -> str:
    """Human size: bytes below 1 KiB, else KiB or MiB with one decimal (trailing .0 dropped)."""
    if size < 1024:
        return f"{size} bytes"
    unit, scale = ("MiB", _MIB) if size >= _MIB else ("KiB", 1024)
    return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"


def _read_once(path: Path, max_bytes: int) -> tuple[bytes, StatKey] | ReadResult | None:
    """One read bracketed by stats: the data, a final ReadResult, or None when it moved."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang the reader thread.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return ReadResult(None, None, missing=True)
    except OSError as exc:
        return ReadResult(None, f"unreadable: {exc.strerror or exc}")
    try:
        before = os.fstat(fd)
        if not stat_mod.S_ISREG(before.st_mode):
            return ReadResult(None, "not a regular file")
        if before.st_size > max_bytes:
            return _too_large(before.st_size, max_bytes, _key(before))
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(_CHUNK, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        return ReadResult(None, f"unreadable: {exc.strerror or exc}")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    key = _key(before)
    if _key(after) != key or len(data) != before.st_size or _path_key(path) != key:
        return None
    return data, key


def _quiet_since(path: Path, key: StatKey, settle: float) -> bool:
    """True when the file was last modified at least `settle` ago, waiting out the rest."""
    age = (time.time_ns() - key[2]) / 1e9
    if age >= settle:
        return True
    time.sleep(min(settle, settle - age))
    return _path_key(path) == key


def _decode(data: bytes, key: StatKey, max_bytes: int) -> ReadResult:
    if len(data) > max_bytes:
        return _too_large(len(data), max_bytes, key)
    if b"\x00" in data:
        return ReadResult(None, "binary (NUL byte)", stat=key)
    try:
        text = data.decode("utf-8")  # strict; a BOM stays part of the text
    except UnicodeDecodeError:
        return ReadResult(None, "not UTF-8", stat=key)
    return ReadResult(text, None, stat=key)


def _too_large(size: int, max_bytes: int, key: StatKey) -> ReadResult:
    problem = f"larger than {format_size(max_bytes)} ({format_size(size)})"
    return ReadResult(None, problem, stat=key)


def _key(st: os.stat_result) -> StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _path_key(path: Path) -> StatKey | None:
    try:
        return _key(os.stat(path))
    except OSError:
        return None

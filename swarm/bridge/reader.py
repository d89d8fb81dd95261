"""Stable, bounded, UTF-8-only reads of memory files.

Agents often rewrite a file in place (truncate, then write). Reading right after the first write
event can see an empty or half-written file, and ingesting that would delete lines everywhere.

Where the system allows it, a read happens under a Linux read lease (see lease.py): the lease is
refused while any other process has the file open for writing, and while it is held a writer's
`open()` waits in the kernel. A read under the lease is a whole version of the file, whatever
the timing: it is returned at once. While a writer holds the file open, the read says so
(`writer_open`) and the caller decides (an append-only extension is safe to take, a rewrite in
progress is not). Without leases (another owner and no CAP_LEASE, a network file system), a read
is trusted only when the file did not change while it was read and has been quiet for `settle`
seconds: a file whose mtime is older than that is returned at once, a freshly written one is
re-checked after the rest of the quiet window.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import time
from dataclasses import dataclass
from pathlib import Path

from swarm import defaults
from swarm.bridge import lease
from swarm.bridge.folder import Folder, UnsafePath, locate, open_folder, refusal, split

DEFAULT_MAX_BYTES = defaults.MAX_FILE_BYTES
_MIB = 1024 * 1024
_CHUNK = 1024 * 1024
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC

StatKey = tuple[int, int, int]


@dataclass(frozen=True)
class ReadResult:
    text: str | None
    problem: str | None
    missing: bool = False
    stat: StatKey | None = None
    # Another process had the file open for writing during the read: `text` is what it held
    # then, possibly a write in progress.
    writer_open: bool = False


def read_stable(
    path: Path,
    *,
    root: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    settle: float = 0.02,
    attempts: int = 5,
    quiet: bool = False,
) -> ReadResult:
    """Read `path` once it is stable; never raises for a missing or unreadable file.

    With `root`, `path` is reached from `root` without following any symbolic link below it
    (see folder.py); without, only the file itself is not followed. With `quiet`, the file must
    also have been quiet for `settle` seconds even when read under a lease (a writer that
    truncates, closes, and opens again to write leaves a gap no lease shows).
    """
    base, rel = locate(path, root)
    folder_rel, name = split(rel)
    try:
        folder = open_folder(base, folder_rel)
    except (FileNotFoundError, NotADirectoryError):
        return ReadResult(None, None, missing=True)
    except UnsafePath as exc:
        return ReadResult(None, exc.strerror)
    except OSError as exc:
        return ReadResult(None, f"unreadable: {exc.strerror or exc}")
    with folder:
        return read_settled(folder, name, max_bytes, settle, max(1, attempts), quiet=quiet)


def read_settled(
    folder: Folder, name: str, max_bytes: int, settle: float, tries: int, *, quiet: bool = False
) -> ReadResult:
    """`read_stable` of `name` in an open folder."""
    for attempt in range(tries):
        outcome = _read_once(folder, name, max_bytes)
        if isinstance(outcome, ReadResult):
            return outcome
        if outcome is None:  # changed during the read
            if attempt + 1 < tries:
                time.sleep(settle)
            continue
        data, key, state = outcome
        if state is lease.Lease.GRANTED and not quiet:
            return decode(data, key, max_bytes)  # a whole version: nobody was writing it
        if state is lease.Lease.BUSY:
            result = decode(data, key, max_bytes)
            return ReadResult(result.text, result.problem, stat=key, writer_open=True)
        if _quiet_since(folder, name, key, settle):
            return decode(data, key, max_bytes)
    return ReadResult(None, f"still being written after {tries} reads")


def format_size(size: int) -> str:
    """Human size: bytes below 1 KiB, else KiB or MiB with one decimal (trailing .0 dropped)."""
    if size < 1024:
        return f"{size} bytes"
    unit, scale = ("MiB", _MIB) if size >= _MIB else ("KiB", 1024)
    return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"


def _read_once(
    folder: Folder, name: str, max_bytes: int
) -> tuple[bytes, StatKey, lease.Lease] | ReadResult | None:
    """One read bracketed by stats, under a read lease where one can be had: the data and
    whether a writer had the file open, a final ReadResult, or None when it moved."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang the reader thread.
        fd = os.open(name, _FILE_FLAGS, dir_fd=folder.fd)
    except (FileNotFoundError, NotADirectoryError):
        return ReadResult(None, None, missing=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return ReadResult(None, refusal(folder, name).strerror)
        return ReadResult(None, f"unreadable: {exc.strerror or exc}")
    try:
        state = _lease(fd)
        outcome = read_open(fd, max_bytes)
    finally:
        os.close(fd)  # releases the lease: a writer held back by it goes on now
    if isinstance(outcome, ReadResult) or outcome is None:
        return outcome
    if _path_key(folder, name) != outcome[1]:
        return None
    return outcome[0], outcome[1], state


def _lease(fd: int) -> lease.Lease:
    """A read lease on `fd` where one can be had (never on what is not a regular file)."""
    try:
        return lease.take(fd)
    except OSError:
        return lease.Lease.UNSUPPORTED


def read_open(fd: int, max_bytes: int) -> tuple[bytes, StatKey] | ReadResult | None:
    """Read the open file `fd` from its start: the data and its stat, a final ReadResult (not a
    regular file, too large, unreadable), or None when it changed during the read."""
    try:
        before = os.fstat(fd)
        if not stat_mod.S_ISREG(before.st_mode):
            return ReadResult(None, "not a regular file")
        if before.st_size > max_bytes:
            return _too_large(before.st_size, max_bytes, _key(before))
        chunks: list[bytes] = []
        remaining, offset = max_bytes + 1, 0
        while remaining > 0:
            chunk = os.pread(fd, min(_CHUNK, remaining), offset)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
            offset += len(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        return ReadResult(None, f"unreadable: {exc.strerror or exc}")
    data = b"".join(chunks)
    key = _key(before)
    if _key(after) != key or len(data) != before.st_size:
        return None
    return data, key


def read_fd(fd: int, max_bytes: int) -> ReadResult | None:
    """The text of the open file `fd` (None when it changed during the read)."""
    outcome = read_open(fd, max_bytes)
    if outcome is None or isinstance(outcome, ReadResult):
        return outcome
    return decode(*outcome, max_bytes)


def _quiet_since(folder: Folder, name: str, key: StatKey, settle: float) -> bool:
    """True when the file was last modified at least `settle` ago, waiting out the rest."""
    age = (time.time_ns() - key[2]) / 1e9
    if age >= settle:
        return True
    time.sleep(min(settle, settle - age))
    return _path_key(folder, name) == key


def decode(data: bytes, key: StatKey, max_bytes: int) -> ReadResult:
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
    return ReadResult(None, too_large(max(size, key[1]), max_bytes), stat=key)


def too_large(size: int, max_bytes: int) -> str:
    """Why a file of `size` bytes is not synced; in bytes when rounding would hide that it is
    larger ("larger than 4 MiB (4 MiB)")."""
    limit, shown = format_size(max_bytes), format_size(size)
    if shown == limit:
        shown = f"{size:,} bytes"
    return f"larger than {limit} ({shown})"


def _key(st: os.stat_result) -> StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _path_key(folder: Folder, name: str) -> StatKey | None:
    try:
        return _key(os.stat(name, dir_fd=folder.fd, follow_symlinks=False))
    except OSError:
        return None

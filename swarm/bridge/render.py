"""Atomic writes and deletes that never clobber an agent write the caller has not seen.

The caller states what it last saw on disk (`expected`; None means "no file"). The file is
re-read and compared before it is replaced, and its stat is compared again right before
`os.replace`/`os.unlink`, so the check-to-rename window is a few system calls long.

Remaining race, documented rather than hidden: an agent that writes between that last stat and
the rename is lost, and so is a write by an agent that still holds the old file open (its bytes
land in the replaced inode). A write within the same mtime tick that keeps the size also escapes
the stat comparison. The reader's quiet window (see `reader.py`) makes the second case rare.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat as stat_mod
import tempfile
from pathlib import Path

from swarm.bridge.policy import TEMP_MARK
from swarm.bridge.reader import ReadResult, StatKey, read_stable

_DEFAULT_MODE = 0o644


class RenderConflict(Exception):
    """The file on disk is not what the caller last saw: ingest `current` first, then retry."""

    def __init__(self, path: Path, current: ReadResult) -> None:
        state = "missing" if current.missing else (current.problem or "different content")
        super().__init__(f"{path} changed on disk since it was last seen ({state})")
        self.path = path
        self.current = current


class AgentWriteCaptured(RenderConflict):
    """An agent wrote the file in the instant before the render replaced it. The render went
    through, and the agent's text (swapped out of the way, not lost) must be ingested now."""

    def __init__(self, path: Path, text: str) -> None:
        super().__init__(path, ReadResult(text=text, problem=None))
        self.text = text


class RenderError(OSError):
    """Writing or deleting failed (no space, no permission, ...); the original file is intact."""


def write_atomic(
    path: Path,
    text: str,
    *,
    expected: str | None,
    expect_missing: bool = False,
    settle: float = 0.02,
) -> None:
    """Replace `path` with `text` unless it differs from `expected` (None: must be missing).

    `expect_missing` demands a missing file whatever `expected` says. Raises RenderConflict
    when the disk is not as expected, RenderError when the file system refuses.
    """
    data = text.encode("utf-8")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _render_error("cannot create folder for", path, exc) from exc
    seen = _check(path, None if expect_missing else expected, settle)
    mode = _mode_of(seen)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_MARK, dir=parent)
    except OSError as exc:
        raise _render_error("cannot write", path, exc) from exc
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        _recheck(path, seen)
        if seen.read.missing:
            if not _renameat2(tmp, path, _RENAME_NOREPLACE):
                os.replace(tmp, path)  # no renameat2 here: the re-check above is all we have
        elif _renameat2(tmp, path, _RENAME_EXCHANGE):
            # The old file now sits at `tmp`: if an agent wrote between the last check and the
            # swap, its write is in there, not lost.
            _inspect_swapped_out(path, tmp, expected)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        raise RenderConflict(path, read_stable(path, settle=0)) from None
    except OSError as exc:
        raise _render_error("cannot write", path, exc) from exc
    finally:
        _discard(tmp)
    if seen.read.missing:
        # A new name must survive a power cut: a file the store says exists but the disk lacks
        # would read as the agent deleting it. A replaced file needs no directory fsync (half
        # of a render's cost under load): a lost rename leaves the previous version, which the
        # store keeps as a merge base, so the next start reads it as a stale write that changes
        # nothing and renders again.
        _fsync_dir(parent)


def _inspect_swapped_out(path: Path, swapped: Path, expected: str | None) -> None:
    try:
        data = swapped.read_bytes()
    except OSError:
        return
    if expected is not None and data == expected.encode("utf-8"):
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        # Not text we could merge: put the agent's file back rather than lose it.
        if _renameat2(swapped, path, _RENAME_EXCHANGE):
            raise RenderConflict(path, read_stable(path, settle=0))
        return
    raise AgentWriteCaptured(path, text)


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2_fn = getattr(_libc, "renameat2", None)
if _renameat2_fn is not None:
    _renameat2_fn.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    _renameat2_fn.restype = ctypes.c_int


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2(2); False where the system or file system does not support it."""
    if _renameat2_fn is None:
        return False
    if _renameat2_fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), str(dst))
    raise OSError(err, os.strerror(err), str(dst))


def remove_file(
    path: Path, *, expected: str | None, root: Path | None = None, settle: float = 0.02
) -> bool:
    """Delete `path` only if it holds `expected`; True if removed, False if already missing.

    Empty parent folders are removed up to, not including, `root`.
    """
    current = read_stable(path, settle=settle)
    if not current.missing:
        _require(path, current, expected)
    try:
        now = _stat_key(path)
        if now is not None and now != current.stat:
            raise RenderConflict(path, read_stable(path, settle=0))
        if now is not None:
            os.unlink(path)
    except FileNotFoundError:
        now = None
    except OSError as exc:
        raise _render_error("cannot delete", path, exc) from exc
    if now is None:
        _prune_empty_parents(path, root)
        return False
    _fsync_dir(path.parent)
    _prune_empty_parents(path, root)
    return True


class _Seen:
    """What the check saw: the read and the file's permission bits."""

    def __init__(self, read: ReadResult, mode: int | None) -> None:
        self.read = read
        self.mode = mode


def _check(path: Path, expected: str | None, settle: float) -> _Seen:
    current = read_stable(path, settle=settle)
    if current.missing and expected is None:
        return _Seen(current, None)
    _require(path, current, expected)
    return _Seen(current, _stat_mode(path))


def _require(path: Path, current: ReadResult, expected: str | None) -> None:
    """Raise unless `current` is a successful read whose text is `expected`."""
    if current.problem is not None and current.problem.startswith("unreadable"):
        raise RenderError(errno.EACCES, f"cannot check {path}: {current.problem}")
    if current.text is None or current.text != expected:
        raise RenderConflict(path, current)


def _recheck(path: Path, seen: _Seen) -> None:
    """Last look before the rename: the file must still be the one whose content was checked."""
    now = _stat_key(path)
    if now != seen.read.stat:
        raise RenderConflict(path, read_stable(path, settle=0))


def _mode_of(seen: _Seen) -> int:
    if seen.mode is not None:
        return seen.mode
    umask = os.umask(0)
    os.umask(umask)
    return _DEFAULT_MODE & ~umask


def _stat_mode(path: Path) -> int | None:
    try:
        return stat_mod.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _stat_key(path: Path) -> StatKey | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make the rename or unlink durable; some file systems refuse directory fsync (EINVAL)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise _render_error("cannot sync folder of", folder, exc) from exc
    finally:
        os.close(fd)


def _prune_empty_parents(path: Path, root: Path | None) -> None:
    if root is None:
        return
    stop = Path(os.path.abspath(root))
    folder = Path(os.path.abspath(path.parent))
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _render_error(action: str, path: Path, exc: OSError) -> RenderError:
    reason = exc.strerror or str(exc)
    return RenderError(exc.errno or errno.EIO, f"{action} {path}: {reason}")

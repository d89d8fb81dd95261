"""Renders: writing the merged text to disk, atomically, never under an agent that writes.

The caller states what it last saw on disk (`expected`; None means "no file"). A render of an
existing file goes like this:

1. The folder is reached from the root without following links (folder.py); a file that is a
   symbolic link is refused (RenderRefused), never replaced.
2. If another process has the file open for writing (a read lease is refused, lease.py),
   nothing is written: RenderBusy, and the caller tries again once the writer closed it.
3. The new text goes to a temp file beside it (`.NAME.INO.DIGEST.swarm-tmp`), fsynced.
4. A read lease is taken on the old file. From here on, a process opening it for writing (or
   truncating it) waits in the kernel until the lease is let go; readers do not wait.
5. Under the lease the old file is read and compared with `expected` (RenderConflict if it
   differs: the caller ingests the agent's write first). No process can be writing it.
6. `renameat2(RENAME_EXCHANGE)` swaps the new file in; the old one now sits at the temp name.
7. If no writer started to open the old file meanwhile (the lease is intact), the old file is
   deleted and the lease let go. Otherwise the lease is let go, the waiting writer gets the old
   file and writes to it: it is kept at its temp name and handed back (`RenderResult.displaced`,
   displaced.py), read once no process has it open for writing, merged as a write based on
   `expected` (or an older version the agent read), and only then deleted (a crash before
   leaves it for the next start). A file that is not the one checked (an agent renamed another
   over it just before the swap) is handed back the same way.

Readers never see a half-written file: the swap is one atomic rename, and a reader that has the
old file open keeps reading the old text. A writer held at step 4 waits for steps 5-7 only
(microseconds to a few milliseconds: a read of the file and two renames); the kernel would
break the lease itself after `/proc/sys/fs/lease-break-time` (45 s), far beyond that.

What remains, with leases: a writer whose `open()` had looked the name up before the swap but
had not yet counted itself as a writer (the kernel does that just before its lease check) when
the render looked at the lease for the last time, in step 7. Both happen within one system call
of the writer, microseconds apart; it would have to be preempted exactly there for the whole of
steps 6-7. Its writes then go to a deleted file.

Without leases (the file belongs to another user and the daemon lacks CAP_LEASE; NFS, SMB and
most FUSE file systems; `SWARM_NO_LEASES` set), a render cannot know about writers. It reads
the file once it has been quiet for `settle` and compares its stat right before the swap (a
write in between is a conflict, or lands in the old file), and the old file is always kept as
displaced: read once nothing has written to it for `LINGER` (2 s, displaced.py). A writer that
holds the file open across a render keeps every write made within 2 s of the render or of its
previous write; what it writes after a longer pause goes to a deleted file. Renders stay
atomic for readers.

A delete takes the same lease, renames the file to a temp name, and deletes it if no writer came;
otherwise the writer's text is handed back like a displaced write (and brings the file back).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path

from swarm.bridge import lease
from swarm.bridge.displaced import Displaced, content_digest, temp_name
from swarm.bridge.folder import Folder, UnsafePath, locate, open_folder, refusal, split
from swarm.bridge.reader import (
    DEFAULT_MAX_BYTES,
    ReadResult,
    StatKey,
    read_fd,
    read_settled,
)

_DEFAULT_MODE = 0o644
_OPEN_OLD = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class RenderConflict(Exception):
    """The file on disk is not what the caller last saw: ingest `current` first, then retry."""

    def __init__(self, path: Path, current: ReadResult) -> None:
        state = "missing" if current.missing else (current.problem or "different content")
        super().__init__(f"{path} changed on disk since it was last seen ({state})")
        self.path = path
        self.current = current


class AgentWriteCaptured(RenderConflict):
    """An agent wrote the file in the instant before the render replaced it. The render went
    through, and the agent's text (swapped out of the way, not lost) must be ingested now.

    `write_atomic` no longer raises it: such a file comes back as `RenderResult.displaced`, to be
    merged before it is removed (a crash in between leaves it on disk, see displaced.py)."""

    def __init__(self, path: Path, text: str) -> None:
        super().__init__(path, ReadResult(text=text, problem=None))
        self.text = text


class RenderBusy(RenderConflict):
    """Another process has the file open for writing: nothing was written. Retry once it has
    closed the file (its writes reach the caller through the watcher as usual)."""

    def __init__(self, path: Path) -> None:
        Exception.__init__(self, f"{path} is open for writing by another process")
        self.path = path
        self.current = ReadResult(None, "open for writing")


class RenderError(OSError):
    """Writing or deleting failed (no space, no permission, ...); the original file is intact."""


class RenderRefused(RenderError):
    """A symbolic link (or a file where a folder should be) stands in the way: swarm neither
    follows it nor replaces it."""


@dataclass(frozen=True)
class RenderResult:
    stat: StatKey | None  # of the file the render left (None: deleted or nothing there)
    changed: bool = True
    # The file the render took away while a writer may still write it: poll it, merge its text.
    displaced: Displaced | None = None


def write_atomic(
    path: Path,
    text: str,
    *,
    expected: str | None,
    expect_missing: bool = False,
    settle: float = 0.02,
    root: Path | None = None,
    known: StatKey | None = None,
) -> RenderResult:
    """Replace `path` with `text` unless it differs from `expected` (None: must be missing).

    `expect_missing` demands a missing file whatever `expected` says. `root` is the memory
    folder: nothing below it is followed. `known` is the file's stat as the caller last read
    or wrote it (no quiet window needed then, where leases are not available).
    Raises RenderConflict (RenderBusy) when the disk is not as expected (is being written),
    RenderError when the file system refuses. An old file that may hold an agent's write comes
    back as `displaced`.
    """
    base, rel = locate(path, root)
    if root is None:  # no memory folder named: no containment to keep
        with contextlib.suppress(OSError):
            base.mkdir(parents=True, exist_ok=True)
    folder, name = _folder_of(base, rel, path, "write")
    with folder:
        old = _open_old(folder, name, path, "write")
        if old is None:
            if not expect_missing and expected is not None:
                raise RenderConflict(path, ReadResult(None, None, missing=True))
            return _create(folder, name, path, text.encode("utf-8"))
        try:
            if expect_missing:
                expected = None
            return _replace(folder, name, path, old, text.encode("utf-8"), expected, settle, known)
        finally:
            os.close(old)


def remove_file(
    path: Path, *, expected: str | None, root: Path | None = None, settle: float = 0.02
) -> RenderResult:
    """Delete `path` only if it holds `expected`; `changed` is False if it was already missing.

    Empty parent folders are removed up to, not including, `root`.
    """
    base, rel = locate(path, root)
    try:
        folder, name = _folder_of(base, rel, path, "delete")
    except RenderError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not isinstance(exc, RenderRefused):
            return RenderResult(None, changed=False)  # its folder is gone: so is the file
        raise
    with folder:
        old = _open_old(folder, name, path, "delete")
        if old is None:
            if root is not None:
                folder.prune_empty()
            return RenderResult(None, changed=False)
        try:
            result = _remove(folder, name, path, old, expected, settle)
        finally:
            os.close(old)
        if root is not None:
            folder.prune_empty()
        return result


def _folder_of(base: Path, rel: str, path: Path, action: str) -> tuple[Folder, str]:
    """The open folder of `rel` below `base` (made if missing, to write) and the file's name."""
    folder_rel, name = split(rel)
    try:
        return open_folder(base, folder_rel, create=action == "write"), name
    except UnsafePath as exc:
        raise RenderRefused(exc.errno, f"cannot {action} {path}: {exc.strerror}") from None
    except OSError as exc:
        raise _render_error(f"cannot {action}", path, exc) from exc


def _open_old(folder: Folder, name: str, path: Path, action: str) -> int | None:
    try:
        return os.open(name, _OPEN_OLD, dir_fd=folder.fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = refusal(folder, name).strerror
            raise RenderRefused(errno.ELOOP, f"cannot {action} {path}: {reason}") from None
        reason = exc.strerror or str(exc)
        raise RenderError(exc.errno or errno.EIO, f"cannot check {path}: {reason}") from None


def _replace(
    folder: Folder,
    name: str,
    path: Path,
    old: int,
    data: bytes,
    expected: str | None,
    settle: float,
    known: StatKey | None,
) -> RenderResult:
    st = os.fstat(old)
    if not stat_mod.S_ISREG(st.st_mode):
        raise RenderConflict(path, ReadResult(None, "not a regular file"))
    if lease.probe(old) is lease.Lease.BUSY:
        raise RenderBusy(path)  # before writing anything: the writer may take long
    tmp, new_key = _write_temp(folder, name, st.st_ino, data, stat_mod.S_IMODE(st.st_mode), path)
    try:
        held = _hold(old, path)
        try:
            seen = _verify(folder, name, path, old, held, expected, settle, known)
            exchanged = _swap_in(folder, tmp, name, path, seen)
            out_name = tmp if exchanged else None
            out = _swapped_out(folder, out_name, old, st.st_ino, name, path)
            if out == old and held and lease.intact(old):
                if out_name is not None:
                    with contextlib.suppress(OSError):  # else recovered at the next start
                        os.unlink(out_name, dir_fd=folder.fd)
                return RenderResult(new_key)
            displaced = _displaced(folder, name, out, out_name, old, expected, held)
        finally:
            if held:
                lease.release(old)  # a writer waiting for it opens the old file now
    except OSError as exc:
        raise _render_error("cannot write", path, exc) from exc
    finally:
        _discard_unswapped(folder, tmp, new_key)
    return RenderResult(new_key, displaced=displaced)


def _remove(
    folder: Folder, name: str, path: Path, old: int, expected: str | None, settle: float
) -> RenderResult:
    st = os.fstat(old)
    if not stat_mod.S_ISREG(st.st_mode):
        raise RenderConflict(path, ReadResult(None, "not a regular file"))
    held = _hold(old, path)
    try:
        seen = _verify(folder, name, path, old, held, expected, settle, None)
        tmp = temp_name(name, st.st_ino, secrets.token_hex(8))
        if not held:
            _recheck(folder, name, path, seen)
        if not _renameat2(folder.fd, name, folder.fd, tmp, _RENAME_NOREPLACE):
            os.rename(name, tmp, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
        out = _swapped_out(folder, tmp, old, st.st_ino, name, path)
        if out == old and held and lease.intact(old):
            with contextlib.suppress(OSError):  # else recovered at the next start
                os.unlink(tmp, dir_fd=folder.fd)
            displaced = None
        else:
            displaced = _displaced(folder, name, out, tmp, old, expected, held)
    except FileNotFoundError:  # deleted by the agent meanwhile: nothing left to do
        return RenderResult(None, changed=False)
    except OSError as exc:
        if isinstance(exc, RenderError):
            raise
        raise _render_error("cannot delete", path, exc) from exc
    finally:
        if held:
            lease.release(old)
    folder.fsync()
    return RenderResult(None, displaced=displaced)


def _hold(old: int, path: Path) -> bool:
    """Take the lease for the swap: True if held, False where leases are not available."""
    state = lease.take(old)
    if state is lease.Lease.BUSY:
        raise RenderBusy(path)
    return state is lease.Lease.GRANTED


def _verify(
    folder: Folder,
    name: str,
    path: Path,
    old: int,
    held: bool,
    expected: str | None,
    settle: float,
    known: StatKey | None,
) -> ReadResult:
    """The old file must hold `expected`. Under the lease nobody writes it, so one read does;
    without, the read waits out the quiet window (unless the stat is the one last seen)."""
    if held:
        read = read_fd(old, DEFAULT_MAX_BYTES)
        if read is None:  # cannot happen under the lease; be safe
            raise RenderConflict(path, ReadResult(None, "still being written"))
        current = read
    else:
        key = _fstat_key(old)
        quiet = 0.0 if known is not None and key == known else settle
        current = read_settled(folder, name, DEFAULT_MAX_BYTES, quiet, 5)
        if current.stat != key:
            raise RenderConflict(path, current)
    if current.problem is not None and current.problem.startswith("unreadable"):
        raise RenderError(errno.EACCES, f"cannot check {path}: {current.problem}")
    if current.text is None or current.text != expected:
        raise RenderConflict(path, current)
    return current


def _recheck(folder: Folder, name: str, path: Path, seen: ReadResult) -> None:
    """Without a lease, the last look before the swap: still the file whose content was checked."""
    try:
        st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
        now: StatKey | None = (st.st_ino, st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        now = None
    if now != seen.stat:
        raise RenderConflict(path, read_settled(folder, name, DEFAULT_MAX_BYTES, 0.0, 5))


def _swap_in(folder: Folder, tmp: str, name: str, path: Path, seen: ReadResult) -> bool:
    """Put the new file in place: True when exchanged (the old one is at `tmp` now)."""
    _recheck(folder, name, path, seen)
    try:
        if _renameat2(folder.fd, tmp, folder.fd, name, _RENAME_EXCHANGE):
            return True
    except FileNotFoundError:  # the agent deleted it a moment ago
        raise RenderConflict(path, ReadResult(None, None, missing=True)) from None
    os.rename(tmp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
    return False


def _swapped_out(
    folder: Folder, out_name: str | None, old: int, old_ino: int, name: str, path: Path
) -> int:
    """The file descriptor of what the swap took away: `old`, or a file an agent put there in
    the instant before. A symbolic link put there is swapped back and refused."""
    if out_name is None:
        return old
    st = os.stat(out_name, dir_fd=folder.fd, follow_symlinks=False)
    if st.st_ino == old_ino:
        return old
    if stat_mod.S_ISLNK(st.st_mode):
        _renameat2(folder.fd, out_name, folder.fd, name, _RENAME_EXCHANGE)
        reason = refusal(folder, name).strerror
        raise RenderRefused(errno.ELOOP, f"cannot write {path}: {reason}")
    return os.open(out_name, _OPEN_OLD, dir_fd=folder.fd)


def _displaced(
    folder: Folder,
    name: str,
    out: int,
    out_name: str | None,
    old: int,
    expected: str | None,
    held: bool,
) -> Displaced:
    return Displaced(
        folder.rel(name),
        os.dup(out) if out == old else out,
        folder_fd=os.dup(folder.fd),
        name=out_name,
        expected=expected,
        leased=held,
    )


def _create(folder: Folder, name: str, path: Path, data: bytes) -> RenderResult:
    umask = os.umask(0)
    os.umask(umask)
    tmp, new_key = _write_temp(folder, name, 0, data, _DEFAULT_MODE & ~umask, path)
    try:
        if not _renameat2(folder.fd, tmp, folder.fd, name, _RENAME_NOREPLACE):
            os.link(tmp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd, follow_symlinks=False)
        # A new name must survive a power cut: a file the store says exists but the disk lacks
        # would read as the agent deleting it. A replaced file needs no folder fsync (half of a
        # render's cost under load): a lost rename leaves the previous version, which the store
        # keeps as a merge base, so the next start reads it as a stale write that changes
        # nothing and renders again.
        folder.fsync()
    except FileExistsError:
        raise RenderConflict(path, read_settled(folder, name, DEFAULT_MAX_BYTES, 0.0, 5)) from None
    except OSError as exc:
        raise _render_error("cannot write", path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder.fd)  # gone after a rename; the spare name after a link
    return RenderResult(new_key)


def _write_temp(
    folder: Folder, name: str, old_ino: int, data: bytes, mode: int, path: Path
) -> tuple[str, StatKey]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    token = content_digest(data)  # lets a start after a crash recognise the render's text
    try:
        while True:
            tmp = temp_name(name, old_ino, token)
            try:
                fd = os.open(tmp, flags, 0o600, dir_fd=folder.fd)
                break
            except FileExistsError:
                token = secrets.token_hex(8)
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
            key = _fstat_key(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder.fd)
            raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise _render_error("cannot write", path, exc) from exc
    return tmp, key


def _discard_unswapped(folder: Folder, tmp: str, new_key: StatKey) -> None:
    """Remove the temp file if it still holds our new text (a render that did not swap)."""
    with contextlib.suppress(OSError):
        st = os.stat(tmp, dir_fd=folder.fd, follow_symlinks=False)
        if st.st_ino == new_key[0]:
            os.unlink(tmp, dir_fd=folder.fd)


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
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


def _renameat2(src_dir: int, src: str, dst_dir: int, dst: str, flags: int) -> bool:
    """Linux renameat2(2); False where the system or file system does not support it."""
    if _renameat2_fn is None:
        return False
    if _renameat2_fn(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), dst)
    if err == errno.ENOENT:
        raise FileNotFoundError(err, os.strerror(err), dst)
    raise OSError(err, os.strerror(err), dst)


def _fstat_key(fd: int) -> StatKey:
    st = os.fstat(fd)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _render_error(action: str, path: Path, exc: OSError) -> RenderError:
    if isinstance(exc, RenderError):
        return exc
    reason = exc.strerror or str(exc)
    return RenderError(exc.errno or errno.EIO, f"{action} {path}: {reason}")

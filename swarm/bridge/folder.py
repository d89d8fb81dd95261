"""Reaching a file inside the memory folder without ever leaving it.

A path is checked when it is accepted, but a folder or file can be swapped for a symbolic link at
any moment after. So every read, render and delete walks from the root one segment at a time,
each opened relative to the folder before it with `O_NOFOLLOW`: the kernel, not an earlier
check, decides what each name is at the moment of I/O. The root itself is opened by its path
(it may be a symlink the user configured); nothing below it is followed.

Symbolic links inside the folder are never followed, even those that point inside it: a file
link is a second name for another synced file (following it would render one file from two
documents), a folder link would show every file in it twice. They are refused and reported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A symbolic link (or something that is not a folder) stands where a folder or file of
    the memory folder should be; the one-line reason says which."""


class Folder:
    """Open folder descriptors from the root down to one folder (`fd` is the deepest)."""

    def __init__(self, root: Path, segments: list[str], fds: list[int]) -> None:
        self.root = root
        self.segments = segments
        self.fds = fds

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def rel(self, name: str) -> str:
        """The POSIX path of `name` in this folder, relative to the root."""
        return "/".join([*self.segments, name])

    def close(self) -> None:
        for fd in reversed(self.fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prune_empty(self) -> None:
        """Remove this folder and its parents while they are empty, never the root."""
        for depth in range(len(self.segments), 0, -1):
            try:
                os.rmdir(self.segments[depth - 1], dir_fd=self.fds[depth - 1])
            except OSError:
                return

    def fsync(self) -> None:
        """Make a new name or a removal durable; some file systems refuse (EINVAL)."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise


def open_folder(root: Path, rel_dir: str, *, create: bool = False) -> Folder:
    """Walk from `root` to the folder `rel_dir` ("" for the root itself).

    Raises FileNotFoundError when a segment is missing (and `create` is off), UnsafePath when a
    segment is a symbolic link or not a folder. `create` makes missing folders as it goes.
    """
    segments = [part for part in rel_dir.split("/") if part] if rel_dir else []
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    folder = Folder(root, [], fds)
    try:
        for segment in segments:
            fds.append(_open_segment(folder, segment, create))
            folder.segments.append(segment)
    except BaseException:
        folder.close()
        raise
    return folder


def _open_segment(folder: Folder, segment: str, create: bool) -> int:
    try:
        return os.open(segment, _DIR_FLAGS, dir_fd=folder.fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise refusal(folder, segment) from None
        raise
    with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: open it
        os.mkdir(segment, 0o777, dir_fd=folder.fd)
    try:
        return os.open(segment, _DIR_FLAGS, dir_fd=folder.fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        raise refusal(folder, segment) from None


def refusal(folder: Folder, name: str) -> UnsafePath:
    """Why `name` in `folder` cannot be used: a symbolic link, or not what was expected."""
    rel = folder.rel(name)
    try:
        mode = os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat_mod.S_ISLNK(mode):
        return UnsafePath(errno.ELOOP, f"{rel} is a symbolic link; swarm does not follow links")
    return UnsafePath(errno.ENOTDIR, f"{rel} is not a folder")


def split(rel: str) -> tuple[str, str]:
    """("memory", "x.md") for "memory/x.md"; ("", "MEMORY.md") for "MEMORY.md"."""
    folder, _, name = rel.rpartition("/")
    return folder, name


def locate(path: Path, root: Path | None) -> tuple[Path, str]:
    """The root and the POSIX path of `path` below it (root None: the file's own folder)."""
    if root is None:
        return path.parent, path.name
    rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    return root, rel.as_posix()

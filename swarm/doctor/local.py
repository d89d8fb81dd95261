"""Checks of this machine: the memory and state folders, the daemon's lock, inotify's limit.

Nothing here changes what a running daemon sees: the write probe is a temp file its watcher
ignores, the lock is only tried (shared, non-blocking) and released at once, and a missing state
folder is not created.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path

from swarm.bridge.policy import TEMP_MARK
from swarm.config import DaemonSettings
from swarm.doctor.checks import Check, Status, one_line
from swarm.doctor.writers import check_writers

INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
LOCK_FILE = "daemon.lock"  # swarm.daemon._lock_state_dir
_SYSCTL_FIX = (
    "sudo sysctl -w fs.inotify.max_user_watches=524288, and keep it with a line"
    " fs.inotify.max_user_watches=524288 in /etc/sysctl.d/90-swarm.conf"
)


def _write_probe(folder: Path) -> str | None:
    """None if a file can be created in `folder`, else why not (the real test, not access(2):
    a read-only mount or a sandbox says no where the mode bits say yes)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".doctor.", suffix=TEMP_MARK, dir=folder)
    except OSError as exc:
        return exc.strerror or one_line(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def check_folder(settings: DaemonSettings) -> Check:
    root = settings.dir
    if not root.exists():
        return Check(
            "folder",
            Status.FAIL,
            f"memory folder {root} does not exist",
            f"create it (mkdir -p {root}) or point --dir / SWARM_DIR at the agent's folder",
        )
    if not root.is_dir():
        return Check("folder", Status.FAIL, f"{root} is not a folder", "point --dir at a folder")
    problem = _write_probe(root)
    if problem is not None:
        return Check(
            "folder",
            Status.FAIL,
            f"cannot write in {root}: {problem}",
            "run as the agent's user or give this user write access (chown/chmod); under"
            " systemd, list the folder in ReadWritePaths=",
        )
    return Check("folder", Status.OK, f"memory folder {root} is writable")


def check_state(settings: DaemonSettings) -> Check:
    state = settings.resolved_state_dir
    if not settings.dir.is_dir() and settings.dir in state.parents:
        return Check("state", Status.SKIP, "memory folder missing")
    problem: str | None
    if state.is_dir():
        problem = _write_probe(state)
        problem = None if problem is None else f"cannot write in it: {problem}"
    elif state.exists():
        problem = "it is not a folder"
    else:  # the daemon creates it: the nearest existing parent must take it
        parent = next((p for p in state.parents if p.exists()), None)
        creatable = parent is not None and parent.is_dir() and _write_probe(parent) is None
        if creatable:
            return Check("state", Status.OK, f"state folder {state} is created on the first start")
        problem = "it does not exist and cannot be created"
    if problem is not None:
        return Check(
            "state",
            Status.FAIL,
            f"state folder {state}: {problem}",
            "give this user a writable folder there, or choose another with --state-dir",
        )
    return Check("state", Status.OK, f"state folder {state} is writable")


def lock_holder(state: Path) -> tuple[bool, int | None]:
    """(whether a daemon holds the state folder's lock, its pid when /proc/locks tells)."""
    try:
        fd = os.open(state / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return True, _flock_pid(os.fstat(fd).st_ino)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


def _flock_pid(inode: int) -> int | None:
    """The pid holding a flock on `inode`, from /proc/locks (Linux; same PID namespace only)."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 08:01:123456 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            return int(parts[4]) if parts[4].isdigit() and parts[4] != "0" else None
    return None


def check_lock(settings: DaemonSettings) -> Check:
    state = settings.resolved_state_dir
    try:
        held, pid = lock_holder(state)
    except OSError as exc:
        return Check("lock", Status.WARN, f"could not test the lock in {state}: {one_line(exc)}")
    if not held:
        return Check("lock", Status.OK, f"no daemon is running for {state}")
    who = f" (pid {pid})" if pid else ""
    return Check(
        "lock",
        Status.WARN,
        f"a daemon{who} is running for {state}: a second one on it would be refused",
    )


def count_folders(root: Path) -> int:
    """Folders the watcher watches: every folder under the root, itself included (inotify
    watches a tree folder by folder, ignored ones too)."""
    count = 0
    for _folder, _dirs, _files in os.walk(root, followlinks=False):
        count += 1
    return count


def watches_in_use() -> int | None:
    """inotify watches held by this user's processes (their /proc fdinfo), None if unreadable."""
    uid = os.getuid()
    total = 0
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return None
    for pid in pids:
        fd_dir = Path("/proc", pid, "fd")
        try:
            if fd_dir.parent.stat().st_uid != uid:
                continue
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) != "anon_inode:inotify":
                    continue
                info = Path("/proc", pid, "fdinfo", fd).read_text()
            except OSError:
                continue
            total += sum(1 for line in info.splitlines() if line.startswith("inotify wd:"))
    return total


def check_inotify(settings: DaemonSettings, limit_file: Path = INOTIFY_WATCHES) -> Check:
    try:
        limit = int(limit_file.read_text().strip())
    except (OSError, ValueError):
        return Check("inotify", Status.SKIP, f"no inotify limit to read ({limit_file})")
    if not settings.dir.is_dir():
        return Check("inotify", Status.SKIP, "memory folder missing")
    folders = count_folders(settings.dir)
    in_use = watches_in_use()
    used = f", {in_use} in use by this user's processes" if in_use is not None else ""
    plural = "s" if folders != 1 else ""
    found = f"{folders} folder{plural} to watch, limit {limit} watches per user{used}"
    if folders >= limit:
        return Check("inotify", Status.FAIL, found + ": the watcher cannot cover them", _SYSCTL_FIX)
    if in_use is not None and folders + in_use > limit:
        return Check(
            "inotify", Status.WARN, found + ": may not fit beside the other watchers", _SYSCTL_FIX
        )
    return Check("inotify", Status.OK, found)


def local_checks(settings: DaemonSettings, inotify_limit: Path = INOTIFY_WATCHES) -> list[Check]:
    return [
        check_folder(settings),
        check_state(settings),
        check_lock(settings),
        check_inotify(settings, inotify_limit),
        check_writers(settings),
    ]

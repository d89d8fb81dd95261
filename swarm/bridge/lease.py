"""Linux read leases (`fcntl(F_SETLEASE, F_RDLCK)`): knowing that no other process writes a file.

A read lease is granted only while no process has the file open for writing (EAGAIN otherwise),
and while it is held, any open of the file for writing (or a truncate) waits in the kernel until
the holder lets go (at most `/proc/sys/fs/lease-break-time` seconds, 45 by default). Readers
neither block it nor are blocked. The kernel counts a writer from the start of its `open()`,
before it waits on the lease, so a writer about to open shows too.

The kernel tells the holder a writer is waiting with a signal (SIGIO unless `F_SETSIG` names
another); SIGIO would end the process. Every lease here names SIGURG, which is discarded unless
a handler is installed, and the holder asks `F_GETLEASE` instead of waiting for signals (a
lease that is being broken reads as F_UNLCK). `F_SETSIG` is reset when a lease is released, so
it is set before every lease.

Leases need the daemon to own the file (or CAP_LEASE) and a local file system; elsewhere
`take` answers UNSUPPORTED and callers fall back (see render.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
from enum import Enum

_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
_SIGNAL = signal.SIGURG
_UNSUPPORTED = {errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOLCK, errno.ENOSYS, errno.ENOTSUP}

# Tests turn leases off to exercise the fallback; so can an operator, e.g. to compare.
enabled = os.environ.get("SWARM_NO_LEASES", "") == ""


class Lease(Enum):
    GRANTED = "granted"
    BUSY = "busy"  # another process has the file open for writing
    UNSUPPORTED = "unsupported"  # not the owner, no CAP_LEASE, or a file system without leases


def take(fd: int) -> Lease:
    """Try to take a read lease on the open file `fd` (opened read-only by the caller)."""
    if not enabled:
        return Lease.UNSUPPORTED
    try:
        fcntl.fcntl(fd, _F_SETSIG, _SIGNAL)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return Lease.BUSY
        if exc.errno in _UNSUPPORTED:
            return Lease.UNSUPPORTED
        raise
    return Lease.GRANTED


def intact(fd: int) -> bool:
    """True while the lease on `fd` is held and no writer is waiting for it."""
    try:
        return fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK
    except OSError:
        return False


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def probe(fd: int) -> Lease:
    """Whether a lease could be taken right now (taken and released at once)."""
    state = take(fd)
    if state is Lease.GRANTED:
        release(fd)
    return state

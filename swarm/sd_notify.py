"""systemd's readiness protocol (`Type=notify`): one datagram to $NOTIFY_SOCKET per state change.

A dozen lines instead of a dependency. Without $NOTIFY_SOCKET (not started by systemd) nothing is
sent; a failure to send is logged and never stops the daemon.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def sd_notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to the service manager; True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify the service manager (%s): %s", state.split("=")[0], exc)
        return False
    return True

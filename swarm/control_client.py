"""Talking to a running daemon through its control socket (`<state_dir>/control.sock`).

The socket is the daemon's: mode 0600 in its 0700 state folder, so only its user reaches it. A
client that cannot connect (no socket, or a stale one left by a killed daemon) gets
`DaemonUnavailable`, and only then: once a request was sent, a failure is a `ControlError`, since
the daemon may have made the edit (falling back to a direct file edit could make it twice).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

CONTROL_SOCKET = "control.sock"
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes, with the final NUL
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 30.0  # an edit waits for its render; a busy daemon may take a while


class DaemonUnavailable(Exception):
    """No daemon is listening on the control socket."""


class ControlError(ValueError):
    """The daemon refused the request or failed to answer; the message is one line."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / CONTROL_SOCKET


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """`path` itself, or, when too long for a unix socket address, the same file reached through
    an open descriptor of its folder (`/proc/self/fd/N/NAME`)."""
    if len(os.fsencode(path)) <= _MAX_UNIX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlClient:
    def __init__(self, state_dir: Path) -> None:
        self.path = socket_path(state_dir)

    async def get(self, route: str, *, timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        return await self._request("GET", route, None, timeout)

    async def post(
        self, route: str, body: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT_S
    ) -> dict[str, Any]:
        return await self._request("POST", route, body, timeout)

    async def _request(
        self, method: str, route: str, body: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        if not self.path.exists():
            raise DaemonUnavailable(f"no control socket at {self.path}")
        try:
            with short_path(self.path) as address:
                transport = httpx2.AsyncHTTPTransport(uds=address, retries=0)
                limits = httpx2.Timeout(timeout, connect=CONNECT_TIMEOUT_S)
                async with httpx2.AsyncClient(transport=transport, timeout=limits) as client:
                    response = await client.request(method, f"http://swarm{route}", json=body)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, FileNotFoundError) as exc:
            raise DaemonUnavailable(f"no daemon listening on {self.path}: {exc}") from None
        except httpx2.HTTPError as exc:
            raise ControlError(
                f"the daemon did not answer ({type(exc).__name__}): the edit may or may not "
                "have been made; check with memory_read"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            raise ControlError(f"the daemon answered {response.status_code} without JSON") from None
        if response.status_code >= 400 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise ControlError(str(error or f"the daemon answered {response.status_code}"))
        return answer

"""Serving a Starlette app with uvicorn inside the daemon's event loop.

Why these: the `mcp` SDK (swarm mcp) already brings Starlette and uvicorn, so the daemon's HTTP
endpoints and its control socket cost no new dependency, and a maintained HTTP/1.1 server (h11:
request limits, malformed requests answered 400, graceful shutdown) replaces hand-written
parsing. uvicorn runs as a task of the daemon, not as the process's server: the daemon keeps its
own SIGTERM/SIGINT handling, and the server stops when the daemon says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

BACKLOG = 64


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the daemon owns SIGTERM and SIGINT), and without
    its main loop's ten wake-ups a second: it waits for the daemon's stop event instead."""

    def __init__(
        self, config: uvicorn.Config, stop: asyncio.Event, on_stop: Callable[[], None] | None
    ) -> None:
        super().__init__(config)
        self._stop = stop
        self._on_stop = on_stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers once
        await self._stop.wait()
        if self._on_stop is not None:
            self._on_stop()


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free one); OSError when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=False)


async def serve_app(
    app: ASGIApp,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    grace: float = 2.0,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve `app` on the listening `sock` until `stop` is set (then `on_stop()` runs, and
    requests in flight get `grace` seconds) or until cancelled; the socket is closed either way."""
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        backlog=BACKLOG,
        timeout_graceful_shutdown=max(1, round(grace)),
    )
    server = _Server(config, stop, on_stop)
    try:
        await server.serve(sockets=[sock])
    finally:
        for listener in getattr(server, "servers", []):
            listener.close()  # also when cancelled before its own shutdown closed them
        sock.close()

"""The status page: `GET /` (one HTML file, its CSS and script inline: the daemon may run
offline, so nothing is loaded from elsewhere) and `GET /api/swarm`, which the page polls.

`/api/swarm` is the swarm as `swarm status --json` computes it (from Redis, with this daemon's
settings and key) plus this node's recent merges (swarm/merges.py). Computing the view reads
the heartbeats and the log tail, so it runs in a worker thread (its own loop and connection,
as the control socket's status does) at most once per `VIEW_TTL_S` however many pages poll.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

if TYPE_CHECKING:
    from swarm.runtime import Runtime

VIEW_TTL_S = 1.5  # the page polls every 2 s


class StatusPage:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._html: bytes | None = None
        self._view: tuple[float, dict[str, Any]] | None = None
        self._computing: asyncio.Task[dict[str, Any]] | None = None

    async def page(self, request: Request) -> Response:
        if self._html is None:
            self._html = resources.files(__package__).joinpath("status_page.html").read_bytes()
        return HTMLResponse(self._html)

    async def data(self, request: Request) -> Response:
        runtime = self.runtime
        answer = {
            "node": runtime.node_id,
            "swarm": runtime.settings.swarm,
            "generated_at": time.time(),
            **await self._swarm_view(),
            "merges": runtime.node.merges.entries(),
        }
        return JSONResponse(answer)

    async def _swarm_view(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._view is not None and now - self._view[0] < VIEW_TTL_S:
            return self._view[1]
        if self._computing is None:  # one computation for every request waiting on it
            from swarm.control import swarm_view

            self._computing = asyncio.get_running_loop().create_task(
                swarm_view(self.runtime.settings)
            )
        computing = self._computing
        try:
            view = await asyncio.shield(computing)
        finally:
            if computing.done() and self._computing is computing:
                self._computing = None
        self._view = (time.monotonic(), view)
        return view

"""The sidecar's HTTP side: liveness, readiness, this node's status, Prometheus metrics, and the
status page (`page.py`).

Starlette routes served by uvicorn in the daemon's loop (`serving.py` says why); one request per
connection (`Connection: close`) and nothing cached, as curl, probes and scrapers expect. The
handlers run on the event loop thread, where the store and the documents live, so they read the
runtime directly. Only these read-only routes are on TCP: the control socket's edits
(swarm/control.py) stay on the unix socket only its user can open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import fields, is_dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarm.http.page import StatusPage
from swarm.http.serving import listen_tcp, serve_app
from swarm.metrics import CONTENT_TYPE_LATEST, registry_for, scrape
from swarm.runtime import not_ready_reason

if TYPE_CHECKING:
    from swarm.runtime import Runtime

log = logging.getLogger(__name__)

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_HEADERS = [(b"cache-control", b"no-store"), (b"connection", b"close")]
_ROUTES_HINT = "try / (the status page) /healthz /readyz /status /metrics"
Handler = Callable[[Request], Awaitable[Response]]


def _text(status: HTTPStatus, body: str, content_type: str = _TEXT) -> Response:
    return Response(body.encode(), status_code=status.value, media_type=content_type)


def _plain_counters(counters: Any) -> dict[str, Any]:
    """A counters dataclass as JSON-ready values (histograms and sample windows left out)."""
    assert is_dataclass(counters)
    plain = {}
    for item in fields(counters):
        value = getattr(counters, item.name)
        if isinstance(value, int | float | str | dict) or value is None:
            plain[item.name] = value
    return plain


def node_status(runtime: Runtime) -> dict[str, Any]:
    """This node's view of itself: its heartbeat, counters and connection state."""
    transport = runtime.transport
    reason = not_ready_reason(runtime)
    return {
        "node": runtime.node_id,
        "swarm": runtime.settings.swarm,
        **runtime.replicator.presence_info(),
        "ready": reason is None,
        "not_ready_reason": reason,
        "redis": {
            "connected": transport.connected,
            "reconnects": transport.reconnects,
            "rejected": transport.rejected,
            "last_error": transport.last_error,
            "log_length": transport.log_length,
        },
        "counters": {
            "node": _plain_counters(runtime.node.counters),
            "replication": _plain_counters(runtime.replicator.counters),
        },
    }


class _Closing:
    """Every answer says `Connection: close` and `Cache-Control: no-store` (404s and 405s too),
    its header names spelled as before uvicorn served them (`Content-Length`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *_HEADERS]
                message["headers"] = [(_spelled(name), value) for name, value in headers]
            await send(message)

        await self.app(scope, receive, sending)


def _spelled(name: bytes) -> bytes:
    return b"-".join(part.capitalize() for part in name.split(b"-"))


def _guarded(handler: Handler) -> Handler:
    """One broken endpoint answers 500 and is logged; it never takes the sidecar down."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.url.path)
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")

    return guarded


class HttpServer:
    """The HTTP endpoints of one runtime: `bind`, then `serve` until a stop event (the daemon),
    or `start` and `close` (a server on its own)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = registry_for(runtime)
        page = StatusPage(runtime)
        routes = [
            Route("/", _guarded(page.page), methods=["GET"]),
            Route("/api/swarm", _guarded(page.data), methods=["GET"]),
            Route("/healthz", _guarded(self.healthz), methods=["GET"]),
            Route("/readyz", _guarded(self.readyz), methods=["GET"]),
            Route("/status", _guarded(self.status), methods=["GET"]),
            Route("/metrics", _guarded(self.metrics), methods=["GET"]),
        ]
        self.app = _Closing(
            Starlette(
                routes=routes,
                exception_handlers={404: _not_found, 405: _not_allowed},
            )
        )
        self._sock: socket.socket | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when bound to port 0)."""
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def bind(self, host: str, port: int) -> None:
        """Listen now (OSError when the address is taken): a bad --http stops the start."""
        self._sock = listen_tcp(host, port)

    def serve(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        """Serve until `stop` is set (requests in flight are answered first)."""
        assert self._sock is not None
        return serve_app(self.app, self._sock, stop)

    async def start(self, host: str, port: int) -> None:
        self.bind(host, port)
        self._task = asyncio.get_running_loop().create_task(self.serve(self._stop))

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def healthz(self, request: Request) -> Response:
        return _text(HTTPStatus.OK, "ok\n")

    async def readyz(self, request: Request) -> Response:
        reason = not_ready_reason(self.runtime)
        if reason is None:
            return _text(HTTPStatus.OK, "ready\n")
        return _text(HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {reason}\n")

    async def status(self, request: Request) -> Response:
        body = json.dumps(node_status(self.runtime), indent=2, sort_keys=True) + "\n"
        return _text(HTTPStatus.OK, body, _JSON)

    async def metrics(self, request: Request) -> Response:
        return Response(scrape(self.registry), media_type=CONTENT_TYPE_LATEST)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _text(HTTPStatus.NOT_FOUND, f"not found: {_ROUTES_HINT}\n")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _text(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD\n")


__all__ = ["HttpServer", "node_status"]

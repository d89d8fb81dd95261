"""The sidecar's HTTP side: liveness, readiness, this node's status, Prometheus metrics.

Four read-only GET endpoints do not need a web framework: asyncio's server, one request per
connection (`Connection: close`), bounded reads. Handlers run on the event loop thread, where the
store and the documents live, so they read the runtime directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, fields, is_dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from swarm.metrics import CONTENT_TYPE_LATEST, registry_for, scrape
from swarm.transport.redis_errors import CONNECTION

if TYPE_CHECKING:
    from swarm.daemon import Runtime

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT_S = 5.0
_MAX_HEAD_BYTES = 16 * 1024
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = _TEXT


def not_ready_reason(runtime: Runtime) -> str | None:
    """Why the sidecar is not ready, or None when it is (same rule as `Runtime.ready`)."""
    problems = runtime.transport.problems
    if not runtime.transport.connected:
        known = problems.get(CONNECTION) if problems else None
        if known is not None:
            return known.message
        error = runtime.transport.last_error
        return "Redis unreachable" + (f": {error}" if error else "")
    if problems:
        return problems.newest()
    if not runtime.replicator.caught_up:
        return "catching up from Redis"
    if not runtime.reconciled.is_set():
        return "initial reconcile of the memory folder not finished"
    if runtime.node.deletions_held is not None:
        return f"deletions held: {runtime.node.deletions_held} (run swarm confirm-deletes)"
    return None if runtime.ready else "not ready"


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


class HttpServer:
    """A running HTTP endpoint of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = registry_for(runtime)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, host, port, limit=_MAX_HEAD_BYTES
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Python 3.12+ waits for open connections too; ours end within the request timeout.
            await self._server.wait_closed()

    def respond(self, method: str, target: str) -> Response:
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD\n")
        if path == "/healthz":
            return Response(HTTPStatus.OK, b"ok\n")
        if path == "/readyz":
            reason = not_ready_reason(self.runtime)
            if reason is None:
                return Response(HTTPStatus.OK, b"ready\n")
            return Response(HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {reason}\n".encode())
        if path == "/status":
            body = json.dumps(node_status(self.runtime), indent=2, sort_keys=True) + "\n"
            return Response(HTTPStatus.OK, body.encode(), _JSON)
        if path == "/metrics":
            return Response(HTTPStatus.OK, scrape(self.registry), CONTENT_TYPE_LATEST)
        return Response(HTTPStatus.NOT_FOUND, b"not found: try /healthz /readyz /status /metrics\n")

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            method, target = await asyncio.wait_for(_read_request(reader), _REQUEST_TIMEOUT_S)
            response = self._safe_respond(method, target)
            include_body = method != "HEAD"
        except (_BadRequest, asyncio.LimitOverrunError, ValueError) as exc:
            response, include_body = Response(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode()), True
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        try:
            writer.write(_encode(response, include_body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _safe_respond(self, method: str, target: str) -> Response:
        try:
            return self.respond(method, target)
        except Exception:  # one broken endpoint must not take the sidecar down
            log.exception("HTTP %s %s failed", method, target)
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")


class _BadRequest(ValueError):
    """A request line or head that is not HTTP/1.x."""


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("bad request line")
    return parts[0], parts[1]


def _encode(response: Response, include_body: bool) -> bytes:
    head = (
        f"HTTP/1.1 {response.status.value} {response.status.phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (response.body if include_body else b"")


async def start_http(runtime: Runtime, host: str, port: int) -> HttpServer:
    """Serve /healthz /readyz /status /metrics for `runtime` until `close()`."""
    server = HttpServer(runtime)
    await server.start(host, port)
    log.info("http on %s:%d", host, server.port)
    return server


__all__ = ["HttpServer", "Response", "node_status", "not_ready_reason", "start_http"]

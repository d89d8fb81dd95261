"""The daemon's control socket: where `swarm mcp` and `swarm remember` hand it their edits.

A small Starlette app on a unix socket in the state folder (`control.sock`, mode 0600), served by
uvicorn inside the daemon's event loop like the TCP endpoints (swarm/http/serving.py). Routes
(JSON in and out; a refusal is a 4xx with `{"error": "..."}`):

- `GET /v1/info`: node, swarm, folder, readiness.
- `POST /v1/append` `{path, text, section}` and `POST /v1/replace` `{path, old, new}`: the edit, as
  a CRDT edit of the node's document (a private file: a plain file edit that never leaves the
  node); answers once the file on disk shows it, with the state vector right after the edit.
- `POST /v1/wait` `{path, sv, outbox_id, timeout}`: until every online peer's heartbeat state
  vector for the file covers `sv` (and the update is in Redis), or the timeout.
- `POST /v1/rollback` `{path, to | undo_node + since, apply, expect}`: `swarm rollback`'s
  preview (a diff), or the rollback made as an edit of this node.
- `GET /v1/status`: this node, its latest edit made here and whether it reached every online peer,
  and the swarm's view as `swarm status --json` computes it.

These routes change memory, so they are never on the TCP port (swarm/http/), which anyone who
can reach it may use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from swarm.agent_api.files import edit_file
from swarm.agent_api.paths import Kind, MemoryPaths
from swarm.bridge import RenderError
from swarm.control_client import short_path, socket_path
from swarm.http.serving import BACKLOG, serve_app
from swarm.memory import vector
from swarm.memory.edits import Placement, plan_append, plan_replace
from swarm.runtime import not_ready_reason
from swarm.transport.base import TransportError

if TYPE_CHECKING:
    from swarm.runtime import Runtime

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often a wait looks at the peers' heartbeats (they change once a heartbeat)
_MAX_WAIT_S = 600.0
_SHUTDOWN_GRACE_S = 2.0  # in-flight requests (a long wait) get this long once the daemon stops

Handler = Callable[[Request], Awaitable[JSONResponse]]


class _Refused(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _refusing(handler: Handler) -> Handler:
    """Bad input answers 4xx with a one-line error (PathRefused, EditError and FileProblem are
    ValueErrors too, and so is Node.edit's refusal of a path the node does not sync)."""

    async def wrapped(request: Request) -> JSONResponse:
        try:
            return await handler(request)
        except (_Refused, ValueError) as exc:
            status = exc.status if isinstance(exc, _Refused) else 400
            return JSONResponse({"error": str(exc)}, status_code=status)

    return wrapped


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _Refused("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused("the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Refused(f"{key!r} must be a string")
    return value


class ControlApi:
    """The handlers, bound to one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.paths = MemoryPaths(
            root=settings.dir,
            include=settings.include,
            ignore=settings.ignore,
            private=settings.private,
            state_dir=settings.resolved_state_dir,
        )
        self.latest: dict[str, Any] | None = None  # this node's latest edit made through here
        self.stopping = asyncio.Event()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/info", _refusing(self.info), methods=["GET"]),
            Route("/v1/append", _refusing(self.append), methods=["POST"]),
            Route("/v1/replace", _refusing(self.replace), methods=["POST"]),
            Route("/v1/wait", _refusing(self.wait), methods=["POST"]),
            Route("/v1/status", _refusing(self.status), methods=["GET"]),
            Route("/v1/rollback", _refusing(self.rollback), methods=["POST"]),
        ]

    async def rollback(self, request: Request) -> JSONResponse:
        """`swarm rollback` (swarm/audit/control.py)."""
        from swarm.audit.control import rollback

        body = await _body(request)
        raw = _text(body, "path")
        assert raw is not None
        rel, kind = self.paths.resolve(raw)
        if kind is Kind.PRIVATE:
            raise _Refused(f"{rel} is private: it has no swarm history")
        return JSONResponse(await rollback(self.runtime, rel, body))

    async def info(self, request: Request) -> JSONResponse:
        runtime = self.runtime
        return JSONResponse(
            {
                "node": runtime.node_id,
                "swarm": runtime.settings.swarm,
                "dir": str(runtime.settings.dir),
                "pid": os.getpid(),
                "ready": runtime.ready,
            }
        )

    async def append(self, request: Request) -> JSONResponse:
        body = await _body(request)
        text = _text(body, "text")
        section = _text(body, "section", optional=True)
        assert text is not None
        return await self._edit(body, lambda current: plan_append(current, text, section))

    async def replace(self, request: Request) -> JSONResponse:
        body = await _body(request)
        old, new = _text(body, "old"), _text(body, "new")
        assert old is not None and new is not None
        return await self._edit(body, lambda current: plan_replace(current, old, new))

    async def _edit(
        self, body: dict[str, Any], change: Callable[[str], Placement]
    ) -> JSONResponse:
        raw = _text(body, "path")
        assert raw is not None
        rel, kind = self.paths.resolve(raw)
        settings, node = self.runtime.settings, self.runtime.node
        if kind is Kind.PRIVATE:
            placed = await asyncio.to_thread(
                edit_file,
                settings.dir,
                rel,
                change,
                state_dir=settings.resolved_state_dir,
                max_bytes=settings.max_file_bytes,
            )
            return JSONResponse(_placed(rel, placed, synced=False))
        problem = node.counters.skipped_files.get(rel)
        if problem is not None:
            raise _Refused(f"{rel} is not synced: {problem}")
        made: list[Placement] = []

        def apply(current: str) -> str:
            made.append(change(current))
            return made[-1].content

        sv, outbox_id = await node.edit(rel, apply)
        answer = _placed(rel, made[-1], synced=True)
        try:
            await node.render(rel)  # the agent reads the file next: it must show the edit
        except RenderError as exc:  # stored and sent all the same; the render loop retries
            answer["render_error"] = str(exc)
        write = {
            "path": rel,
            "sv": base64.b64encode(sv).decode(),
            "outbox_id": outbox_id,
            "at": time.time(),
        }
        if outbox_id is not None:
            self.latest = write
        answer["changed"] = outbox_id is not None
        answer["write"] = write
        return JSONResponse(answer)

    async def wait(self, request: Request) -> JSONResponse:
        body = await _body(request)
        rel = _text(body, "path")
        assert rel is not None
        try:
            want = vector.decode(base64.b64decode(str(body.get("sv", "")), validate=True))
        except (binascii.Error, ValueError):
            raise _Refused("'sv' must be a base64 state vector") from None
        outbox_id = body.get("outbox_id")
        timeout = body.get("timeout", 0)
        if not isinstance(outbox_id, int | None) or not isinstance(timeout, int | float):
            raise _Refused("'outbox_id' must be an integer and 'timeout' a number of seconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(float(timeout), _MAX_WAIT_S))
        while True:
            state = await self.delivery(rel, want, outbox_id)
            left = deadline - loop.time()
            if state["delivered"] or left <= 0 or self.stopping.is_set():
                return JSONResponse(state)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(_POLL_S, left))

    async def delivery(
        self, path: str, want: vector.StateVector, outbox_id: int | None
    ) -> dict[str, Any]:
        """Whether the edit is in Redis and every online peer's heartbeat covers `want`."""
        runtime = self.runtime
        oldest = runtime.store.outbox(limit=1)
        in_redis = outbox_id is None or not oldest or oldest[0].id > outbox_id
        state: dict[str, Any] = {"path": path, "in_redis": in_redis, "delivered": False}
        try:
            online = await runtime.transport.presence()
            peers = sorted(node for node in online if node != runtime.node_id)
            files = await runtime.transport.files_of(peers)
        except TransportError as exc:
            return {**state, "peers": [], "missing_on": [], "error": f"Redis: {exc}"}
        missing = [peer for peer in peers if not _covers(files.get(peer, {}).get(path), want)]
        return {
            **state,
            "delivered": in_redis and not missing,
            "peers": peers,
            "missing_on": missing,
        }

    async def status(self, request: Request) -> JSONResponse:

        runtime = self.runtime
        latest = self.latest
        if latest is not None:
            want = vector.decode(base64.b64decode(latest["sv"]))
            latest = {**latest, **await self.delivery(latest["path"], want, latest["outbox_id"])}
        answer: dict[str, Any] = {
            "node": runtime.node_id,
            "swarm": runtime.settings.swarm,
            "ready": runtime.ready,
            "not_ready_reason": not_ready_reason(runtime),
            "outbox": runtime.store.outbox_depth(),
            "latest_write": latest,
        }
        answer.update(await swarm_view(runtime.settings))
        return JSONResponse(answer)


async def swarm_view(settings: Any) -> dict[str, Any]:
    """`swarm status --json` of the settings' swarm, as {"view": ...} or {"view_error": ...}.
    Computed in a thread with its own event loop and Redis connection: reading the log tail
    must not hold up the loop it is called from."""
    from swarm.status import StatusError, fetch_view

    try:
        view = await asyncio.to_thread(asyncio.run, fetch_view(settings))
    except StatusError as exc:
        return {"view": None, "view_error": str(exc)}
    return {"view": view.to_json(), "view_error": None}


def _covers(facts: Any, want: vector.StateVector) -> bool:
    if not isinstance(facts, dict):
        return not want
    try:
        have = vector.decode(base64.b64decode(facts["sv"]))
    except (KeyError, TypeError, ValueError):
        return False
    return vector.covers(have, want)


def _placed(rel: str, placed: Placement, *, synced: bool) -> dict[str, Any]:
    return {
        "path": rel,
        "line": placed.line,
        "lines": placed.lines,
        "created_section": placed.created_section,
        "synced": synced,
    }


def bind_socket(path: Path) -> socket.socket:
    """A unix socket at `path` (a stale one, left by a killed daemon, is replaced), mode 0600
    before it listens: no other user can connect in between."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with short_path(path) as address:
            sock.bind(address)
        os.chmod(path, 0o600)
    except OSError:
        sock.close()
        raise
    return sock


def serve_control(runtime: Runtime, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
    """Open the control socket now (it accepts connections once this returns: a client never
    finds the daemon ready but the socket not yet listening) and return the coroutine that
    serves it until `stop` is set; then requests in flight get a couple of seconds (a wait ends
    at once) and the socket is removed."""
    path = socket_path(runtime.settings.resolved_state_dir)
    try:
        sock = bind_socket(path)
        sock.listen(BACKLOG)
    except OSError as exc:  # edits then go straight to the files, which the daemon ingests
        log.error("no control socket at %s: %s", path, exc)
        return _nothing()
    log.info("control socket %s", path)
    return _serve(ControlApi(runtime), sock, path, stop)


async def _nothing() -> None:
    return None


async def _serve(api: ControlApi, sock: socket.socket, path: Path, stop: asyncio.Event) -> None:
    app = Starlette(routes=api.routes())
    try:
        await serve_app(app, sock, stop, grace=_SHUTDOWN_GRACE_S, on_stop=api.stopping.set)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

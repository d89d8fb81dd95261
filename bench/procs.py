"""Benchmark workers in their own processes (spawned: no state inherited from the parent).

Protocol over a pipe: the worker sends "ready" once its node is up, waits for "go", then sends
its result (a dict) and exits. A worker that dies makes the whole scenario fail, and every worker
still running is stopped.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from typing import Any

READY = "ready"
GO = "go"


class WorkerError(RuntimeError):
    """A benchmark worker failed or did not answer in time; the message is one line."""


def _recv(conn: Connection, timeout: float, what: str) -> Any:
    if not conn.poll(timeout):
        raise WorkerError(f"no {what} from a worker within {timeout:.0f} s")
    try:
        return conn.recv()
    except EOFError:
        raise WorkerError(f"a worker exited before sending {what}") from None


def run_workers(
    target: Callable[[Any, Connection], None],
    plans: Sequence[Any],
    *,
    timeout: float,
    on_go: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    pipes: list[Connection] = []
    try:
        for plan in plans:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(plan, child), daemon=True)
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        for conn in pipes:
            message = _recv(conn, timeout, "ready")
            if message != READY:
                raise WorkerError(f"worker said {message!r} instead of ready")
        if on_go is not None:
            on_go()
        for conn in pipes:
            conn.send(GO)
        results: list[dict[str, Any]] = []
        end = time.monotonic() + timeout
        for conn in pipes:
            result = _recv(conn, max(0.1, end - time.monotonic()), "result")
            if isinstance(result, str):
                raise WorkerError(result)
            results.append(result)
        for proc in procs:
            proc.join(timeout=30)
        return results
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)


def report_failure(conn: Connection, exc: BaseException) -> None:
    conn.send(f"worker failed: {type(exc).__name__}: {' '.join(str(exc).split())}"[:500])


def send_result(conn: Connection, main: Coroutine[Any, Any, Any]) -> None:
    """Run a worker's coroutine and send its result to the harness, or its failure as one line."""
    try:
        conn.send(asyncio.run(main))
    except BaseException as exc:
        report_failure(conn, exc)

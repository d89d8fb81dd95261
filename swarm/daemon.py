"""`swarm daemon`: one sidecar process, from settings to a clean exit.

Start-up order: open the store (a corrupt one stops here, untouched), rebuild documents, subscribe,
catch up from Redis (bounded wait: Redis being down must not stop local work), reconcile the folder,
then watch. Shutdown on SIGTERM/SIGINT: stop taking new work, flush the outbox within the grace
period, persist, exit 0; a second signal exits at once (every commit is already durable).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from swarm.config import DaemonSettings
from swarm.runtime import Runtime, open_runtime, redact
from swarm.sd_notify import sd_notify

if TYPE_CHECKING:
    from swarm.http import HttpServer

log = logging.getLogger("swarm.daemon")

_SWITCH_INTERVAL_S = 0.0005
_INITIAL_CATCHUP_WAIT = 3.0


async def serve(runtime: Runtime, stop: asyncio.Event) -> None:
    """Run every loop of the sidecar until `stop` is set, then shut down gracefully."""
    node, replicator = runtime.node, runtime.replicator
    # Renders and file reads run in worker threads; with Python's default 5 ms GIL switch
    # interval a message arriving meanwhile could wait that long for the event loop.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    # One commit per turn of the loop, still before anything leaves the node (see store.py).
    runtime.store.defer_commits(asyncio.get_running_loop())
    http = _bind_http(runtime)  # before anything runs: a taken address stops the start
    await runtime.transport.start()
    log.info(
        "node %s syncing %s in swarm %s via %s",
        runtime.node_id,
        runtime.settings.dir,
        runtime.settings.swarm,
        redact(runtime.settings.redis_url),
    )
    work_stop, http_stop = asyncio.Event(), asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            serving = group.create_task(http.serve(http_stop)) if http is not None else None
            group.create_task(replicator.run(work_stop))
            watching = asyncio.Event()
            group.create_task(node.watch_loop(work_stop, watching))
            group.create_task(node.render_loop(work_stop))
            group.create_task(node.maintenance_loop(work_stop))
            await watching.wait()
            await replicator.wait_caught_up(_INITIAL_CATCHUP_WAIT)
            await node.reconcile()
            runtime.reconciled.set()
            from swarm.control import serve_control  # imported late: only the daemon needs it

            group.create_task(serve_control(runtime, work_stop))
            log.info("ready: %d files, outbox %d", len(node.docs), runtime.store.outbox_depth())
            sd_notify("READY=1")
            await stop.wait()
            log.info("stopping: flushing the outbox (grace %.1fs)", runtime.settings.grace)
            sd_notify("STOPPING=1")
            work_stop.set()  # no new work: the watcher stops taking agent writes
            await _final_flush(runtime)
            http_stop.set()  # /readyz and /metrics answered through the flush; now stop
            if serving is not None:
                await serving
            raise _Shutdown
    except* _Shutdown:
        pass
    finally:
        await runtime.node.close()
        await runtime.transport.close()
        runtime.store.close()
        if runtime.state_lock is not None:
            runtime.state_lock.close()
        log.info("stopped")


def _bind_http(runtime: Runtime) -> HttpServer | None:
    address = runtime.settings.http_address
    if address is None:
        return None
    from swarm.http import HttpServer  # imported late: only the daemon needs it

    http = HttpServer(runtime)
    http.bind(*address)  # OSError (address taken): a one-line error, exit 2
    log.info("http on %s:%d", address[0], http.port)
    return http


async def _final_flush(runtime: Runtime) -> None:
    try:
        left = await asyncio.wait_for(runtime.replicator.flush(), runtime.settings.grace)
    except TimeoutError:
        left = runtime.store.outbox_depth()
    except Exception as exc:  # Redis down at shutdown: the outbox stays for the next start
        log.warning("outbox not flushed: %s", exc)
        left = runtime.store.outbox_depth()
    if left:
        log.warning("%d updates stay in the outbox; they are sent on the next start", left)


class _Shutdown(Exception):
    """Raised inside the task group to cancel every loop at once, after the final flush."""


@asynccontextmanager
async def running(
    runtime: Runtime, stop: asyncio.Event | None = None, ready_timeout: float | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """Serve `runtime` until the block ends, then shut it down gracefully (outbox flushed).

    Entered once the runtime is caught up (or gave up waiting) and has reconciled its folder; a
    start that fails raises what stopped it, one that takes longer than `ready_timeout` raises
    TimeoutError. Yields the serving task: it ends when `stop` is set and the shutdown is done.
    The daemon, the bench workers and the test harnesses all start a sidecar this way."""
    stop = stop if stop is not None else asyncio.Event()
    task = asyncio.create_task(serve(runtime, stop), name=f"swarm-serve-{runtime.node_id}")
    ready = asyncio.create_task(runtime.reconciled.wait())
    try:
        await asyncio.wait({task, ready}, timeout=ready_timeout, return_when="FIRST_COMPLETED")
    except BaseException:  # cancelled while starting: leave nothing running
        ready.cancel()
        task.cancel()
        raise
    if not ready.done():
        ready.cancel()
        stop.set()
        await task  # re-raises what made serve() end early
        raise TimeoutError(f"node {runtime.node_id} not ready within {ready_timeout} s")
    try:
        yield task
    finally:
        stop.set()
        await task


async def run(settings: DaemonSettings) -> int:
    runtime = open_runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting now (everything stored is committed)")
            runtime.store.commit()  # the turn in flight (group commit)
            os._exit(128 + signum)
        log.info("%s received", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with running(runtime, stop) as serving:
            await serving
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0

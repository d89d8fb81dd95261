"""How replication's loops wait: on a wake-up event, retrying with backoff while the log fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from swarm.transport.base import TransportError
from swarm.transport.redis_client import ReconnectBackoff

log = logging.getLogger("swarm.replication")


async def run_on_wake(
    stop: asyncio.Event,
    wake: asyncio.Event,
    action: Callable[[], Awaitable[None]],
    what: str,
    on_failure: Callable[[], None] = lambda: None,
) -> None:
    """Run `action` each time `wake` is set; while the log fails, retry with capped backoff and
    jitter (so a swarm's nodes do not all come back at the same instant)."""
    backoff = ReconnectBackoff(base=0.05, cap=5.0)
    while not stop.is_set():
        await wake.wait()
        wake.clear()
        try:
            await action()
            backoff.reset()
        except TransportError as exc:
            on_failure()
            delay = backoff.next_delay()
            log.debug("%s failed, retrying in %.2fs: %s", what, delay, exc)
            await sleep_or_stop(stop, delay)
            wake.set()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)

"""Helpers for tests against real Redis topologies (cluster, Sentinel): in-process daemons that
each enter through a URL of their own, and a late joiner that must rebuild from Redis alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from daemon_harness import (
    Agent,
    InProcessDaemon,
    awaitable_bursts,
    daemon_settings,
    describe,
    read_tree,
    wait_until_async,
)

from swarm.replication import Replicator
from swarm.runtime import Runtime

BURST_CAP_S = 90.0  # agents stop when told; this only bounds a test that never tells them


class Bursts:
    """Agents writing until told to stop, not for a fixed time: what a test makes happen meanwhile
    (a failover, a reshard) happens while they write, however slow the machine is."""

    def __init__(self, agents: list[Agent], replicators: list[Replicator]) -> None:
        self.agents = agents
        self.replicators = replicators
        self._stop = threading.Event()
        self._task = asyncio.ensure_future(
            awaitable_bursts(agents, seconds=BURST_CAP_S, stop=self._stop)
        )

    def published(self) -> int:
        return sum(r.counters.published for r in self.replicators)

    async def until_published(self, more: int, what: str) -> None:
        """Wait until the daemons published `more` envelopes than now."""
        start = self.published()
        await wait_until_async(lambda: self.published() >= start + more, what)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def runtime_of(daemon: InProcessDaemon) -> Runtime:
    assert daemon.runtime is not None
    return daemon.runtime


@asynccontextmanager
async def daemons(
    tmp_path: Path, swarm: str, urls: list[str], names: list[str], **settings_extra: str
) -> AsyncIterator[list[InProcessDaemon]]:
    """In-process daemons of `swarm`, the i-th entering the cluster through `urls[i]`."""
    async with AsyncExitStack() as stack:
        started = []
        for name, url in zip(names, urls, strict=True):
            base = tmp_path / swarm / name
            settings = daemon_settings(
                base / "mem", base / "state", name, url, swarm=swarm, **settings_extra
            )
            started.append(await stack.enter_async_context(InProcessDaemon(settings)))
        yield started


async def late_joiner_rebuilds(tmp_path: Path, swarm: str, url: str, reference: Path) -> None:
    """A new node, started while no other node runs, builds `reference`'s files from Redis."""
    async with daemons(tmp_path, swarm, [url], ["late"]) as (late,):
        await wait_until_async(
            lambda: read_tree(late.dir) == read_tree(reference),
            "a late joiner rebuilt every file from the cluster alone",
            explain=lambda: describe([reference, late.dir]),
        )

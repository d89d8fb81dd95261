"""Helpers for tests against real Redis topologies (cluster, Sentinel): in-process daemons that
each enter through a URL of their own, and a late joiner that must rebuild from Redis alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from daemon_harness import InProcessDaemon, daemon_settings, describe, read_tree, wait_until_async

from swarm.daemon import Runtime


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

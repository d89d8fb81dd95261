"""A node on its own (no peers) in a subprocess, so a test can SIGKILL it mid-burst."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from node_harness import running_node

from swarm.devtools.membus import MemoryBus


async def main(root: Path, state: Path) -> None:
    async with running_node(MemoryBus(), "solo", root, state):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))

"""`swarm mcp`: the memory folder as MCP tools (the official `mcp` SDK's `MCPServer`), over stdio
or streamable HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from swarm import __version__
from swarm.agent_api.service import REFUSALS, MemoryService

INSTRUCTIONS = """\
Your long-term memory: markdown files (MEMORY.md, memory/YYYY-MM-DD.md daily logs, topic files)
kept identical on every engine this agent runs on. To add to memory use memory_append, to change
a line use memory_replace: never rewrite a memory file whole (a rewrite from a stale read is where
lost edits come from). memory/today names today's daily file. Before handing work over to another
engine, append with wait_for_peers so it holds what you wrote."""

PathArg = Annotated[
    str, Field(description="File inside the memory folder, e.g. MEMORY.md or memory/today.")
]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
ADDITIVE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
CHANGING = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


def build_server(service: MemoryService) -> MCPServer:
    server = MCPServer(
        "swarm-memory",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",
    )

    @server.tool(annotations=READ_ONLY)
    async def memory_read(path: PathArg) -> str:
        """Read one memory file (private files too)."""
        async with _refusals():
            return await service.read(path)

    @server.tool(annotations=READ_ONLY)
    async def memory_list() -> list[dict[str, Any]]:
        """List the memory files: path, size in bytes, last change (local time), private."""
        async with _refusals():
            return await service.files()

    @server.tool(annotations=ADDITIVE)
    async def memory_append(
        text: Annotated[str, Field(description="Lines to add, usually a bullet: '- chose X'.")],
        path: PathArg = "MEMORY.md",
        section: Annotated[
            str | None,
            Field(
                description="Heading to add under, e.g. 'Decisions' or '## Decisions'; "
                "created at the end if missing. None: the end of the file."
            ),
        ] = None,
        wait_for_peers: Annotated[
            float,
            Field(
                ge=0,
                le=600,
                description="Seconds to wait until every online peer holds the edit (0: "
                "do not wait). Peers report every heartbeat (1 s by default).",
            ),
        ] = 0,
    ) -> dict[str, Any]:
        """Add lines under a heading of a memory file, as an edit merged into the shared
        memory (never a rewrite of the file). Under a heading means after the last non-blank
        line before the next heading of the same or a higher level."""
        async with _refusals():
            return await service.append(text, path, section, wait_for_peers)

    @server.tool(annotations=CHANGING)
    async def memory_replace(
        path: PathArg,
        old: Annotated[str, Field(description="The exact line or lines to replace.")],
        new: Annotated[str, Field(description="What stands there instead ('' deletes).")],
    ) -> dict[str, Any]:
        """Replace one exact line or block of lines. Refused if `old` is not there or occurs
        more than once (then include a neighbouring line)."""
        async with _refusals():
            return await service.replace(path, old, new)

    @server.tool(annotations=READ_ONLY)
    async def memory_search(
        query: Annotated[str, Field(description="Text to find (case-insensitive).")],
        regex: Annotated[
            bool, Field(description="Treat query as a Python regular expression.")
        ] = False,
        paths: Annotated[
            list[str] | None,
            Field(description="Only these files (globs allowed, e.g. memory/*.md)."),
        ] = None,
    ) -> dict[str, Any]:
        """Find lines across the memory files: file, line number, two lines of context."""
        async with _refusals():
            return await service.search(query, regex, paths)

    @server.tool(annotations=READ_ONLY)
    async def memory_blame(path: PathArg) -> list[dict[str, Any]]:
        """Who wrote each line of a memory file: line number, text, node id and role, and when
        (seconds since the epoch; null if written before authors were recorded)."""
        async with _refusals():
            return await service.blame(path)

    @server.tool(annotations=READ_ONLY)
    async def memory_log(path: PathArg) -> dict[str, Any]:
        """A memory file's edits in order, oldest first: when (as this node got it), which
        node, the lines added and removed."""
        async with _refusals():
            return await service.log(path)

    @server.tool(annotations=READ_ONLY)
    async def memory_status() -> dict[str, Any]:
        """This swarm's nodes, which are online, whether they converged (hold the same memory),
        and whether this node's latest edit made here reached every online peer."""
        async with _refusals():
            return await service.status()

    return server


class _refusals:
    """Turn a refusal (bad path, ambiguous replace, ...) into the tool error the agent reads."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if exc is not None and isinstance(exc, REFUSALS):
            raise ToolError(str(exc)) from None

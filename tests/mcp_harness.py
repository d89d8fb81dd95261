"""`swarm mcp` driven by the official SDK's own client: a `ClientSession` over stdio spawning the
server as an agent's MCP client would."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from daemon_harness import REPO, daemon_env
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

TOOLS = {
    "memory_read",
    "memory_list",
    "memory_append",
    "memory_replace",
    "memory_blame",
    "memory_log",
    "memory_search",
    "memory_status",
}


@contextlib.asynccontextmanager
async def mcp_session(
    errlog: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized session with `swarm mcp ARGS`; the server's stderr goes to `errlog`."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "swarm", "mcp", *args],
        env=daemon_env(env),
        cwd=REPO,
    )
    with errlog.open("a") as log:
        async with stdio_client(params, errlog=log) as (read, write):  # noqa: SIM117
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> CallToolResult:
    return await session.call_tool(tool, arguments, read_timeout_seconds=60)


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def ok(session: ClientSession, tool: str, **arguments: Any) -> Any:
    """The tool's structured result; fails the test with the tool's message if it refused."""
    result = await call(session, tool, **arguments)
    assert not result.is_error, f"{tool} refused: {text_of(result)}"
    content = result.structured_content
    if isinstance(content, dict) and set(content) == {"result"}:
        return content["result"]  # a tool returning a string or a list
    return content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The one-line message of a tool that must refuse."""
    result = await call(session, tool, **arguments)
    assert result.is_error, f"{tool} should have refused {arguments}: {result.structured_content}"
    message = text_of(result)
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    return message

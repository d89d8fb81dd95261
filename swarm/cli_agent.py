"""Commands for agents themselves: `swarm mcp` (the memory as MCP tools) and `swarm remember` (one
append, for scripts and agent hooks). Both take the daemon's settings (flags, environment, config
file), so they see the folder, its private files and its control socket as the daemon does."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import click

# `swarm remember --fiel X` is a typo, not text to remember: refused, not stored.
_LOOKS_LIKE_OPTION = re.compile(r"^--[A-Za-z][A-Za-z0-9-]*(=.*)?$")


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"swarm: {message}", err=True)
    sys.exit(code)


def _settings(flags: dict[str, Any], config: Path | None) -> Any:
    from swarm.agent_api.settings import AgentSettings
    from swarm.config import ConfigError, load_settings

    try:
        return load_settings(AgentSettings, flags, config_file=config)
    except ConfigError as exc:
        _fail(str(exc))


dir_option = click.option(
    "--dir", "dir_", type=click.Path(path_type=Path), help="Memory folder (as for the daemon)."
)
state_option = click.option(
    "--state-dir", type=click.Path(path_type=Path), help="Default: <dir>/.swarm."
)
config_option = click.option(
    "--config", type=click.Path(path_type=Path), help="TOML file with settings."
)


@click.command()
@dir_option
@state_option
@config_option
@click.option("--swarm", help="Swarm name: for memory_status when no daemon runs.")
@click.option("--redis-url", help="Redis URL: for memory_status when no daemon runs.")
@click.option("--key-file", type=click.Path(path_type=Path), help="Swarm key file, if any.")
@click.option("--http", "http", help="Serve streamable HTTP on HOST:PORT instead of stdio.")
def mcp(
    dir_: Path | None,
    state_dir: Path | None,
    config: Path | None,
    swarm: str | None,
    redis_url: str | None,
    key_file: Path | None,
    http: str | None,
) -> None:
    """Serve the memory folder to an agent as MCP tools (stdio, or --http HOST:PORT)."""
    import logging

    from swarm.agent_api.mcp_server import build_server
    from swarm.agent_api.service import MemoryService
    from swarm.config import parse_http

    flags = {
        "dir": dir_,
        "state_dir": state_dir,
        "swarm": swarm,
        "redis_url": redis_url,
        "key_file": key_file,
    }
    settings = _settings(flags, config)
    if not settings.dir.is_dir():
        _fail(f"memory folder {settings.dir} does not exist or is not a folder")
    address = None
    if http is not None:
        try:
            address = parse_http(http)
        except ValueError as exc:
            _fail(f"invalid --http: {exc}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # stdout is the protocol's
    server = build_server(MemoryService(settings))
    try:
        if address is None:
            asyncio.run(server.run_stdio_async())
        else:
            host, port = address
            asyncio.run(server.run_streamable_http_async(host=host, port=port))
    except KeyboardInterrupt:
        sys.exit(130)


class _TextCommand(click.Command):
    """Options are the command's own; every other word is text, even one starting with a dash
    ("- chose Postgres" would otherwise read as the short options -c -h ...)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    takes_value[name] = not param.is_flag
        options: list[str] = []
        words: list[str] = []
        rest = iter(args)
        for word in rest:
            if word == "--":
                words.extend(rest)
                break
            name = word.split("=", 1)[0]
            if name in takes_value:
                options.append(word)
                if takes_value[name] and "=" not in word:
                    options.append(next(rest, ""))
            elif _LOOKS_LIKE_OPTION.match(word):
                _fail(f"no such option: {name} (put -- before text that starts so)")
            else:
                words.append(word)
        return super().parse_args(ctx, [*options, "--", *words])


@click.command(cls=_TextCommand)
@click.argument("text", nargs=-1, required=True)
@click.option("--file", "file", default="MEMORY.md", show_default=True, help="Memory file.")
@click.option("--section", help="Heading to add under (created if missing).")
@dir_option
@state_option
@config_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=600),
    default=0,
    help="Seconds to wait until every online peer holds it (exit 1 if not).",
)
def remember(
    text: tuple[str, ...],
    file: str,
    section: str | None,
    dir_: Path | None,
    state_dir: Path | None,
    config: Path | None,
    wait: float,
) -> None:
    """Append TEXT to a memory file (`memory/today`: today's daily file) as an edit merged into
    the shared memory. The words are joined with spaces, as echo does; TEXT may start with a
    dash: swarm remember "- chose Postgres". Exit 0 stored (with --wait: and delivered), 1 not
    delivered in time, 2 bad input."""
    from swarm.agent_api.service import REFUSALS, MemoryService

    settings = _settings({"dir": dir_, "state_dir": state_dir}, config)
    if not settings.dir.is_dir():
        _fail(f"memory folder {settings.dir} does not exist or is not a folder")
    service = MemoryService(settings)
    try:
        answer = asyncio.run(service.append(" ".join(text), file, section, wait))
    except REFUSALS as exc:
        _fail(str(exc))
    where = f"{answer['path']} line {answer['line']}"
    if answer["stored"] == "daemon" and answer["synced"]:
        click.echo(f"stored in {where}, sent to the swarm by the daemon")
    else:
        click.echo(f"stored in {where} ({answer['note']})")
    delivery = answer.get("delivery")
    if delivery is not None:
        if not delivery.get("delivered"):
            _fail(f"not delivered: {delivery.get('reason')}", code=1)
        peers = delivery.get("peers") or []
        click.echo(f"delivered to {', '.join(peers)}" if peers else "in Redis (no peer online)")


COMMANDS = (mcp, remember)

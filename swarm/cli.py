"""The `swarm` command: daemon, status, demo, verify; memory and agent commands in their own
modules."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from swarm import __version__, cli_agent, cli_audit, cli_memory
from swarm.cli_admin import keygen
from swarm.cli_demo import demo, verify
from swarm.config import ConfigError, DaemonSettings, load_settings


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"swarm: {message}", err=True)
    sys.exit(code)


def _settings_or_exit(model: Any, flags: dict[str, Any], config: Path | None) -> Any:
    try:
        return load_settings(model, flags, config_file=config)
    except ConfigError as exc:
        _fail(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swarm")
def main() -> None:
    """One memory for an AI agent across every engine it runs on."""


# The daemon's settings as flags; `swarm doctor` takes the same, so one command line serves both.
_DAEMON_OPTIONS = (
    click.option("--dir", "dir_", type=click.Path(path_type=Path), help="Memory folder to sync."),
    click.option("--swarm", help="Swarm name: every node of one agent uses the same."),
    click.option("--node", help="This node's id (default: a stable id kept in the state folder)."),
    click.option("--redis-url", help="Redis URL, e.g. redis://127.0.0.1:6379/0."),
    click.option("--role", help="Free text shown in status, e.g. cloud or local."),
    click.option("--state-dir", type=click.Path(path_type=Path), help="Default: <dir>/.swarm."),
    click.option("--config", type=click.Path(path_type=Path), help="TOML file with settings."),
    click.option("--http", help="HOST:PORT of the status page and /healthz etc.; 0 disables."),
    click.option("--debounce-ms", type=int, help="Settle time for file events (default 30)."),
    click.option("--log-json", is_flag=True, default=None, help="One JSON object per log line."),
    click.option("--log-level", help="debug, info, warning or error."),
    click.option(
        "--key-file", type=click.Path(path_type=Path), help="Swarm key file (swarm keygen)."
    ),
)


def _daemon_options(function: Any) -> Any:
    for option in reversed(_DAEMON_OPTIONS):
        function = option(function)
    return function


def _daemon_settings(flags: dict[str, Any]) -> DaemonSettings:
    """The daemon's settings from its flags (`dir_` and `config` as click names them)."""
    config = flags.pop("config")
    flags["dir"] = flags.pop("dir_")
    settings: DaemonSettings = _settings_or_exit(DaemonSettings, flags, config)
    return settings


@main.command()
@_daemon_options
def daemon(**flags: Any) -> None:
    """Sync one memory folder with the rest of the swarm, until stopped."""
    from swarm import daemon as daemon_mod
    from swarm import logs
    from swarm.runtime import DaemonError
    from swarm.store import StoreError
    from swarm.transport.base import TransportError

    settings = _daemon_settings(flags)
    logs.setup(
        level=settings.log_level,
        json_lines=settings.log_json,
        node=settings.node or "",
        swarm=settings.swarm,
    )
    try:
        code = asyncio.run(daemon_mod.run(settings))
    except (DaemonError, StoreError, TransportError, OSError) as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


@main.command()
@click.option("--swarm", help="Swarm name (or SWARM_NAME).")
@click.option("--redis-url", help="Redis URL (or SWARM_REDIS_URL).")
@click.option("--config", type=click.Path(path_type=Path), help="TOML file with settings.")
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON instead.")
@click.option("--files", "with_files", is_flag=True, help="Also one row per file.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    help="Poll up to SECONDS for convergence before answering.",
)
@click.option("--watch", is_flag=True, help="Refresh in place until interrupted.")
@click.option("--key-file", type=click.Path(path_type=Path), help="Swarm key file (swarm keygen).")
def status(
    swarm: str | None,
    redis_url: str | None,
    config: Path | None,
    as_json: bool,
    with_files: bool,
    wait: float | None,
    watch: bool,
    key_file: Path | None,
) -> None:
    """Whether every node holds the same memory; exit 0 converged, 1 not, 2 error."""
    from rich.console import Console

    from swarm import status as status_mod
    from swarm.config import StatusSettings

    if watch and as_json:
        _fail("--watch and --json cannot be combined")
    settings: StatusSettings = _settings_or_exit(
        StatusSettings, {"swarm": swarm, "redis_url": redis_url, "key_file": key_file}, config
    )
    options = status_mod.StatusOptions(
        settings=settings,
        as_json=as_json,
        with_files=with_files,
        wait=wait,
        watch=watch,
    )
    try:
        code = asyncio.run(status_mod.run(options, Console()))
    except status_mod.StatusError as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else "status failed")
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


@main.command()
@_daemon_options
def doctor(**flags: Any) -> None:
    """Check a sidecar's setup (same settings as the daemon) and say how to fix what is wrong.

    One line per check; exit 0 when nothing is wrong, 1 when a check failed, 2 for bad settings.
    """
    from swarm.doctor import run_doctor

    settings = _daemon_settings(flags)
    try:
        code = asyncio.run(run_doctor(settings, click.echo))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


main.add_command(keygen)
main.add_command(demo)
main.add_command(verify)

for _command in (*cli_memory.COMMANDS, *cli_agent.COMMANDS, *cli_audit.COMMANDS):
    main.add_command(_command)

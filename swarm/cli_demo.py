"""The demo's commands of `swarm` (registered by swarm/cli.py): run the demo, and prove a run."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), help="Where the demo nodes live.")
@click.option("--redis-url", help="Use this Redis instead of starting a private redis-server.")
@click.option("--entries", type=click.IntRange(1, 1000), default=12, show_default=True)
@click.option("--swarm", default="demo", show_default=True)
def demo(workdir: Path | None, redis_url: str | None, entries: int, swarm: str) -> None:
    """Two instances of one agent (cloud and local) editing memory at once, then proof."""
    from rich.console import Console

    from swarm.devtools.demo import DemoError, run_demo

    try:
        code = run_demo(
            workdir=workdir, redis_url=redis_url, entries=entries, swarm=swarm, console=Console()
        )
    except DemoError as exc:
        click.echo(f"swarm: {exc}", err=True)
        code = 1
    sys.exit(code)


@click.command()
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path))
@click.option("--swarm", help="First ask `swarm status` whether this swarm converged.")
@click.option("--redis-url", help="Redis of that swarm (default: as `swarm status`).")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for convergence and for the folders to agree.",
)
def verify(
    folders: tuple[Path, ...], swarm: str | None, redis_url: str | None, wait: float
) -> None:
    """Prove a demo run on disk: FOLDERS (one per node) hold the same bytes, every entry the
    demo agents logged is there exactly once, and what became of the line both changed at once
    and of the stale rewrite. Exit 0 proven, 1 not, 2 cannot check."""
    from rich.console import Console

    from swarm.verify import ProofError, run_verify

    try:
        code = run_verify(
            list(folders), swarm=swarm, redis_url=redis_url, wait=wait, console=Console()
        )
    except ProofError as exc:
        click.echo(f"swarm: {exc}", err=True)
        code = 2
    sys.exit(code)

"""Administrative commands of `swarm` (registered by swarm/cli.py): key management."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from swarm.transport.keyring import KeyFileError, key_id, write_key_file


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keygen(path: Path) -> None:
    """Write a new swarm key to PATH (mode 0600; never overwrites).

    Give every node of the swarm the same file (key_file / SWARM_KEY_FILE) or its content
    (SWARM_KEY). The key id printed here is what logs and rotation steps refer to.
    """
    try:
        key = write_key_file(path)
    except KeyFileError as exc:
        click.echo(f"swarm: {exc}", err=True)
        sys.exit(2)
    click.echo(f"wrote a new swarm key to {path} (key id {key_id(key).hex()})")

"""Administrative commands of `swarm` (registered by swarm/cli.py): key management."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from swarm.transport.keyring import KeyFileError, key_id, write_key_file


def _fail(message: str) -> None:
    click.echo(f"swarm: {message}", err=True)
    sys.exit(2)


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--node",
    "node_key",
    is_flag=True,
    help="Print this node's public signing key as a writers entry (created in the state folder).",
)
@click.option("--dir", "dir_", type=click.Path(path_type=Path), help="With --node: memory folder.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="With --node: state folder.")
@click.option("--config", type=click.Path(path_type=Path), help="With --node: TOML settings.")
def keygen(
    path: Path | None,
    node_key: bool,
    dir_: Path | None,
    state_dir: Path | None,
    config: Path | None,
) -> None:
    """Write a new swarm key to PATH (mode 0600; never overwrites), or with --node print this
    node's writer entry for protected files.

    Give every node of the swarm the same swarm key file (key_file / SWARM_KEY_FILE) or its
    content (SWARM_KEY). The key id printed here is what logs and rotation steps refer to.

    --node prints NODE:PUBLIC_KEY: add it to the `writers` setting of every node (SWARM_WRITERS)
    to let this node change the protected files (SOUL.md, safety/** ...). The private key stays
    in the state folder and is never printed.
    """
    if node_key:
        if path is not None:
            _fail("give either PATH (a new swarm key) or --node, not both")
        _print_writer_entry(dir_, state_dir, config)
        return
    if path is None:
        _fail("give PATH for a new swarm key, or --node for this node's writer entry")
        return
    try:
        key = write_key_file(path)
    except KeyFileError as exc:
        _fail(str(exc))
        return
    click.echo(f"wrote a new swarm key to {path} (key id {key_id(key).hex()})")


def _print_writer_entry(dir_: Path | None, state_dir: Path | None, config: Path | None) -> None:
    from swarm.config import ConfigError, load_settings
    from swarm.protect.keys import WriterKeyError, node_key, writer_entry
    from swarm.protect.settings import NodeKeySettings
    from swarm.runtime import node_id_for
    from swarm.store import Store, StoreError

    try:
        settings = load_settings(
            NodeKeySettings, {"dir": dir_, "state_dir": state_dir}, config_file=config
        )
        state = settings.resolved_state_dir
        if state is None:
            _fail("give --dir or --state-dir (the folder the daemon syncs, or its state)")
            return
        with Store(state) as store:
            node = node_id_for(store, settings.node)
        entry = writer_entry(node, node_key(state))
    except (ConfigError, WriterKeyError, StoreError) as exc:
        _fail(str(exc))
        return
    click.echo(entry)
    click.echo(f"(add it to `writers` on every node to let {node} change them)", err=True)

"""Commands on a node's own memory: what is kept of deleted files, restoring them, and confirming
deletions held back by the mass-delete guard or new files held by the new-file budget. They
need only the state folder, not Redis."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic_settings import SettingsConfigDict

from swarm.bridge import RenderConflict, RenderError, write_atomic
from swarm.config import ConfigError, Settings, load_settings, setting
from swarm.flood import CONFIRM_FILES_FILE
from swarm.node import CONFIRM_DELETES_FILE
from swarm.store import Store, StoreError


class LocalSettings(Settings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=False)

    dir: Path = setting("SWARM_DIR")
    state_dir: Path | None = setting("SWARM_STATE_DIR", None)

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.dir / ".swarm"


def _local(dir_: Path | None, state_dir: Path | None) -> LocalSettings:
    try:
        return load_settings(LocalSettings, {"dir": dir_, "state_dir": state_dir})
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _fail(message: str) -> None:
    click.echo(f"swarm: {message}", err=True)
    sys.exit(2)


def _open_store(settings: LocalSettings) -> Store:
    state = settings.resolved_state_dir
    if not (state / "state.db").exists():
        _fail(f"no swarm state in {state}: is --dir/--state-dir the folder a daemon syncs?")
    try:
        return Store(state)
    except StoreError as exc:
        _fail(str(exc))
        raise


def _clean_path(path: str) -> str:
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or not parts:
        _fail(f"{path!r}: give the path relative to the memory folder, e.g. MEMORY.md")
    return Path(path).as_posix()


dir_option = click.option("--dir", "dir_", type=click.Path(path_type=Path), help="Memory folder.")
state_option = click.option("--state-dir", type=click.Path(path_type=Path))


@click.command()
@click.argument("path")
@dir_option
@state_option
def history(path: str, dir_: Path | None, state_dir: Path | None) -> None:
    """List what is kept of PATH: deleted versions (restorable) and recent rendered versions."""
    from rich.console import Console  # only here: the daemon shares this module and not rich
    from rich.table import Table

    settings = _local(dir_, state_dir)
    rel = _clean_path(path)
    with _open_store(settings) as store:
        trashed = store.trashed(rel)
        versions = store.versions(rel)
        refused = store.refused_writes(rel)
    table = Table(title=f"{rel}: deleted versions")
    for column in ("#", "deleted at", "bytes", "first line"):
        table.add_column(column)
    for index, (when, content) in enumerate(trashed):
        first = content.splitlines()[0] if content else ""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        table.add_row(str(index), stamp, str(len(content.encode())), first[:60])
    console = Console()
    console.print(table if trashed else f"{rel}: no deleted versions kept")
    console.print(f"{len(versions)} recent versions kept as merge bases")
    if trashed:
        console.print(f"restore with: swarm restore {rel} --dir {settings.dir} [--version N]")
    if refused:
        console.print(
            f"{len(refused)} writes refused here (protected; this node is not a writer), "
            "newest first:"
        )
        for when, content in refused:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
            console.print(f"--- refused at {stamp} ({len(content.encode())} bytes)", markup=False)
            console.print(content, markup=False, highlight=False, end="")


@click.command()
@click.argument("path")
@dir_option
@state_option
@click.option(
    "--version",
    "index",
    type=int,
    default=0,
    show_default=True,
    help="Which deleted version (see swarm history).",
)
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
def restore(path: str, dir_: Path | None, state_dir: Path | None, index: int, force: bool) -> None:
    """Bring a deleted PATH back; the running daemon syncs it to every node."""

    settings = _local(dir_, state_dir)
    rel = _clean_path(path)
    with _open_store(settings) as store:
        trashed = store.trashed(rel)
    if not trashed:
        _fail(f"nothing kept for {rel}: see `swarm history {rel}`")
    if not 0 <= index < len(trashed):
        _fail(f"--version must be between 0 and {len(trashed) - 1}")
    target = settings.dir / rel
    if target.exists() and not force:
        _fail(f"{rel} exists; pass --force to replace it")
    current: Any = target.read_text(encoding="utf-8", errors="replace") if target.exists() else None
    try:
        write_atomic(
            target,
            trashed[index][1],
            expected=current,
            expect_missing=current is None,
            root=settings.dir,
        )
    except (RenderConflict, RenderError) as exc:
        _fail(str(exc))
    click.echo(f"restored {rel} ({len(trashed[index][1].encode())} bytes)")


@click.command("confirm-deletes")
@dir_option
@state_option
def confirm_deletes(dir_: Path | None, state_dir: Path | None) -> None:
    """Let a daemon propagate the deletions its mass-delete guard is holding back."""
    _confirm(dir_, state_dir, CONFIRM_DELETES_FILE)
    click.echo("confirmed: the daemon propagates the held deletions within a second")


@click.command("confirm-files")
@dir_option
@state_option
def confirm_files(dir_: Path | None, state_dir: Path | None) -> None:
    """Let a daemon send the new files its new-file budget is holding back."""
    _confirm(dir_, state_dir, CONFIRM_FILES_FILE)
    click.echo("confirmed: the daemon sends the held new files within a second")


def _confirm(dir_: Path | None, state_dir: Path | None, name: str) -> None:
    """Leave the daemon's confirmation file in the state folder (it looks every second)."""
    state = _local(dir_, state_dir).resolved_state_dir
    if not state.is_dir():
        _fail(f"no swarm state in {state}")
    (state / name).touch()


COMMANDS = (history, restore, confirm_deletes, confirm_files)

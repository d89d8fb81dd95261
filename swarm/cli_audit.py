"""`swarm blame` and `swarm log`: who wrote each line of a memory file, and its edits in order.
They read the node's state folder; no daemon or Redis needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from swarm.cli_memory import _clean_path, _local, dir_option, state_option


def _fail(message: str) -> None:
    click.echo(f"swarm: {message}", err=True)
    sys.exit(2)


@click.command()
@click.argument("path")
@dir_option
@state_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array of lines.")
def blame(path: str, dir_: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Every line of PATH with the node (and role) that wrote it, and when."""
    from swarm.audit.report import ReportError, blame_lines
    from swarm.audit.when import shown

    rel = _clean_path(path)
    try:
        lines = blame_lines(_local(dir_, state_dir).resolved_state_dir, rel)
    except ReportError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(lines, indent=1))
        return
    width = max((len(_who(line["node"], line["role"])) for line in lines), default=4)
    for line in lines:
        who = _who(line["node"], line["role"])
        click.echo(f"{who:<{width}}  {shown(line['at'])}  {line['line']:>4}  {line['text']}")


def _who(node: str, role: str) -> str:
    return f"{node} ({role})" if role else node


@click.command("log")
@click.argument("path")
@dir_option
@state_option
@click.option("--since", help="Only edits since then: ISO 8601 or an age like 2h, -30m.")
@click.option("--node", help="Only edits made by this node.")
@click.option("--json", "as_json", is_flag=True, help="The documented JSON instead.")
def log_command(
    path: str,
    dir_: Path | None,
    state_dir: Path | None,
    since: str | None,
    node: str | None,
    as_json: bool,
) -> None:
    """PATH's edits in the order this node merged them: time, node, lines added and removed."""
    from swarm.audit.report import ReportError, log_entries
    from swarm.audit.when import parse_moment, shown

    rel = _clean_path(path)
    try:
        moment = parse_moment(since) if since is not None else None
        answer = log_entries(_local(dir_, state_dir).resolved_state_dir, rel, moment, node)
    except (ReportError, ValueError) as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(answer, indent=1))
        return
    click.echo(f"{rel}: history held since {shown(answer['history_since'])}")
    for edit in answer["edits"]:
        state = "" if edit["exists"] else "  (file deleted)"
        click.echo(
            f"{shown(edit['at'])}  {', '.join(edit['nodes'])}  "
            f"+{len(edit['added'])} -{len(edit['removed'])}{state}"
        )
        for line in edit["removed"][:_SHOWN]:
            click.echo(f"    - {line}")
        for line in edit["added"][:_SHOWN]:
            click.echo(f"    + {line}")
        hidden = max(0, len(edit["removed"]) - _SHOWN) + max(0, len(edit["added"]) - _SHOWN)
        if hidden:
            click.echo(f"    ... {hidden} more lines")


_SHOWN = 5  # lines of each side of an edit shown (--json has them all)

COMMANDS = (blame, log_command)

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
        who = ", ".join(edit["nodes"])
        if edit["catch_up"]:
            who = f"caught up from a state of {who}"
        click.echo(
            f"{shown(edit['at'])}  {who}  "
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


@click.command()
@click.argument("path")
@dir_option
@state_option
@click.option("--to", "to", help="Make the content what it was then: ISO 8601 or an age (-30m).")
@click.option("--undo-node", help="Remove what this node wrote (with --since), keep the rest.")
@click.option("--since", help="With --undo-node: from then on (ISO 8601 or an age).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rollback(
    path: str,
    dir_: Path | None,
    state_dir: Path | None,
    to: str | None,
    undo_node: str | None,
    since: str | None,
    yes: bool,
) -> None:
    """Roll PATH back, on every node, as a new edit of this node (history is kept: a rollback
    can be rolled back). Shows the change and asks first unless --yes. Needs this node's daemon;
    other nodes may be offline (they merge it when back)."""
    import asyncio

    from swarm.audit.when import parse_moment
    from swarm.control_client import ControlClient, ControlError, DaemonUnavailable

    rel = _clean_path(path)
    if (to is None) == (undo_node is None) or (undo_node is not None) != (since is not None):
        _fail("give either --to TIME, or --undo-node NODE with --since TIME")
    body: dict[str, object] = {"path": rel}
    try:
        if to is not None:
            body["to"] = parse_moment(to)
        else:
            body["undo_node"], body["since"] = undo_node, parse_moment(since or "")
    except ValueError as exc:
        _fail(str(exc))
    client = ControlClient(_local(dir_, state_dir).resolved_state_dir)
    try:
        preview = asyncio.run(client.post("/v1/rollback", body))
        if not preview["changed"]:
            click.echo(f"{rel} already holds that content: nothing to roll back")
            return
        click.echo(preview["diff"], nl=False)
        if not yes and not click.confirm(f"Make this the content of {rel} on every node?"):
            click.echo("not rolled back")
            sys.exit(1)
        answer = asyncio.run(
            client.post("/v1/rollback", {**body, "apply": True, "expect": preview["expect"]})
        )
    except DaemonUnavailable:
        _fail("no daemon is running for this folder: start it (a rollback is an edit it sends)")
        return
    except ControlError as exc:
        _fail(str(exc))
        return
    click.echo(f"rolled back {rel}" if answer["applied"] else f"{rel}: nothing to roll back")


COMMANDS = (blame, log_command, rollback)

"""How `swarm status` shows the swarm's view (swarm/status.py computes it): one summary line, a
table of nodes, and with `--files` the files and what does not sync (swarm/status_files.py)."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from swarm.status_files import files_table, not_synced_table
from swarm.status_view import NodeState, NodeView, SwarmView

_STATE_STYLE = {
    NodeState.UP_TO_DATE: "green",
    NodeState.SYNCING: "yellow",
    NodeState.BEHIND: "red",
    NodeState.ERROR: "bold red",
    NodeState.OFFLINE: "dim",
}


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def summary(view: SwarmView, since: float | None = None) -> Text:
    offline = len(view.nodes) - view.online
    counts = f"{view.online} online, {offline} offline, {_plural(len(view.files), 'file')}"
    when = f" since {time.strftime('%H:%M:%S', time.localtime(since))}" if since else ""
    if view.converged:
        return Text.assemble(
            (f"swarm {view.swarm}: ", "bold"), ("converged", "bold green"), f"{when} — {counts}"
        )
    if not view.online:
        reason = "no online node"
    else:
        behind = [_lags(n) for n in view.nodes if n.online and not n.converged]
        differ = _plural(view.files_differing, "file")
        reason = f"{differ} differ; behind: {', '.join(behind) or '-'}"
    return Text.assemble(
        (f"swarm {view.swarm}: ", "bold"),
        ("NOT converged", "bold red"),
        f"{when} — {reason} — {counts}",
    )


def _lags(node: NodeView) -> str:
    disk = f", disk differs: {_plural(len(node.disk_differs), 'file')}" if node.disk_differs else ""
    return f"{node.node} ({node.lag} ops{disk})"


def nodes_table(view: SwarmView) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for column in ("node", "role", "host", "state", "last seen", "files", "lag", "last error"):
        table.add_column(column, justify="right" if column in ("files", "lag") else "left")
    for node in view.nodes:
        table.add_row(
            node.node,
            node.role or "-",
            node.host or "-",
            Text(node.state.value, style=_STATE_STYLE[node.state]),
            _age(node.last_seen),
            str(node.files),
            str(node.lag),
            node.last_error or _first_difference(node) or "-",
        )
    return table


def _first_difference(node: NodeView) -> str | None:
    for path, reason in node.disk_differs.items():
        more = len(node.disk_differs) - 1
        return f"{path}: {reason}" + (f" (and {more} more)" if more else "")
    return None


def render(view: SwarmView, *, with_files: bool, since: float | None = None) -> RenderableType:
    parts: list[RenderableType] = [summary(view, since)]
    if view.nodes:
        parts.append(nodes_table(view))
    if with_files and view.files:
        parts.append(files_table(view))
    if with_files:
        parts.extend(not_synced_table(view))
    for node in view.nodes:
        for refusal in node.protected_refused:
            parts.append(
                Text(
                    f"{node.node} refused {refusal['count']} change(s) of protected "
                    f"{refusal['path']} from {refusal['node']}: {refusal['reason']}",
                    "yellow",
                )
            )
    if view.redis.unreadable:
        parts.append(Text(f"unreadable in Redis: {', '.join(view.redis.unreadable)}", "red"))
    if view.redis.rejected:
        counts = ", ".join(f"{count} {reason}" for reason, count in view.redis.rejected.items())
        parts.append(Text(f"records left unread: {counts}", "yellow"))
    return Group(*parts)

"""`swarm status --files`: one row per file the swarm syncs (same everywhere, size, last change
and by which node, lagging nodes), then per node what its folder holds that does not sync, and
why (counts by reason, and some of the paths: a node reports a bounded sample)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from swarm.status_view import SwarmView


def when(at: float | None, now: float | None = None) -> str:
    """A wall-clock time as people read it: the time today, else the date too."""
    if at is None:
        return "-"
    now = time.time() if now is None else now
    same_day = time.localtime(at)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", time.localtime(at))


def files_table(view: SwarmView) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for column in ("file", "size", "same everywhere", "last change", "lagging nodes"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for item in view.files:
        size = "-" if item.size is None else str(item.size)
        if not item.exists:
            size += " (deleted)"
        changed = when(item.changed_at) + (f" by {item.changed_by}" if item.changed_by else "")
        table.add_row(
            item.path,
            size,
            Text("yes", style="green") if item.converged else Text("no", style="red"),
            changed,
            ", ".join([*item.lagging, *(f"{n} (disk)" for n in item.disk_differs)]) or "-",
        )
    return table


def parse_not_synced(raw: dict[str, Any]) -> dict[str, Any]:
    """A heartbeat's `not_synced` report, malformed parts left out."""
    if not raw:
        return {}
    counts, paths = raw.get("counts"), raw.get("paths")
    return {
        "counts": {
            str(k): v for k, v in (counts if isinstance(counts, dict) else {}).items()
            if isinstance(v, int) and not isinstance(v, bool)
        },
        "paths": {str(k): str(v) for k, v in (paths if isinstance(paths, dict) else {}).items()},
    }  # fmt: skip


def not_synced_table(view: SwarmView) -> list[RenderableType]:
    """Per online node with anything not synced: one line of counts, then the sample."""
    parts: list[RenderableType] = []
    for node in view.nodes:
        report = node.not_synced
        counts = report.get("counts") or {}
        if not node.online or not counts:
            continue
        total = ", ".join(f"{count} {reason}" for reason, count in counts.items())
        parts.append(Text(f"not synced on {node.node}: {total}", style="bold"))
        table = Table(show_edge=False, show_header=False, padding=(0, 2))
        table.add_column("path")
        table.add_column("why", style="dim")
        paths = report.get("paths") or {}
        for path, reason in paths.items():
            table.add_row(path, reason)
        shown = len(paths)
        if shown < sum(counts.values()):
            table.add_row(f"... and {sum(counts.values()) - shown} more", "")
        parts.append(table)
    return parts

"""`swarm status --files`: one row per file the swarm syncs (same everywhere, size, last change
and by which node, lagging nodes)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from swarm.status import SwarmView


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

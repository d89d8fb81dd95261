"""The daemon's side of `swarm rollback` (a route of the control socket, swarm/control.py):
preview the change, or make it as an edit of this node if the file still holds what the preview
was computed from."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from swarm.audit.history import replay
from swarm.audit.rollback import digest, text_to, text_without, unified
from swarm.bridge import RenderConflict, RenderError
from swarm.memory.stamps import Stamps

if TYPE_CHECKING:
    from swarm.runtime import Runtime


class RollbackRefused(ValueError):
    """The rollback cannot be made as asked; the message is one line."""


async def rollback(runtime: Runtime, rel: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body`: `to` (seconds since the epoch), or `undo_node` and `since`; `apply` with
    `expect` (the digest a preview answered) makes the edit."""
    node = runtime.node
    if rel not in node.docs:
        raise RollbackRefused(f"{rel}: not a synced file of this node")
    to, undo, since = body.get("to"), body.get("undo_node"), body.get("since")
    by_node = isinstance(undo, str) and isinstance(since, int | float)
    if not (isinstance(to, int | float) or by_node):
        raise RollbackRefused("give 'to' (a time), or 'undo_node' and 'since'")

    doc = node.docs[rel]
    current = doc.content if doc.exists else ""
    start, updates = runtime.store.history(rel)
    stamps = Stamps(doc.crdt)

    def compute() -> str:  # in a worker thread: replaying a long history takes a while
        history = replay(rel, start, updates, stamps)
        if isinstance(to, int | float):
            return text_to(history, float(to))
        assert isinstance(undo, str) and isinstance(since, int | float)
        return text_without(history, current, undo, float(since))

    target = await asyncio.to_thread(compute)
    answer = {"path": rel, "diff": unified(rel, current, target), "expect": digest(current),
              "changed": target != current, "applied": False}  # fmt: skip
    if not body.get("apply") or not answer["changed"]:
        return answer
    if body.get("expect") != digest(current):
        raise RollbackRefused(f"{rel} changed since the preview; run the rollback again")

    def change(now: str) -> str:
        if digest(now) != digest(current):
            raise RollbackRefused(f"{rel} changed since the preview; run the rollback again")
        return target

    await node.edit(rel, change)
    try:
        await node.render(rel)  # the file shows it when the command returns
    except (RenderError, RenderConflict) as exc:  # made and sent all the same; rendered later
        return {**answer, "applied": True, "render_error": str(exc) or type(exc).__name__}
    return {**answer, "applied": True}

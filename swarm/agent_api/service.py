"""What the MCP tools and `swarm remember` do, whatever carries the call.

Reads go to the folder itself (the daemon renders every edit to disk before it answers). Edits go
to the daemon running for the folder, through its control socket, and so straight into the CRDT
and out to the swarm. With no daemon listening they are made in the file directly (under a lock),
and the daemon ingests them when it starts. A private file never goes to the daemon.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable
from functools import partial
from typing import Any

from swarm.agent_api.files import (
    SEARCH_LIMIT,
    FileProblem,
    compile_query,
    edit_file,
    list_files,
    read_text,
    search_text,
)
from swarm.agent_api.paths import Kind, PathRefused
from swarm.agent_api.settings import AgentSettings
from swarm.audit.report import ReportError
from swarm.control_client import ControlClient, ControlError, DaemonUnavailable
from swarm.memory.edits import EditError, Placement, plan_append, plan_replace

# What a caller reports as a refusal (bad input, or an answer it must act on), never a crash.
REFUSALS = (PathRefused, EditError, FileProblem, ControlError, ReportError)
PRIVATE_NOTE = "a private file: edited here, never sent anywhere"
NO_DAEMON = (
    "no daemon is running for this folder: the edit is in the file, and the daemon sends it "
    "when it starts"
)


class MemoryService:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.paths = settings.memory_paths()
        self.client = ControlClient(settings.resolved_state_dir)

    # -- reading -------------------------------------------------------------------------------

    async def read(self, path: str) -> str:
        rel, _kind = self.paths.resolve(path)
        text = await asyncio.to_thread(read_text, self.settings.dir, rel, self._max_bytes)
        if text is None:
            raise FileProblem(f"{rel} does not exist (memory_list shows the files)")
        return text

    async def blame(self, path: str) -> list[dict[str, Any]]:
        """Each line of a synced file with the node that wrote it and when."""
        from swarm.audit.report import blame_lines

        rel = self._synced(path)
        return await asyncio.to_thread(blame_lines, self.settings.resolved_state_dir, rel)

    async def log(self, path: str) -> dict[str, Any]:
        """A synced file's edits in order: time, node, lines added and removed."""
        from swarm.audit.report import log_entries

        rel = self._synced(path)
        return await asyncio.to_thread(log_entries, self.settings.resolved_state_dir, rel)

    def _synced(self, path: str) -> str:
        rel, kind = self.paths.resolve(path)
        if kind is Kind.PRIVATE:
            raise PathRefused(f"{rel} is private: it has no swarm history")
        return rel

    async def files(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(list_files, self.paths)

    async def search(
        self, query: str, regex: bool = False, paths: list[str] | None = None
    ) -> dict[str, Any]:
        pattern = compile_query(query, regex)
        return await asyncio.to_thread(self._search, pattern, paths)

    def _search(self, pattern: Any, wanted: list[str] | None) -> dict[str, Any]:
        files = [rel for rel, _ in self.paths.files()]
        if wanted:
            chosen: list[str] = []
            for item in wanted:
                if any(ch in item for ch in "*?["):
                    chosen += [rel for rel in files if fnmatch.fnmatchcase(rel, item)]
                else:
                    chosen.append(self.paths.resolve(item)[0])
            files = sorted(set(chosen))
        matches: list[dict[str, Any]] = []
        for rel in files:
            try:
                text = read_text(self.settings.dir, rel, self._max_bytes)
            except FileProblem:
                continue  # not text, or too large: nothing a search can show
            for match in search_text(rel, text or "", pattern):
                if len(matches) == SEARCH_LIMIT:
                    return {"matches": matches, "truncated": True}
                matches.append(match.__dict__)
        return {"matches": matches, "truncated": False}

    # -- editing -------------------------------------------------------------------------------

    async def append(
        self, text: str, path: str = "MEMORY.md", section: str | None = None, wait: float = 0
    ) -> dict[str, Any]:
        body = {"text": text, "section": section}
        return await self._edit(path, "/v1/append", body, partial(_append, text, section), wait)

    async def replace(self, path: str, old: str, new: str, wait: float = 0) -> dict[str, Any]:
        body = {"old": old, "new": new}
        return await self._edit(path, "/v1/replace", body, partial(_replace, old, new), wait)

    async def _edit(
        self,
        path: str,
        route: str,
        body: dict[str, Any],
        change: Callable[[str], Placement],
        wait: float,
    ) -> dict[str, Any]:
        rel, kind = self.paths.resolve(path)
        if kind is Kind.SYNCED:
            try:
                answer = await self.client.post(route, {"path": rel, **body})
            except DaemonUnavailable:
                pass
            else:
                answer["stored"] = "daemon"
                if not answer.get("synced"):
                    answer["note"] = PRIVATE_NOTE  # private by the daemon's own settings
                elif wait > 0:
                    answer["delivery"] = await self.wait(answer["write"], wait)
                return answer
        placed = await asyncio.to_thread(
            edit_file,
            self.settings.dir,
            rel,
            change,
            state_dir=self.settings.resolved_state_dir,
            max_bytes=self._max_bytes,
        )
        answer = {
            "path": rel,
            "line": placed.line,
            "lines": placed.lines,
            "created_section": placed.created_section,
            "synced": False,
            "stored": "file",
        }
        if kind is Kind.PRIVATE:
            answer["note"] = PRIVATE_NOTE
        else:
            answer["note"] = NO_DAEMON
        if wait > 0 and kind is Kind.SYNCED:
            answer["delivery"] = {"delivered": False, "reason": NO_DAEMON}
        return answer

    async def wait(self, write: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Until every online peer holds `write` (an edit's answer), or `seconds` pass."""
        body = {**write, "timeout": seconds}
        try:
            state = await self.client.post("/v1/wait", body, timeout=seconds + 30)
        except DaemonUnavailable:
            return {"delivered": False, "reason": "the daemon stopped before the edit was sent"}
        if not state.get("delivered"):
            state["reason"] = _undelivered(state, seconds)
        return state

    # -- the swarm -----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The daemon's answer (this node, its latest edit, the swarm), or without a daemon the
        swarm as `swarm status` sees it in Redis (when the settings name the swarm)."""
        try:
            answer = await self.client.get("/v1/status")
        except DaemonUnavailable:
            answer = {"node": None, "daemon": False, "latest_write": None, "note": NO_DAEMON}
            if self.settings.swarm is None:
                answer["view"] = None
                answer["view_error"] = "no daemon, and no --swarm/SWARM_NAME to look at Redis"
            else:
                from swarm.control import swarm_view

                answer.update(await swarm_view(self.settings))
        else:
            answer["daemon"] = True
        answer["summary"] = summarize(answer)
        return answer

    @property
    def _max_bytes(self) -> int:
        return self.settings.max_file_bytes


def _append(text: str, section: str | None, current: str) -> Placement:
    return plan_append(current, text, section)


def _replace(old: str, new: str, current: str) -> Placement:
    return plan_replace(current, old, new)


def _undelivered(state: dict[str, Any], seconds: float) -> str:
    if state.get("error"):
        return f"not confirmed: {state['error']}"
    if not state.get("in_redis"):
        return f"not yet in Redis after {seconds:g} s (is Redis reachable?)"
    missing = ", ".join(state.get("missing_on", []))
    return f"not held by {missing} after {seconds:g} s"


def summarize(answer: dict[str, Any]) -> str:
    """One paragraph an agent can act on."""
    parts: list[str] = []
    view = answer.get("view")
    if view is not None:
        online = [n["node"] for n in view["nodes"] if n["online"]]
        offline = [n["node"] for n in view["nodes"] if not n["online"]]
        state = "converged" if view["converged"] else "not converged"
        parts.append(
            f"swarm {view['swarm']}: {state}; online: {', '.join(online) or 'none'}"
            + (f"; offline: {', '.join(offline)}" if offline else "")
        )
    elif answer.get("view_error"):
        parts.append(f"swarm status unknown: {answer['view_error']}")
    if not answer.get("daemon"):
        parts.append(NO_DAEMON)
    latest = answer.get("latest_write")
    if latest:
        if latest.get("delivered"):
            parts.append(f"this node's latest edit ({latest['path']}) reached every online peer")
        else:
            parts.append(
                f"this node's latest edit ({latest['path']}) has "
                + _undelivered(latest, 0).replace(" after 0 s", "")
            )
    return "; ".join(parts) + "."

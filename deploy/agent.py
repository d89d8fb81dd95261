#!/usr/bin/env python3
"""A scripted demo agent: edits an OpenClaw / Soul Spec workspace the way a real agent does.

No model is involved, but the file traffic is realistic, because that traffic is what swarm must
survive: whole-file read-modify-write of MEMORY.md (some writes atomic, some in place), appends to
today's daily log, a write every 50-200 ms, two instances changing the same line at the same
moment, and one rewrite of MEMORY.md from a stale read. Every entry carries a unique id and is
logged (JSON lines), so the demo can prove that each one ends up present exactly once.

Run again on the same workspace (a second `docker compose up` without `down -v`), an agent
resumes from its log: a finished agent writes nothing, an interrupted one writes only what is
missing, never an id twice.

Standard library only: it runs in the slim demo image and beside any Python.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MEMORY = "MEMORY.md"
TOPIC = "memory/projects.md"
TOPIC_SECTION = "swarm"
FOCUS_PREFIX = "- Current focus:"
PAUSE_RANGE = (0.05, 0.2)  # seconds between two writes, like an agent between tool calls
BURST_PAUSE_RANGE = (0.05, 0.1)
STALE_READ_DELAY = 0.3  # the cloud agent "thinks" this long between its read and its write
LOCAL_BURST = 3  # MEMORY.md notes the local agent writes right after the shared-line moment
LOG_DIR = ".demo"  # inside the workspace, next to the memory it describes; swarm syncs only *.md
ROLES = ("cloud", "local")
BARRIER_POLL_S = 0.01
BARRIER_TIMEOUT_S = 180.0  # a slow host may take minutes to start the second container

# What the agents write (the text only; ids, sections and timing are the script's).
PHRASES = json.loads((Path(__file__).resolve().parent / "phrases.json").read_text(encoding="utf-8"))
DECISIONS: tuple[str, ...] = tuple(PHRASES["decisions"])
PREFERENCES: tuple[str, ...] = tuple(PHRASES["preferences"])
DAILY_NOTES: tuple[str, ...] = tuple(PHRASES["daily_notes"])
TOPIC_NOTES: tuple[str, ...] = tuple(PHRASES["topic_notes"])
MEMORY_NOTES: tuple[str, ...] = tuple(PHRASES["memory_notes"])
FOCUS_TEXT: dict[str, str] = dict(PHRASES["focus"])


@dataclass(frozen=True)
class Entry:
    """One line an agent wrote, as recorded in its log."""

    id: str
    role: str
    kind: str
    file: str
    line: str
    write: str
    stale: bool = False
    read_at: float | None = None  # the stale rewrite: when it read the copy it writes back


def read_text(path: Path) -> str:
    """The whole file, or "" when it does not exist yet."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def write_atomic(path: Path, text: str) -> None:
    """Write the way careful agents do: a temp file next to the target, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_in_place(path: Path, text: str) -> None:
    """Write the way most agents do: truncate, then write (readers may see it half done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def append_line(path: Path, line: str) -> None:
    """Append one line, first ending an unterminated last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current = read_text(path)
    prefix = "\n" if current and not current.endswith("\n") else ""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(prefix + line + "\n")


def insert_under(text: str, section: str, line: str) -> str:
    """Insert `line` as the last bullet of `## section`, creating the section if it is missing."""
    lines = text.splitlines()
    header = f"## {section}"
    start = next((i for i, current in enumerate(lines) if current.strip() == header), None)
    if start is None:
        body = text.rstrip("\n")
        return f"{body}\n\n{header}\n{line}\n" if body else f"{header}\n{line}\n"
    end = start + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    at = end
    while at > start + 1 and not lines[at - 1].strip():
        at -= 1
    lines.insert(at, line)
    return "\n".join(lines) + "\n"


def replace_focus(text: str, line: str) -> str:
    """Replace the "Current focus:" line (the line both agents fight over)."""
    lines = text.splitlines()
    for i, current in enumerate(lines):
        if current.startswith(FOCUS_PREFIX):
            lines[i] = line
            return "\n".join(lines) + "\n"
    return insert_under(text, "Projects", line)


def default_log(workspace: Path, role: str) -> Path:
    """Where an agent logs its entries unless told otherwise: inside its own workspace, so a
    second run on the same volume finds what the first one wrote."""
    return workspace / LOG_DIR / f"{role}-entries.jsonl"


class LogError(Exception):
    """The entry log of an earlier run is not one this agent wrote."""


def load_log(path: Path) -> list[dict[str, object]]:
    """The records of an earlier run. A torn last line (the agent was killed mid-write) is dropped
    from the file too, so that new records start on a line of their own."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = raw.splitlines()
    records: list[dict[str, object]] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError("not an entry record")
        except ValueError as exc:
            if number < len(lines):
                raise LogError(f"{path}:{number}: not an entry record ({exc})") from exc
            write_atomic(path, "".join(f"{kept}\n" for kept in lines[:-1]))
            break
        records.append(record)
    return records


def highest_id(workspace: Path, role: str) -> int:
    """The highest entry number of `role` in the workspace's markdown files: an entry written
    just before a kill may be on disk but not yet in the log."""
    pattern = re.compile(rf"\[{re.escape(role)}-(\d+)\]")
    numbers = [
        int(match.group(1))
        for path in workspace.rglob("*.md")
        for match in pattern.finditer(read_text(path))
    ]
    return max(numbers, default=0)


def capital(phrase: str) -> str:
    return phrase[:1].upper() + phrase[1:]


class BarrierTimeout(Exception):
    """The other agent did not arrive in time; the message says which and where."""


class Barrier:
    """Where both agents meet before a moment they must share (their start, and the line both
    change at once), whatever the time their containers took to start: a folder both can see.

    Arriving writes `PHASE-ROLE.ready` and waits for every other role's marker of that phase.
    Markers of an earlier run must be deleted (`rm -f FOLDER/*.ready`) before the agents start.
    """

    def __init__(self, folder: Path, role: str, timeout: float = BARRIER_TIMEOUT_S) -> None:
        self.folder = folder
        self.role = role
        self.timeout = timeout

    def marker(self, phase: str, role: str) -> Path:
        return self.folder / f"{phase}-{role}.ready"

    def mark(self, phase: str) -> None:
        """Tell the others this agent is past `phase`, without waiting for them."""
        write_atomic(self.marker(phase, self.role), f"{time.time()}\n")

    def arrive(self, phase: str) -> None:
        self.mark(phase)
        deadline = time.monotonic() + self.timeout
        while True:
            missing = [r for r in ROLES if not self.marker(phase, r).exists()]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BarrierTimeout(
                    f"the {' and '.join(missing)} agent did not reach {phase!r} within "
                    f"{self.timeout:g} s (is it running, with the same --barrier folder "
                    f"{self.folder}?)"
                )
            time.sleep(BARRIER_POLL_S)


class Agent:
    """One scripted instance: `role` decides which files it edits and how."""

    def __init__(self, role: str, workspace: Path, rng: random.Random, log: IO[str] | None,
                 entries: int) -> None:
        self.role = role
        self.workspace = workspace
        self.rng = rng
        self.log = log
        self.written = 0
        self.width = max(3, len(str(entries)))
        self.today = dt.datetime.now(dt.UTC).date().isoformat()
        self.burst_left = 0
        self.done = 0  # logged entries, the shared line excluded
        self.focus_done = False

    def resume(self, records: Sequence[dict[str, object]]) -> None:
        """Carry on after the entries an earlier run logged (and any it wrote but did not log)."""
        self.done = sum(record.get("kind") != "focus" for record in records)
        self.focus_done = any(record.get("kind") == "focus" for record in records)
        self.written = max(self.done, highest_id(self.workspace, self.role))

    def finished(self, entries: int) -> bool:
        return self.done >= entries and self.focus_done

    def next_id(self) -> str:
        self.written += 1
        return f"{self.role}-{self.written:0{self.width}d}"

    def record(self, entry: Entry) -> None:
        if entry.kind == "focus":
            self.focus_done = True
        else:
            self.done += 1
        if self.log is not None:
            self.log.write(json.dumps({**entry.__dict__, "at": time.time()},
                                      ensure_ascii=False) + "\n")
            self.log.flush()

    def rewrite(self, rel: str, text: str) -> str:
        """Write a whole file back, atomically or in place (agents do both)."""
        path = self.workspace / rel
        if self.rng.random() < 0.5:
            write_atomic(path, text)
            return "atomic"
        write_in_place(path, text)
        return "in-place"

    def step(self, *, stale: bool = False) -> None:
        """Write one entry."""
        if self.role == "cloud":
            self.cloud_step(stale=stale)
        elif self.burst_left > 0:
            self.burst_left -= 1
            self.memory_note()
        else:
            choice = self.rng.random()
            if choice < 0.5:
                self.daily_note()
            elif choice < 0.8:
                self.topic_note()
            else:
                self.memory_note()

    def cloud_step(self, *, stale: bool) -> None:
        """Record a decision or preference in MEMORY.md: read whole, insert, write whole."""
        entry_id = self.next_id()
        kind = self.rng.choice(("decision", "preference"))
        if kind == "decision":
            section, line = "Decisions", f"- [{entry_id}] Decided: {self.rng.choice(DECISIONS)}."
        else:
            preference = capital(self.rng.choice(PREFERENCES))
            section, line = "Preferences", f"- [{entry_id}] {preference}."
        before = read_text(self.workspace / MEMORY)
        read_at = time.time()
        if stale:
            time.sleep(STALE_READ_DELAY)  # the other instance's edits land meanwhile
        mode = self.rewrite(MEMORY, insert_under(before, section, line))
        self.record(
            Entry(entry_id, self.role, kind, MEMORY, line, mode, stale, read_at if stale else None)
        )

    def daily_note(self) -> None:
        """Append to today's memory/YYYY-MM-DD.md, creating it with its heading."""
        entry_id = self.next_id()
        clock = dt.datetime.now(dt.UTC).strftime("%H:%M")
        line = f"- [{entry_id}] {clock} {self.rng.choice(DAILY_NOTES)}"
        rel = f"memory/{self.today}.md"
        path = self.workspace / rel
        if path.exists():
            append_line(path, line)
            mode = "append"
        else:
            write_in_place(path, f"# {self.today}\n\n{line}\n")
            mode = "in-place"
        self.record(Entry(entry_id, self.role, "daily", rel, line, mode))

    def topic_note(self) -> None:
        entry_id = self.next_id()
        line = f"- [{entry_id}] {capital(self.rng.choice(TOPIC_NOTES))}"
        text = insert_under(read_text(self.workspace / TOPIC), TOPIC_SECTION, line)
        mode = self.rewrite(TOPIC, text)
        self.record(Entry(entry_id, self.role, "topic", TOPIC, line, mode))

    def memory_note(self) -> None:
        entry_id = self.next_id()
        line = f"- [{entry_id}] {capital(self.rng.choice(MEMORY_NOTES))}."
        text = insert_under(read_text(self.workspace / MEMORY), "Projects", line)
        mode = self.rewrite(MEMORY, text)
        self.record(Entry(entry_id, self.role, "memory-note", MEMORY, line, mode))

    def change_focus(self) -> None:
        """Both instances change the same existing line to different text at the same moment."""
        entry_id = f"{self.role}-focus"
        line = f"{FOCUS_PREFIX} {FOCUS_TEXT[self.role]} [{entry_id}]"
        text = replace_focus(read_text(self.workspace / MEMORY), line)
        mode = self.rewrite(MEMORY, text)
        self.record(Entry(entry_id, self.role, "focus", MEMORY, line, mode))
        if self.role == "local":
            self.burst_left = LOCAL_BURST


def run(agent: Agent, entries: int, barrier: Barrier) -> None:
    """Write `entries` entries at agent pace, changing the shared line halfway.

    Both agents start together and change the shared line together (the barrier). The cloud
    agent's entry right after that is its stale rewrite.
    """
    focus_at = min(entries // 2, entries - 1)
    barrier.arrive("start")
    if agent.focus_done:
        barrier.mark("focus")  # resumed past the shared line: do not hold the other agent
    while agent.done < entries:
        if not agent.focus_done and agent.done >= focus_at:
            barrier.arrive("focus")
            agent.change_focus()
            if agent.role == "cloud":
                agent.step(stale=True)
            continue
        low, high = BURST_PAUSE_RANGE if agent.burst_left else PAUSE_RANGE
        time.sleep(agent.rng.uniform(low, high))
        agent.step()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=("cloud", "local"), required=True)
    parser.add_argument("--dir", type=Path, required=True, help="the agent's workspace")
    parser.add_argument("--entries", type=int, required=True, help="entries to write (>= 1)")
    parser.add_argument("--barrier", type=Path, required=True,
                        help="folder shared with the other agent, where both wait for each other "
                             "before starting and before changing the same line (emptied of "
                             "*.ready markers before a run)")
    parser.add_argument("--barrier-timeout", type=float, default=BARRIER_TIMEOUT_S,
                        help=f"seconds to wait for the other agent (default {BARRIER_TIMEOUT_S:g})")
    parser.add_argument("--seed", type=int, help="random seed (default: fixed per role)")
    parser.add_argument("--log", type=Path,
                        help=f"JSON-lines file listing every entry written; a second run resumes "
                             f"from it (default: DIR/{LOG_DIR}/ROLE-entries.jsonl)")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a directory")
    if args.entries < 1:
        parser.error("--entries must be at least 1")
    if not args.barrier.is_dir():
        parser.error(f"--barrier {args.barrier}: not a directory")
    if args.log is None:
        args.log = default_log(args.dir, args.role)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed if args.seed is not None else {"cloud": 1, "local": 2}[args.role])
    try:
        records = load_log(args.log)
    except (LogError, OSError) as exc:
        print(f"{args.role}: {exc}", file=sys.stderr)
        return 2
    barrier = Barrier(args.barrier, args.role, args.barrier_timeout)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a", encoding="utf-8") as log:
        agent = Agent(args.role, args.dir, rng, log, args.entries)
        agent.resume(records)
        if agent.finished(args.entries):
            for phase in ("start", "focus"):  # an interrupted other agent may be resuming
                barrier.mark(phase)
            print(f"{args.role}: already wrote {agent.done} entries and changed the focus line "
                  f"(log {args.log}): nothing to do", flush=True)
            return 0
        resumed = agent.done
        try:
            run(agent, args.entries, barrier)
        except BarrierTimeout as exc:
            print(f"{args.role}: {exc}", file=sys.stderr)
            return 1
    more = f" ({agent.done - resumed} in this run)" if resumed else ""
    print(f"{args.role}: wrote {agent.done} entries{more} and changed the focus line", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The proof behind `swarm demo` and `swarm verify`: the demo's memory folders hold one memory.

Given the nodes' folders (and, optionally, the swarm to ask `swarm status` about), it shows and
checks what a user must be able to trust: every synced file byte-identical on every node (sha256
shown), every entry the demo agents logged present exactly once, and what became of the two
moments built to break a naive sync: the line both agents changed at once, and the cloud agent's
whole-file rewrite from a stale copy. The agents log their entries (deploy/agent.py) in
`.demo/ROLE-entries.jsonl` inside their own folder, which swarm does not sync.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from swarm.bridge.policy import PathPolicy

MEMORY = "MEMORY.md"
ENTRY_LOG_DIR = ".demo"
ENTRY_LOG_GLOB = "*-entries.jsonl"
POLL_S = 0.1
STATUS_SLACK_S = 30.0  # on top of --wait: `swarm status` connecting and reading Redis


class ProofError(Exception):
    """The proof cannot be made (bad folders or logs); the message is one line."""


class ProofFailed(Exception):
    """The proof was made and the result is wrong; the message says what."""


# ---------------------------------------------------------------- what the agents logged


@dataclass(frozen=True)
class LoggedEntry:
    """One line an agent says it wrote (a line of deploy/agent.py's --log)."""

    id: str
    role: str
    kind: str
    file: str
    line: str
    at: float = 0.0
    stale: bool = False
    read_at: float | None = None  # the stale rewrite: when it read the copy it wrote back

    @property
    def token(self) -> str:
        return f"[{self.id}]"

    @property
    def contested(self) -> bool:
        """The shared-line change: a conflict both sides made, so a merge may keep either."""
        return self.kind == "focus"


def entry_log_path(workspace: Path, role: str) -> Path:
    """Where a demo agent logs its entries by default (deploy/agent.py `default_log`)."""
    return workspace / ENTRY_LOG_DIR / f"{role}-entries.jsonl"


def read_entry_log(path: Path) -> list[LoggedEntry]:
    """The entries of one agent log; a torn last line (agent killed mid-write) is ignored."""
    entries: list[LoggedEntry] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return entries
    except (OSError, UnicodeDecodeError) as exc:
        raise ProofError(f"{path}: unreadable agent log ({exc})") from exc
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw)
            read_at = record.get("read_at")
            entry = LoggedEntry(
                str(record["id"]),
                str(record["role"]),
                str(record["kind"]),
                str(record["file"]),
                str(record["line"]),
                float(record.get("at", 0.0)),
                bool(record.get("stale", False)),
                None if read_at is None else float(read_at),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if number == len(lines):
                break
            raise ProofError(f"{path}:{number}: not an agent log line ({exc})") from exc
        entries.append(entry)
    return entries


def load_entries(folders: Iterable[Path]) -> list[LoggedEntry]:
    """Every entry logged in the folders' `.demo/*-entries.jsonl`, each id once (a folder copied
    with its log brings the same entries twice); an id logged with two different lines is an
    error."""
    by_id: dict[str, LoggedEntry] = {}
    for folder in folders:
        for log in sorted((folder / ENTRY_LOG_DIR).glob(ENTRY_LOG_GLOB)):
            for entry in read_entry_log(log):
                known = by_id.setdefault(entry.id, entry)
                if known != entry:
                    raise ProofError(f"{log}: entry {entry.id} logged twice, differently")
    return list(by_id.values())


# ---------------------------------------------------------------- what the folders hold


def synced_files(root: Path) -> dict[str, bytes]:
    """Every file of the folder that swarm syncs (default policy), by POSIX relative path."""
    policy = PathPolicy(root)
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and policy.accepts(rel):
            with contextlib.suppress(FileNotFoundError):  # a temp file renamed away meanwhile
                files[rel] = path.read_bytes()
    return files


@dataclass(frozen=True)
class FileVerdict:
    path: str
    digests: dict[str, str | None]  # node -> sha256 hex, None when the node lacks the file

    @property
    def identical(self) -> bool:
        values = list(self.digests.values())
        return None not in values and len(set(values)) == 1


def compare_nodes(nodes: Mapping[str, Path]) -> list[FileVerdict]:
    """Per synced file, its sha256 on every node."""
    contents = {node: synced_files(root) for node, root in nodes.items()}
    paths = sorted({path for files in contents.values() for path in files})
    return [
        FileVerdict(
            path,
            {
                node: hashlib.sha256(files[path]).hexdigest() if path in files else None
                for node, files in contents.items()
            },
        )
        for path in paths
    ]


def entry_problems(entries: Sequence[LoggedEntry], nodes: Mapping[str, Path]) -> list[str]:
    """Why the logged entries are not each present exactly once on every node (empty: they are).

    An entry must appear once as a whole line in the file it was written to, and its id nowhere
    else. The contested shared line may have been resolved either way, so it may appear at most
    once.
    """
    problems: list[str] = []
    for node, root in nodes.items():
        texts = {
            rel: data.decode("utf-8", errors="replace") for rel, data in synced_files(root).items()
        }
        for entry in entries:
            anywhere = sum(text.count(entry.token) for text in texts.values())
            as_line = texts.get(entry.file, "").splitlines().count(entry.line)
            if entry.contested:
                if anywhere > 1:
                    problems.append(f"{node}: {entry.token} appears {anywhere} times")
            elif as_line != 1 or anywhere != 1:
                problems.append(
                    f"{node}: {entry.token} appears {anywhere} times "
                    f"({as_line} as its line in {entry.file})"
                )
    return problems


def settle(
    nodes: Mapping[str, Path], entries: Sequence[LoggedEntry], wait: float
) -> tuple[list[FileVerdict], list[str]]:
    """Check until the folders agree and hold every entry once, or `wait` seconds pass: renders
    trail convergence, and the agents may have finished a moment ago."""
    deadline = time.monotonic() + wait
    while True:
        verdicts = compare_nodes(nodes)
        problems = entry_problems(entries, nodes)
        done = all(v.identical for v in verdicts) and not problems
        if done or time.monotonic() > deadline:
            return verdicts, problems
        time.sleep(POLL_S)


# ---------------------------------------------------------------- the story


def focus_story(entries: Sequence[LoggedEntry], merged: str) -> str:
    """What the merge made of the line both agents changed at the same moment."""
    edits = sorted((e for e in entries if e.contested), key=lambda e: e.at)
    if not edits:
        return "no agent logged a change of the shared line"
    apart = f" ({(edits[-1].at - edits[0].at) * 1000:.0f} ms apart)" if len(edits) > 1 else ""
    lines = merged.splitlines()
    kept = [(e.role, line) for e in edits for line in lines if e.token in line]
    if not kept:
        verdict = "the merge kept neither edit"
    elif len(kept) == len(edits) > 1:
        verdict = "the merge kept both edits, one line each"
    else:
        verdict = f"the merge kept {' and '.join(role for role, _ in kept)}'s edit"
    shown = "".join(f"\n    {line}" for _, line in kept)
    who = " and ".join(e.role for e in edits)
    return f"the line {who} changed at the same moment{apart}: {verdict}{shown}"


def stale_story(entries: Sequence[LoggedEntry], merged_files: Mapping[str, str]) -> str:
    """What became of the lines another agent wrote while one held a stale copy of a file."""
    stale = next((e for e in entries if e.stale and e.read_at is not None), None)
    if stale is None or stale.read_at is None:
        return "no stale rewrite in the agents' logs"
    text = merged_files.get(stale.file, "").splitlines()
    meanwhile = [
        e for e in entries
        if e.role != stale.role and e.file == stale.file and not e.contested
        and stale.read_at < e.at <= stale.at
    ]  # fmt: skip
    head = (
        f"the stale rewrite: {stale.role} wrote {stale.file} back from a copy read "
        f"{stale.at - stale.read_at:.2f} s earlier ({stale.token})"
    )
    if not meanwhile:
        return f"{head}; no other agent wrote {stale.file} meanwhile, so it risked nothing"
    kept = [e for e in meanwhile if text.count(e.line) == 1]
    roles = " and ".join(sorted({e.role for e in meanwhile}))
    tokens = ", ".join(e.token for e in meanwhile)
    own = "and its own new line too" if text.count(stale.line) == 1 else "but NOT its own line"
    return (
        f"{head}; meanwhile {roles} wrote {len(meanwhile)} "
        f"{'line' if len(meanwhile) == 1 else 'lines'} there ({tokens}): "
        f"{'all' if len(kept) == len(meanwhile) else f'only {len(kept)} of'} {len(meanwhile)} "
        f"kept, {own}"
    )


def files_table(verdicts: Sequence[FileVerdict], nodes: Sequence[str]) -> Table:
    table = Table(title="files on disk")
    table.add_column("file")
    for node in nodes:
        table.add_column(f"sha256 on {node}")
    table.add_column("identical")
    for verdict in verdicts:
        table.add_row(
            verdict.path,
            *((verdict.digests[node] or "missing")[:16] for node in nodes),
            "[green]yes[/]" if verdict.identical else "[red]NO[/]",
        )
    return table


def prove(
    nodes: Mapping[str, Path], entries: Sequence[LoggedEntry], console: Console, *, wait: float
) -> int:
    """Show and check the folders (waiting up to `wait` s for them to settle); the number of
    identical files. Raises ProofFailed when a file differs or an entry is lost or doubled."""
    verdicts, problems = settle(nodes, entries, wait)
    console.print(files_table(verdicts, list(nodes)))
    differing = [v.path for v in verdicts if not v.identical]
    if differing:
        raise ProofFailed(f"files differ between the nodes: {', '.join(differing)}")
    memory = next((v for v in verdicts if v.path == MEMORY), None)
    if memory is None:
        raise ProofFailed(f"no {MEMORY} on any node")
    console.print(f"{MEMORY} sha256 {memory.digests[next(iter(nodes))]} on {' and '.join(nodes)}")
    if problems:
        shown = "; ".join(problems[:5]) + (
            f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        raise ProofFailed(f"entries lost or duplicated: {shown}")
    regular = [entry for entry in entries if not entry.contested]
    roles = sorted({entry.role for entry in regular})
    per_role = ", ".join(f"{sum(e.role == role for e in regular)} {role}" for role in roles)
    console.print(f"{len(regular)} entries ({per_role}) each present exactly once on every node")
    first = next(iter(nodes.values()))
    merged = {
        rel: data.decode("utf-8", errors="replace") for rel, data in synced_files(first).items()
    }
    console.print(Text(focus_story(entries, merged.get(MEMORY, ""))))  # [ids] are not markup
    console.print(Text(stale_story(entries, merged)))
    return len(verdicts)


# ---------------------------------------------------------------- swarm status


def show_status(swarm: str, redis_url: str | None, wait: float, console: Console) -> None:
    """Run `swarm status --wait` as a user would and show its table. ProofFailed when the swarm
    did not converge, ProofError when status could not answer (Redis unreachable...)."""
    argv = [sys.executable, "-m", "swarm", "status", "--swarm", swarm, "--wait", f"{wait:g}"]
    if redis_url is not None:
        argv += ["--redis-url", redis_url]
    env = {**os.environ, "COLUMNS": str(console.width)}
    if console.is_terminal:
        env["FORCE_COLOR"] = "1"
    console.print(f"asking `swarm status --wait {wait:g}`...")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=wait + STATUS_SLACK_S
        )
    except subprocess.TimeoutExpired as exc:
        raise ProofFailed("`swarm status` did not answer in time") from exc
    console.print(Text.from_ansi(done.stdout.rstrip("\n")))
    if done.returncode == 1:
        raise ProofFailed(f"the swarm did not converge within {wait:g} s")
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        raise ProofError(f"`swarm status` failed: {message[-1] if message else done.returncode}")


def node_names(folders: Sequence[Path]) -> dict[str, Path]:
    """Node name -> folder: the folder's name, or its path where two names clash."""
    names = [folder.resolve().name for folder in folders]
    return {
        (name if names.count(name) == 1 else str(folder)): folder
        for name, folder in zip(names, folders, strict=True)
    }


def run_verify(
    folders: Sequence[Path], *, swarm: str | None, redis_url: str | None, wait: float,
    console: Console,
) -> int:  # fmt: skip
    """`swarm verify`: 0 when the folders hold one memory with every entry once, 1 when not.
    Raises ProofError when it cannot check (fewer than two folders, no agent log)."""
    if len(folders) < 2:
        raise ProofError("give at least two memory folders to compare")
    for folder in folders:
        if not folder.is_dir():
            raise ProofError(f"{folder}: not a directory")
    nodes = node_names(folders)
    entries = load_entries(folders)
    if not entries:
        raise ProofError(
            f"no agent logs ({ENTRY_LOG_DIR}/{ENTRY_LOG_GLOB}) in {', '.join(map(str, folders))}: "
            "verify proves the demo agents' run"
        )
    try:
        if swarm is not None:
            show_status(swarm, redis_url, wait, console)
        count = prove(nodes, entries, console, wait=wait)
    except ProofFailed as failure:
        console.print(Text.assemble(("verify failed: ", "bold red"), str(failure)))
        return 1
    console.print(f"[bold green]verify passed:[/] {count} files identical on {' and '.join(nodes)}")
    return 0

"""The engine behind `swarm demo`: one agent, two instances, one memory, and the proof.

It starts a private redis-server (or uses a given URL), two sidecars (`cloud`, `local`) on two
copies of the seed workspace, and the two scripted agents of `deploy/`; then it asks
`swarm status` whether the swarm converged and proves it on disk: every synced file byte-identical
on both nodes, every entry each agent logged present exactly once. Everything runs as
subprocesses through the public CLI, so the demo exercises exactly what a user would run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from swarm.bridge.policy import PathPolicy
from swarm.devredis import free_port

ROLES = ("cloud", "local")
LOOPBACK = "127.0.0.1"
MEMORY = "MEMORY.md"
REDIS_START_S = 10.0
SIDECAR_READY_S = 60.0
AGENT_PACE_S = 0.125  # mean pause between two agent writes (deploy/agent.py: 50-200 ms)
AGENT_SLACK_S = 60.0
STATUS_WAIT_S = 30
DISK_SETTLE_S = 15.0  # converged state vectors may still be on their way to disk
STOP_GRACE_S = 10.0
POLL_S = 0.1
INSTALL_HINT = (
    "redis-server not found: install it with `apt-get install redis-server` or pass --redis-url"
)


class DemoError(Exception):
    """The demo could not run; the message is one line."""


class _Failed(Exception):
    """The demo ran but the result is wrong; the message says what."""


class _Interrupted(Exception):
    """SIGTERM arrived: stop like on Ctrl-C."""


# ---------------------------------------------------------------- the proof (pure, testable)


@dataclass(frozen=True)
class LoggedEntry:
    """One line an agent says it wrote (a line of deploy/agent.py's --log)."""

    id: str
    role: str
    kind: str
    file: str
    line: str

    @property
    def token(self) -> str:
        return f"[{self.id}]"

    @property
    def contested(self) -> bool:
        """The shared-line change: a conflict both sides made, so a merge may keep either."""
        return self.kind == "focus"


def entry_log_path(workspace: Path, role: str) -> Path:
    """Where a demo agent logs its entries by default (deploy/agent.py `default_log`)."""
    return workspace / ".demo" / f"{role}-entries.jsonl"


def read_entry_log(path: Path) -> list[LoggedEntry]:
    """The entries of one agent log; a torn last line (agent killed mid-write) is ignored."""
    entries: list[LoggedEntry] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return entries
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw)
            entries.append(
                LoggedEntry(
                    record["id"], record["role"], record["kind"], record["file"], record["line"]
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):
                break
            raise DemoError(f"{path}:{number}: not an agent log line ({exc})") from exc
    return entries


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


# ---------------------------------------------------------------- processes


def deploy_dir() -> Path:
    """deploy/ of the source checkout this package runs from."""
    deploy = Path(__file__).resolve().parent.parent / "deploy"
    if not (deploy / "agent.py").is_file() or not (deploy / "seed" / MEMORY).is_file():
        raise DemoError(
            f"demo files not found at {deploy}: run `swarm demo` from a source checkout "
            "(pip install -e .)"
        )
    return deploy


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail if line.strip())


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Every process the demo started, stopped in reverse start order (agents before sidecars
    before Redis, so the sidecars can flush to Redis)."""

    logs: Path
    children: list[_Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str]) -> _Child:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            # Own session: a Ctrl-C reaches only the demo, which then stops children in order.
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = _Child(name, proc, log)
        self.children.append(child)
        return child

    def stop_all(self, grace: float = STOP_GRACE_S) -> None:
        """Terminate, wait up to `grace`, then kill; a second Ctrl-C kills the rest at once."""
        try:
            for child in reversed(self.children):
                self._stop(child, grace)
        except (KeyboardInterrupt, _Interrupted):
            for child in self.children:
                if child.proc.poll() is None:
                    child.proc.kill()
            raise
        finally:
            self.children.clear()

    @staticmethod
    def _stop(child: _Child, grace: float) -> None:
        if child.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.proc.terminate()
        try:
            child.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            child.proc.wait()


def swarm_cli() -> list[str]:
    return [sys.executable, "-m", "swarm"]


def redis_reachable(url: str) -> bool:
    client = redis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(procs: Processes, workdir: Path) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoError(INSTALL_HINT)
    data = workdir / "redis"
    data.mkdir()
    port = free_port()
    child = procs.start(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
    )
    url = f"redis://{LOOPBACK}:{port}/0"
    deadline = time.monotonic() + REDIS_START_S
    while not redis_reachable(url):
        if child.proc.poll() is not None or time.monotonic() > deadline:
            raise DemoError(f"redis-server did not start: {log_tail(child.log) or child.log}")
        time.sleep(POLL_S)
    return url


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (OSError, ValueError):
        return False


def wait_ready(sidecars: Mapping[str, tuple[_Child, int]]) -> None:
    deadline = time.monotonic() + SIDECAR_READY_S
    pending = dict(sidecars)
    while pending:
        for role, (child, port) in list(pending.items()):
            if child.proc.poll() is not None:
                raise DemoError(
                    f"{role} sidecar exited with code {child.proc.returncode}: "
                    f"{log_tail(child.log) or child.log}"
                )
            if http_ok(f"http://{LOOPBACK}:{port}/readyz"):
                del pending[role]
        if pending and time.monotonic() > deadline:
            raise DemoError(
                f"sidecar(s) {', '.join(pending)} not ready after "
                f"{SIDECAR_READY_S:.0f} s: see {workdir_logs(sidecars)}"
            )
        if pending:
            time.sleep(POLL_S)


def workdir_logs(sidecars: Mapping[str, tuple[_Child, int]]) -> str:
    return ", ".join(str(child.log) for child, _ in sidecars.values())


# ---------------------------------------------------------------- the run


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def agent_command(
    agent: Path, role: str, workspace: Path, *, entries: int, barrier: Path
) -> list[str]:
    """The command line of one demo agent (`deploy/agent.py`): it writes `entries` lines into
    `workspace` and logs them there, meeting the other agent in the shared folder `barrier`
    before it starts and before it changes the line both change."""
    return [
        sys.executable, str(agent), "--role", role, "--dir", str(workspace),
        "--entries", str(entries), "--barrier", str(barrier),
    ]  # fmt: skip


def watch_agents(
    agents: Mapping[str, _Child],
    entry_logs: Mapping[str, Path],
    workspaces: Mapping[str, Path],
    entries: int,
    deadline: float,
    console: Console,
) -> None:
    """Live progress until both agents exit: entries written, lines of each MEMORY.md."""
    columns = (
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("entries  MEMORY.md: {task.fields[lines]} lines"),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            role: progress.add_task(f"{role} agent", total=entries, lines=0) for role in agents
        }
        while True:
            for role, task in tasks.items():
                written = sum(1 for e in read_entry_log(entry_logs[role]) if not e.contested)
                progress.update(
                    task, completed=written, lines=count_lines(workspaces[role] / MEMORY)
                )
            if all(child.proc.poll() is not None for child in agents.values()):
                return
            if time.monotonic() > deadline:
                raise _Failed("the agents did not finish in time")
            time.sleep(POLL_S)


def run_status(redis_url: str, swarm: str) -> dict[str, Any]:
    argv = [
        *swarm_cli(),
        "status",
        "--swarm",
        swarm,
        "--redis-url",
        redis_url,
        "--wait",
        str(STATUS_WAIT_S),
        "--json",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=STATUS_WAIT_S + 30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise _Failed("`swarm status` did not answer in time") from exc
    if done.returncode == 2:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise _Failed(f"`swarm status` failed: {message[-1] if message else 'exit 2'}")
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError as exc:
        raise _Failed(f"`swarm status --json` printed no JSON (exit {done.returncode})") from exc
    return report


def format_seen(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        age = time.time() - value if value > 1e9 else value
        return f"{max(age, 0.0):.1f} s ago"
    return "-" if value is None else str(value)


def status_table(report: Mapping[str, Any]) -> Table:
    verdict = "converged" if report.get("converged") else "NOT converged"
    table = Table(title=f"swarm status — {report.get('swarm', '?')}: {verdict}")
    for column in ("node", "role", "online", "converged", "lag", "last seen", "files"):
        table.add_column(column)
    for node in report.get("nodes", []):
        table.add_row(
            str(node.get("node")),
            str(node.get("role") or "-"),
            "yes" if node.get("online") else "no",
            "yes" if node.get("converged") else "no",
            str(node.get("lag")),
            format_seen(node.get("last_seen")),
            str(node.get("files")),
        )
    return table


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


def settle_on_disk(workspaces: Mapping[str, Path]) -> list[FileVerdict]:
    """Compare the folders until they agree or DISK_SETTLE_S passes: renders trail convergence."""
    deadline = time.monotonic() + DISK_SETTLE_S
    while True:
        verdicts = compare_nodes(workspaces)
        if all(v.identical for v in verdicts) or time.monotonic() > deadline:
            return verdicts
        time.sleep(POLL_S)


def prepare_workdir(workdir: Path | None) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="swarm-demo-"))
    workdir = workdir.resolve()
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise DemoError(f"workdir {workdir} is not an empty folder: pass a new or empty one")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    *, workdir: Path | None, redis_url: str | None, entries: int, swarm: str, console: Console
) -> int:
    """Run the demo; 0 when both nodes end identical with every entry once, else 1.

    Raises DemoError when it cannot run at all (no redis-server, no deploy/, busy workdir, a
    sidecar that never gets ready). Stops every process it started, also on Ctrl-C (exit 130).
    """
    if entries < 1:
        raise DemoError("--entries must be at least 1")
    if redis_url is None and shutil.which("redis-server") is None:
        raise DemoError(INSTALL_HINT)
    deploy = deploy_dir()
    root = prepare_workdir(workdir)
    console.print(f"[bold]swarm demo[/] — workdir: {root}")
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    procs = Processes(logs)
    try:
        with _sigterm_as_interrupt():
            return _run(procs, root, deploy, redis_url, entries, swarm, console)
    except (KeyboardInterrupt, _Interrupted):
        console.print("[yellow]interrupted: stopping the demo's processes[/]")
        return 130
    finally:
        procs.stop_all()
        console.print(f"workdir kept for inspection: {root}")


def _run(
    procs: Processes,
    root: Path,
    deploy: Path,
    redis_url: str | None,
    entries: int,
    swarm: str,
    console: Console,
) -> int:
    if redis_url is None:
        url = start_redis(procs, root)
        console.print(f"redis: private redis-server at {url}")
    else:
        if not redis_reachable(redis_url):
            raise DemoError(f"cannot reach Redis at {redis_url}")
        url = redis_url
        console.print(f"redis: {url}")

    workspaces = {role: root / role for role in ROLES}
    sidecars: dict[str, tuple[_Child, int]] = {}
    for role, workspace in workspaces.items():
        shutil.copytree(deploy / "seed", workspace)
        port = free_port()
        child = procs.start(
            f"{role}-swarm",
            [
                *swarm_cli(),
                "daemon",
                "--dir",
                str(workspace),
                "--swarm",
                swarm,
                "--node",
                role,
                "--role",
                role,
                "--redis-url",
                url,
                "--state-dir",
                str(root / "state" / role),
                "--http",
                f"{LOOPBACK}:{port}",
            ],
        )
        sidecars[role] = (child, port)
    wait_ready(sidecars)
    for role, (_, port) in sidecars.items():
        console.print(
            f"sidecar {role}: ready, http://{LOOPBACK}:{port}/status, folder {workspaces[role]}"
        )

    barrier = root / "barrier"
    barrier.mkdir()
    entry_logs = {role: entry_log_path(workspace, role) for role, workspace in workspaces.items()}
    agents = {
        role: procs.start(
            f"{role}-agent",
            agent_command(
                deploy / "agent.py", role, workspace, entries=entries, barrier=barrier
            ),
        )
        for role, workspace in workspaces.items()
    }
    deadline = time.monotonic() + entries * 2 * AGENT_PACE_S + AGENT_SLACK_S
    try:
        watch_agents(agents, entry_logs, workspaces, entries, deadline, console)
        for role, child in agents.items():
            if child.proc.returncode != 0:
                raise _Failed(
                    f"{role} agent exited with code {child.proc.returncode}: "
                    f"{log_tail(child.log) or child.log}"
                )
        return _prove(url, swarm, workspaces, entry_logs, console)
    except _Failed as failure:
        console.print(f"[bold red]demo failed:[/] {failure}")
        return 1


def _prove(
    url: str,
    swarm: str,
    workspaces: Mapping[str, Path],
    entry_logs: Mapping[str, Path],
    console: Console,
) -> int:
    console.print(f"agents done; asking `swarm status --wait {STATUS_WAIT_S}`...")
    report = run_status(url, swarm)
    console.print(status_table(report))
    if not report.get("converged"):
        raise _Failed(f"the swarm did not converge within {STATUS_WAIT_S} s")

    verdicts = settle_on_disk(workspaces)
    console.print(files_table(verdicts, list(workspaces)))
    memory = next((v for v in verdicts if v.path == MEMORY), None)
    if memory is None or not memory.identical:
        raise _Failed("MEMORY.md differs between the nodes")
    differing = [v.path for v in verdicts if not v.identical]
    if differing:
        raise _Failed(f"files differ between the nodes: {', '.join(differing)}")
    console.print(f"MEMORY.md sha256 {memory.digests[ROLES[0]]} on both nodes")

    entries = [entry for role in ROLES for entry in read_entry_log(entry_logs[role])]
    problems = entry_problems(entries, workspaces)
    if problems:
        shown = "; ".join(problems[:5]) + (
            f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        raise _Failed(f"entries lost or duplicated: {shown}")
    regular = [entry for entry in entries if not entry.contested]
    per_role = ", ".join(f"{sum(e.role == role for e in regular)} {role}" for role in ROLES)
    merged = (workspaces[ROLES[0]] / MEMORY).read_text(encoding="utf-8")
    kept = [entry.role for entry in entries if entry.contested and entry.token in merged]
    console.print(f"{len(regular)} entries ({per_role}) each present exactly once on both nodes")
    console.print(
        f"the line both agents changed at the same moment now holds: "
        f"{' and '.join(kept) or 'neither edit'}"
    )
    console.print(
        f"[bold green]demo passed:[/] {len(verdicts)} files identical on {' and '.join(workspaces)}"
    )
    return 0

"""The engine behind `swarm demo`: one agent, two instances, one memory, and the proof.

It starts a private redis-server (or uses a given URL), two sidecars (`cloud`, `local`) on two
copies of the seed workspace, and the two scripted agents of `deploy/`; then it asks
`swarm status` whether the swarm converged and proves it on disk with the proof `swarm verify`
makes (swarm/verify.py). Everything runs as subprocesses through the public CLI, so the demo
exercises exactly what a user would run.
"""

from __future__ import annotations

import contextlib
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

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from swarm.devtools.commands import daemon_args, swarm_command
from swarm.devtools.devredis import RedisServer, RedisServerError, free_port
from swarm.verify import (
    MEMORY,
    ProofError,
    ProofFailed,
    entry_log_path,
    load_entries,
    prove,
    read_entry_log,
    show_status,
)

ROLES = ("cloud", "local")
LOOPBACK = "127.0.0.1"
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


class _Interrupted(Exception):
    """SIGTERM arrived: stop like on Ctrl-C."""


# ---------------------------------------------------------------- processes


def deploy_dir() -> Path:
    """deploy/ of the source checkout this package runs from."""
    deploy = Path(__file__).resolve().parents[2] / "deploy"
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
    servers: list[RedisServer] = field(default_factory=list)  # stopped after every child

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
            for server in reversed(self.servers):
                server.close()
            self.servers.clear()

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
    """A private redis-server (swarm/devtools/devredis.py), stopped with the demo's processes."""
    server = RedisServer(workdir=workdir / "redis")
    try:
        server.start()
    except RedisServerError as exc:
        raise DemoError(str(exc)) from None
    procs.servers.append(server)
    return server.url


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
    """Live progress until both agents exit: entries written, lines of each MEMORY.md. One that
    fails ends the watch at once: the other would wait for it at the barrier until its timeout."""
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
            codes = {role: child.proc.poll() for role, child in agents.items()}
            if all(code is not None for code in codes.values()) or any(codes.values()):
                return
            if time.monotonic() > deadline:
                raise ProofFailed("the agents did not finish in time")
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
            swarm_command(
                *daemon_args(
                    dir=workspace,
                    swarm=swarm,
                    node=role,
                    role=role,
                    redis_url=url,
                    state_dir=root / "state" / role,
                    http=f"{LOOPBACK}:{port}",
                )
            ),
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
            if child.proc.returncode not in (None, 0):
                raise ProofFailed(
                    f"{role} agent exited with code {child.proc.returncode}: "
                    f"{log_tail(child.log) or child.log}"
                )
        return _prove(url, swarm, workspaces, console)
    except (ProofFailed, ProofError) as failure:
        console.print(Text.assemble(("demo failed: ", "bold red"), str(failure)))
        return 1


def _prove(url: str, swarm: str, workspaces: Mapping[str, Path], console: Console) -> int:
    console.print("agents done")
    show_status(swarm, url, STATUS_WAIT_S, console)
    count = prove(workspaces, load_entries(workspaces.values()), console, wait=DISK_SETTLE_S)
    console.print(
        f"[bold green]demo passed:[/] {count} files identical on {' and '.join(workspaces)}"
    )
    return 0

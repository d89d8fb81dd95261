"""Helpers for end-to-end tests of `swarm daemon`: daemons as subprocesses (through the CLI) or in
the test's event loop, agents that write memory files the way real agents do, and polling with
deadlines (never a fixed sleep as synchronisation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from swarm.config import DaemonSettings
from swarm.daemon import running
from swarm.devtools.commands import daemon_args, swarm_command
from swarm.runtime import Runtime, open_runtime

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.02  # polling interval of every wait below: not synchronisation, just its granularity
START_DEADLINE_S = 15.0
CONVERGE_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0
DAILY = "memory/2026-11-25.md"
FAST_SYNC_ENV = {"SWARM_HEARTBEAT_INTERVAL": "0.2", "SWARM_OFFLINE_AFTER": "2"}


class DeadlineError(AssertionError):
    """A condition a test waits for did not hold before its deadline."""


# -- waiting ---------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float = CONVERGE_DEADLINE_S,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` (from a synchronous test) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        _check_deadline(deadline, what, timeout, explain)
        time.sleep(POLL_S)


async def wait_until_async(
    condition: Callable[[], object],
    what: str,
    timeout: float = CONVERGE_DEADLINE_S,
    explain: Callable[[], str] | None = None,
) -> None:
    """Like `wait_until`, but yields to the event loop (in-process daemons keep running)."""
    deadline = time.monotonic() + timeout
    while not condition():
        _check_deadline(deadline, what, timeout, explain)
        await asyncio.sleep(POLL_S)


def _check_deadline(
    deadline: float, what: str, timeout: float, explain: Callable[[], str] | None
) -> None:
    if time.monotonic() > deadline:
        detail = f"\n{explain()}" if explain is not None else ""
        raise DeadlineError(f"{what}: not true after {timeout:.0f} s{detail}")


def read_tree(root: Path) -> dict[str, str]:
    """POSIX relative path -> text of every synced file (`*.md`) under `root`.

    `os.walk` skips a folder that vanishes while it is listed (the daemon prunes emptied folders),
    where `Path.rglob` raises."""
    tree: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".swarm")
        for name in sorted(files):
            if not name.endswith(".md"):
                continue
            path = Path(folder) / name
            try:
                tree[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
            except (FileNotFoundError, IsADirectoryError):  # replaced between listing and reading
                continue
    return dict(sorted(tree.items()))


def identical(roots: Sequence[Path]) -> bool:
    trees = [read_tree(root) for root in roots]
    return all(tree == trees[0] for tree in trees[1:])


def holds_all(root: Path, expected: Mapping[str, Iterable[str]]) -> bool:
    """Every line of `expected[path]` is a line of `root/path`."""
    tree = read_tree(root)
    for path, lines in expected.items():
        present = set(tree.get(path, "").splitlines())
        if not set(lines) <= present:
            return False
    return True


def converged(roots: Sequence[Path], expected: Mapping[str, Iterable[str]]) -> bool:
    return identical(roots) and all(holds_all(root, expected) for root in roots)


def describe(roots: Sequence[Path], expected: Mapping[str, Iterable[str]] | None = None) -> str:
    """What differs, for a failed wait: missing lines per node, and whether the trees match."""
    lines = []
    for root in roots:
        tree = read_tree(root)
        summary = {path: len(text.splitlines()) for path, text in tree.items()}
        lines.append(f"{root}: {summary}")
        for path, wanted in (expected or {}).items():
            missing = sorted(set(wanted) - set(tree.get(path, "").splitlines()))
            if missing:
                lines.append(f"  {path} lacks {len(missing)}: {missing[:5]}")
    lines.append(f"identical: {identical(roots)}")
    return "\n".join(lines)


def duplicated_lines(text: str, lines: Iterable[str]) -> list[str]:
    """Which of `lines` occur more than once in `text`."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        counts[line] = counts.get(line, 0) + 1
    return [line for line in lines if counts.get(line, 0) > 1]


def assert_each_line_once(roots: Sequence[Path], expected: Mapping[str, Iterable[str]]) -> None:
    for root in roots:
        tree = read_tree(root)
        for path, lines in expected.items():
            text = tree.get(path, "")
            wanted = list(lines)
            missing = sorted(set(wanted) - set(text.splitlines()))
            assert not missing, f"{root / path} lacks {len(missing)} lines, e.g. {missing[:3]}"
            doubled = duplicated_lines(text, wanted)
            assert not doubled, f"{root / path} holds lines twice, e.g. {doubled[:3]}"


# -- agents ----------------------------------------------------------------------------------


class Agent:
    """Writes a memory folder the way agents do: read the whole file, append, rewrite it whole,
    either in place (`open('w')`: truncate then write) or atomically (temp file + rename)."""

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        seed: int = 0,
        in_place: float = 0.5,
        think: tuple[float, float] | None = None,
    ) -> None:
        self.root = root
        self.in_place = in_place  # share of writes made in place
        # Seconds between reading a file and writing it back (None: none), like a model thinking
        # (pacing of the workload, not synchronisation): renders land in between.
        self.think = think
        self.name = name
        self.written: dict[str, list[str]] = {}
        self._count = 0
        self._random = random.Random(seed)

    def append(self, rel: str, line: str | None = None, *, atomic: bool | None = None) -> str:
        """Append one line (unique by default) to `rel`; returns the line."""
        self._count += 1
        line = line if line is not None else f"- {self.name} {rel} note {self._count:05d}"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        if text and not text.endswith("\n"):
            text += "\n"
        if atomic is None:
            atomic = self._random.random() >= self.in_place
        if self.think is not None:
            time.sleep(self._random.uniform(*self.think))
        write_file(path, text + line + "\n", atomic=atomic)
        self.written.setdefault(rel, []).append(line)
        return line

    def burst(
        self,
        seconds: float,
        paths: Sequence[str] = ("MEMORY.md", DAILY),
        pause: tuple[float, float] = (0.01, 0.05),
        stop: threading.Event | None = None,
    ) -> None:
        """Append to `paths` in turn for `seconds` (or until `stop`), pausing between writes like a
        busy agent (pacing of the workload, not synchronisation)."""
        end = time.monotonic() + seconds
        turn = 0
        while time.monotonic() < end and not (stop is not None and stop.is_set()):
            self.append(paths[turn % len(paths)])
            turn += 1
            time.sleep(self._random.uniform(*pause))


def write_file(path: Path, text: str, *, atomic: bool) -> None:
    """Rewrite `path` whole: atomically (temp file + rename) or in place (truncate, then write,
    back to back, as `fs.writeFile` or `Path.write_text` do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if atomic:
        tmp = path.with_name(f".{path.name}.agent.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def merged_writes(agents: Iterable[Agent]) -> dict[str, list[str]]:
    """path -> every line any of `agents` appended to it."""
    merged: dict[str, list[str]] = {}
    for agent in agents:
        for path, lines in agent.written.items():
            merged.setdefault(path, []).extend(lines)
    return merged


def run_bursts(agents: Sequence[Agent], seconds: float, **options: Any) -> None:
    """Run every agent's burst at once in threads; returns when all are done."""
    threads = [
        threading.Thread(target=agent.burst, args=(seconds,), kwargs=options, daemon=True)
        for agent in agents
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + STOP_DEADLINE_S)
        assert not thread.is_alive(), "an agent thread did not finish"


# -- daemons as subprocesses -----------------------------------------------------------------


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without SWARM_* settings (they would leak in), plus fast sync."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWARM_")}
    env.update(FAST_SYNC_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    if os.environ.get("SWARM_TEST_DEBUG"):
        env["SWARM_LOG_LEVEL"] = "debug"
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = STOP_DEADLINE_S
) -> subprocess.CompletedProcess[str]:
    """Run `swarm ARGS` to completion."""
    return subprocess.run(
        swarm_command(*args),
        env=env if env is not None else daemon_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class DaemonProcess:
    """One `swarm daemon` subprocess; its stderr goes to `log_path`."""

    dir: Path
    state_dir: Path
    node: str
    swarm: str
    redis_url: str
    log_path: Path
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    wrapper: tuple[str, ...] = ()  # a command the daemon runs under (e.g. setpriv ... --)
    proc: subprocess.Popen[bytes] | None = None
    _starts: int = 0

    def args(self) -> list[str]:
        return daemon_args(
            dir=self.dir,
            swarm=self.swarm,
            node=self.node,
            redis_url=self.redis_url,
            state_dir=self.state_dir,
            extra=self.extra_args,
        )

    def start(self) -> DaemonProcess:
        assert not self.running, f"daemon {self.node} is already running"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self._starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*self.wrapper, *swarm_command(*self.args())],
                env=daemon_env(self.env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def current_log(self) -> str:
        """The log of the latest start only."""
        return self.log_text().rpartition(f"--- start {self._starts} ---\n")[2]

    def wait_ready(self, timeout: float = START_DEADLINE_S) -> DaemonProcess:
        """Until the daemon logged that it is ready (it has reconciled its folder)."""

        def ready() -> bool:
            if not self.running:
                raise AssertionError(f"daemon {self.node} exited early:\n{self.current_log()}")
            return " ready: " in self.current_log()

        wait_until(ready, f"daemon {self.node} ready", timeout, self.current_log)
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = STOP_DEADLINE_S) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise DeadlineError(
                f"daemon {self.node} still running after {timeout} s:\n{self.current_log()}"
            ) from None

    def stop(self, timeout: float = STOP_DEADLINE_S) -> int:
        """SIGTERM and wait: the exit code."""
        if not self.running:
            return self.proc.returncode if self.proc is not None else 0
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, like a crashed host: nothing gets flushed."""
        if self.running:
            self.signal(signal.SIGKILL)
            self.wait()

    def close(self) -> None:
        """Stop whatever happens (test teardown)."""
        if self.running:
            try:
                self.stop()
            except DeadlineError:
                self.kill()


class DaemonGroup:
    """Daemons of one test, every one stopped at the end: `with DaemonGroup(tmp_path) as g`."""

    def __init__(self, base: Path, redis_url: str, swarm: str = "team") -> None:
        self.base = base
        self.redis_url = redis_url
        self.swarm = swarm
        self.daemons: dict[str, DaemonProcess] = {}

    def add(
        self,
        node: str,
        *,
        swarm: str | None = None,
        redis_url: str | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> DaemonProcess:
        daemon = DaemonProcess(
            dir=self.base / node / "memory-folder",
            state_dir=self.base / node / "state",
            node=node,
            swarm=swarm or self.swarm,
            redis_url=redis_url or self.redis_url,
            log_path=self.base / node / "daemon.log",
            extra_args=tuple(extra_args),
            env=dict(env or {}),
            wrapper=tuple(wrapper),
        )
        daemon.dir.mkdir(parents=True, exist_ok=True)
        self.daemons[node] = daemon
        return daemon

    def __getitem__(self, node: str) -> DaemonProcess:
        return self.daemons[node]

    def start_ready(self, *nodes: str) -> list[DaemonProcess]:
        """Add and start these daemons together, then wait until each is ready."""
        started = [self.add(node).start() for node in nodes]
        for daemon in started:
            daemon.wait_ready()
        return started

    @property
    def folders(self) -> list[Path]:
        return [daemon.dir for daemon in self.daemons.values()]

    def logs(self) -> str:
        return "\n".join(f"== {d.node} ==\n{d.log_text()[-4000:]}" for d in self.daemons.values())

    def __enter__(self) -> DaemonGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for daemon in self.daemons.values():
            daemon.close()


# -- daemons in the test's event loop --------------------------------------------------------


def assert_late_joiner_gets_everything(
    group: DaemonGroup, reference: Path, expected: Mapping[str, Iterable[str]], what: str
) -> None:
    """A new node, started while no peer runs, builds the reference node's files from Redis."""
    late = group.add("late").start().wait_ready()
    wait_until(
        lambda: read_tree(late.dir) == read_tree(reference),
        what,
        explain=lambda: describe([reference, late.dir], expected) + "\n" + late.current_log(),
    )
    assert_each_line_once([late.dir], expected)


def daemon_settings(
    folder: Path, state_dir: Path, node: str, redis_url: str, swarm: str = "team", **extra: Any
) -> DaemonSettings:
    values: dict[str, Any] = {
        "dir": folder,
        "state_dir": state_dir,
        "node": node,
        "swarm": swarm,
        "redis_url": redis_url,
        "http": "0",
        "heartbeat_interval": 0.2,
        "offline_after": 2.0,
        "grace": 5.0,
    }
    values.update(extra)
    return DaemonSettings(**values)


class InProcessDaemon:
    """A daemon running inside the test's event loop, so a test can reach into its runtime (e.g.
    to drop a pub/sub message at the transport). Files must then be written from threads
    (`asyncio.to_thread`) so the loop keeps running the daemon."""

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.dir = settings.dir
        self.runtime: Runtime | None = None
        self._running: contextlib.AbstractAsyncContextManager[object] | None = None

    async def start(self, timeout: float = START_DEADLINE_S) -> InProcessDaemon:
        self.settings.dir.mkdir(parents=True, exist_ok=True)
        self.runtime = open_runtime(self.settings)
        self._before_serve(self.runtime)
        started = running(self.runtime, ready_timeout=timeout)
        await started.__aenter__()
        self._running = started
        return self

    def _before_serve(self, runtime: Runtime) -> None:
        """Hook for tests that need to change the runtime before it runs."""

    async def stop(self, timeout: float = STOP_DEADLINE_S) -> None:
        if self._running is None:
            return
        started, self._running = self._running, None
        await asyncio.wait_for(started.__aexit__(None, None, None), timeout)

    async def __aenter__(self) -> InProcessDaemon:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run blocking file work off the event loop (in-process daemons must keep running)."""
    return await asyncio.to_thread(function, *args, **kwargs)


def awaitable_bursts(agents: Sequence[Agent], seconds: float, **options: Any) -> Awaitable[None]:
    return asyncio.to_thread(run_bursts, agents, seconds, **options)

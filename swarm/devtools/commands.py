"""The `swarm` command lines the demo, the bench and the test harnesses start: built here once,
so a daemon is started the same way everywhere."""

from __future__ import annotations

import sys
from pathlib import Path


def swarm_command(*args: str) -> list[str]:
    """`swarm ARGS` as this interpreter runs it."""
    return [sys.executable, "-m", "swarm", *args]


def daemon_args(
    *,
    dir: Path,
    swarm: str,
    node: str,
    redis_url: str,
    state_dir: Path | None = None,
    http: str = "0",
    role: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The arguments of `swarm daemon` for one node (without the `swarm` command itself)."""
    args = ["daemon", "--dir", str(dir), "--swarm", swarm, "--node", node]
    if role is not None:
        args += ["--role", role]
    args += ["--redis-url", redis_url]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    return [*args, "--http", http, *extra]

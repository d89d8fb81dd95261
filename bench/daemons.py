"""`swarm daemon` processes started by the harness, and what Redis says about them.

Readiness and convergence are read from the swarm's presence hash (the heartbeats `swarm status`
is computed from): each node publishes per-file state-vector digests, its outbox depth and lag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from swarm.transport.redis_keys import SwarmKeys

HEARTBEAT_S = 0.2


def start_daemon(
    url: str,
    swarm: str,
    node: str,
    root: Path,
    http: str = "0",
    *,
    module: str = "swarm",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m <module> daemon ...`: `module` is swarm, or a wrapper taking the same arguments
    (bench/traced_daemon.py); `env` is added to the harness's environment."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SWARM_HEARTBEAT_INTERVAL": str(HEARTBEAT_S), **(env or {})}
    log = (root.parent / f"{node}.log").open("ab")  # the child keeps its own copy of the fd
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", module, "daemon", "--dir", str(root), "--swarm", swarm,
             "--node", node, "--redis-url", url, "--http", http, "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip


def stop_daemons(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def presence(client: redis.Redis, swarm: str) -> dict[str, dict[str, Any]]:
    """node -> its last heartbeat info, per-file facts (stored apart) under `files`."""
    keys = SwarmKeys.for_swarm(swarm)
    raw = client.hgetall(keys.nodes)
    files = client.hgetall(keys.files)
    out: dict[str, dict[str, Any]] = {}
    for node, record in raw.items():
        info = json.loads(record)["info"]
        if node in files:
            info["files"] = json.loads(files[node])["files"]
        out[node.decode() if isinstance(node, bytes) else str(node)] = info
    return out


def status_converged(infos: dict[str, dict[str, Any]], nodes: int, files: int) -> bool:
    """What `swarm status` calls converged: every node heartbeating, nothing in an outbox, no lag,
    and for every file one state-vector digest across all nodes."""
    if len(infos) < nodes:
        return False
    digests: dict[str, set[str]] = {}
    for info in infos.values():
        if not info.get("ready") or info.get("outbox") or info.get("lag"):
            return False
        if len(info.get("files", {})) < files:
            return False
        for path, facts in info["files"].items():
            digests.setdefault(path, set()).add(facts["digest"])
    return all(len(found) == 1 for found in digests.values())


def wait_for(condition: Callable[[], bool], deadline_s: float, poll_s: float) -> float | None:
    """Seconds until `condition()` held, polling; None if it never did within the deadline."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_s:
            return None
        time.sleep(poll_s)
    return time.monotonic() - start


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident set size now (`VmRSS`) or at its peak so far (`VmHWM`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def check_alive(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Raise with the last line a dead daemon logged (logs sit next to the memory folders)."""
    for proc in procs:
        if proc.poll() is not None:
            args = list(proc.args)  # type: ignore[arg-type]
            root = Path(str(args[args.index("--dir") + 1]))
            node = str(args[args.index("--node") + 1])
            lines = (root.parent / f"{node}.log").read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else "(nothing logged)"
            raise RuntimeError(f"daemon {node} exited with {proc.returncode}: {last}")

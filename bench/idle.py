"""An idle sidecar: RSS and CPU of one `swarm daemon` at rest, its HTTP endpoints on.

What a laptop pays for a daemon that has nothing to do: one real daemon on a private
redis-server and a folder of small memory files, ready and quiet; then its resident memory and
the CPU time it used over a window in which nothing changed (heartbeats, anti-entropy and the
maintenance pass are all it does). `/readyz` and `/metrics` are fetched once before the window,
so the HTTP server has served requests.

    .venv/bin/python -m bench.idle [--files 20] [--window 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.daemons import rss_bytes, start_daemon, stop_daemons, wait_for
from bench.memory import seed_folder
from bench.server import BenchRedis
from swarm.devredis import free_port

_SETTLE_S = 5.0  # after ready: the import's burst is over and its memory handed back


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def get(port: int, path: str, timeout: float = 2.0) -> int:
    """The HTTP status of GET `path` on the daemon's port (0: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            response.read()
            return int(response.status)
    except OSError:
        return 0


def measure(files: int, window: float) -> dict[str, float]:
    with BenchRedis() as server, tempfile.TemporaryDirectory(prefix="swarm-idle-") as tmp:
        root = Path(tmp) / "n0"
        seed_folder(root, files, 2)
        port = free_port()
        proc = start_daemon(server.url, "idle", "n0", root, http=f"127.0.0.1:{port}")
        try:
            if wait_for(lambda: get(port, "/readyz") == 200, 60, 0.1) is None:
                raise TimeoutError("the daemon was not ready within 60 s")
            get(port, "/metrics")
            time.sleep(_SETTLE_S)
            cpu, started = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(window)
            used = _cpu_seconds(proc.pid) - cpu
            return {
                "rss_mb": rss_bytes(proc.pid) / 2**20,
                "cpu_percent": 100 * used / (time.monotonic() - started),
            }
        finally:
            stop_daemons([proc])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    result = measure(args.files, args.window)
    print(f"idle daemon, {args.files} files: RSS {result['rss_mb']:.1f} MB, "
          f"CPU {result['cpu_percent']:.2f} % of one core over {args.window:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()

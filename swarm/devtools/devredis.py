"""A private, throwaway redis-server: free loopback port, temp dir, real process.

For the tests and the benchmarks, which never use the machine's Redis on 127.0.0.1:6379: each gets
its own server, so it can stop, kill, pause and restart it to prove behaviour across outages.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

HOST = "127.0.0.1"
RESERVED_PORT = 6379
START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 10.0


class RedisServerError(RuntimeError):
    """The test Redis could not be started or stopped; the message is one line."""


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerError(
            "redis-server not found on PATH: run scripts/setup.sh (or apt-get install redis-server)"
        )
    return binary


def free_port() -> int:
    """A free loopback TCP port (never the machine's Redis port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port != RESERVED_PORT:
            return port


class RedisServer:
    """One redis-server process; `persistence=True` keeps data (AOF, fsync always) over restarts."""

    def __init__(
        self,
        *,
        persistence: bool = False,
        workdir: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """`extra_args` go after the usual options (cluster mode, `--replicaof`, ...)."""
        self.persistence = persistence
        self.extra_args = extra_args
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-redis-")) if workdir is None else workdir
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "redis.log"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistence
            else ["--appendonly", "no"]
        )
        return [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            *persistence,
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        if self.running:
            return self
        self._proc = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        probe = redis.Redis(
            host=HOST, port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        deadline = time.monotonic() + START_DEADLINE_S
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RedisServerError(
                        f"redis-server exited with {self._proc.returncode}: {self._log_tail()}"
                    )
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(0.01)  # polling interval, not synchronisation
        finally:
            probe.close()
        self.kill()
        raise RedisServerError(f"redis-server did not answer PING within {START_DEADLINE_S} s")

    def _log_tail(self) -> str:
        stderr = ""
        if self._proc is not None and self._proc.stderr is not None:
            stderr = self._proc.stderr.read().decode(errors="replace")
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        lines = (stderr + log).strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def _signal_and_wait(self, sig: int) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server must still get to exit
            proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_DEADLINE_S)
        if proc.stderr is not None:
            proc.stderr.close()
        self._proc = None

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM): an AOF server flushes what it has."""
        self._signal_and_wait(signal.SIGTERM)
        for client in self._clients:
            client.close()
        self._clients.clear()

    def kill(self) -> None:
        """Abrupt death (SIGKILL), like a crashed host."""
        self._signal_and_wait(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open but nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self, *, wipe: bool = False) -> RedisServer:
        """Stop and start again on the same port; `wipe=True` deletes the data files first."""
        self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.start()

    def client(self) -> redis.Redis:
        """A synchronous client for arranging and inspecting state in tests."""
        client = redis.Redis(
            host=HOST, port=self.port, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

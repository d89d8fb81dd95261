"""A private redis-server for one benchmark run: free loopback port, temp dir, no persistence.

The machine's Redis on 127.0.0.1:6379 is never used: figures must not depend on its contents.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

HOST = "127.0.0.1"
_RESERVED_PORT = 6379
_START_DEADLINE_S = 10.0


class BenchServerError(RuntimeError):
    """redis-server could not be started; the message is one line."""


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port != _RESERVED_PORT:
            return port


class BenchRedis:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-bench-redis-"))
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=30.0)

    def start(self) -> BenchRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchServerError("redis-server not found on PATH")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log"),
             "--maxclients", "10000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _START_DEADLINE_S
        probe = self.client()
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise BenchServerError(f"redis-server exited with {self._proc.returncode}")
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.01)  # polling until the server answers
        finally:
            probe.close()
        self.close()
        raise BenchServerError(f"redis-server did not answer within {_START_DEADLINE_S} s")

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> BenchRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

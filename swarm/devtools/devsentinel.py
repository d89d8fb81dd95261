"""A throwaway Sentinel setup of real servers on free loopback ports: a master, replicas, and
sentinels watching them (quorum 2), which can lose its master and fail over."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from swarm.devtools.devcluster import FAST_SYNC, admin, wait_for
from swarm.devtools.devredis import HOST, RedisServer, RedisServerError, redis_server_binary


class SentinelServer(RedisServer):
    """One `redis-server --sentinel` watching `service` at `master_port`."""

    def __init__(self, workdir: Path, service: str, master_port: int, down_after_ms: int) -> None:
        super().__init__(workdir=workdir)
        self.config = workdir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind {HOST}\ndaemonize no\ndir {self.data_dir}\n"
            f"logfile {self.log_path}\n"
            f"sentinel monitor {service} {HOST} {master_port} 2\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 10000\n"
        )

    def _command(self) -> list[str]:
        return [redis_server_binary(), str(self.config), "--sentinel"]


class DevSentinel:
    """A master, `replicas` replicas and `sentinels` sentinels (quorum 2) for `service`."""

    def __init__(
        self,
        service: str = "swarm",
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
    ) -> None:
        self.service = service
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-sentinel-"))
        self.master = RedisServer(workdir=self.dir / "master", extra_args=FAST_SYNC)
        self.replicas = [
            RedisServer(
                workdir=self.dir / f"replica{i}",
                extra_args=("--replicaof", HOST, str(self.master.port), *FAST_SYNC),
            )
            for i in range(replicas)
        ]
        self.sentinels = [
            SentinelServer(self.dir / f"sentinel{i}", service, self.master.port, down_after_ms)
            for i in range(sentinels)
        ]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def url(self, *, sentinels: int | None = None, db: int = 0) -> str:
        chosen = self.sentinels[: sentinels or len(self.sentinels)]
        hosts = ",".join(f"{HOST}:{s.port}" for s in chosen)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"

    def start(self) -> DevSentinel:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_healthy()
        return self

    def current_master(self) -> RedisServer:
        """The server the sentinels name as master (they agree once a failover is over)."""
        ports = set()
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with admin(sentinel.port) as client:
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            ports.add(int(addr[1]))
        if len(ports) != 1:
            raise RedisServerError(f"sentinels disagree on the master: {sorted(ports)}")
        port = ports.pop()
        return next(s for s in self.servers if s.port == port)

    def wait_healthy(self) -> None:
        """The master named by every sentinel is up with every other server replicating it,
        and every sentinel knows the others (so they can reach a quorum)."""

        def healthy() -> bool:
            master = self.current_master()
            if not master.running:
                return False
            with admin(master.port) as client:
                replication = client.info("replication")
            if replication.get("role") != "master":
                return False
            online = sum(
                1 for k, v in replication.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            )  # fmt: skip
            if online < sum(1 for s in self.servers if s.running) - 1:
                return False
            for sentinel in self.sentinels:
                with admin(sentinel.port) as client:
                    known = client.execute_command("SENTINEL", "SENTINELS", self.service)
                if len(known) < len(self.sentinels) - 1:
                    return False
            return True

        wait_for(healthy, "sentinels, master and replicas to be ready")

    def kill_master(self) -> RedisServer:
        master = self.current_master()
        master.kill()
        return master

    def wait_failover(self, dead: RedisServer) -> RedisServer:
        def promoted() -> bool:
            master = self.current_master()
            if master is dead or not master.running:
                return False
            with admin(master.port) as client:
                return bool(client.info("replication").get("role") == "master")

        wait_for(promoted, "the sentinels to promote a replica")
        return self.current_master()

    def close(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DevSentinel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

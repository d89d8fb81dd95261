"""A throwaway Redis Cluster of real servers on free loopback ports (Sentinel: devsentinel.py).

For the tests and the benchmarks: masters with replicas, made the way an operator makes them
(`redis-cli --cluster create`). It can lose a master (SIGKILL), have its replicas cut off first so
the loss of acknowledged writes is certain, move a slot to another master, and heal again, so the
daemon's behaviour across a failover or a reshard is proven against the real thing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis
from redis.crc import key_slot

from swarm.devtools.devredis import HOST, RedisServer, RedisServerError, free_port

READY_DEADLINE_S = 30.0
# A replica's first sync starts at once (Redis waits 5 s by default for more replicas to share it).
FAST_SYNC = ("--repl-diskless-sync-delay", "0")
_POLL_S = 0.05  # polling interval while waiting on the servers, not synchronisation


def admin(port: int) -> redis.Redis:
    """A synchronous client to one server, for arranging and inspecting it."""
    return redis.Redis(host=HOST, port=port, socket_timeout=2.0, socket_connect_timeout=1.0)


def wait_for(check: Callable[[], bool], what: str, deadline_s: float = READY_DEADLINE_S) -> None:
    """Poll `check` until it holds; a server still starting or restarting counts as not yet."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError, RedisServerError):
            pass  # not there yet (a server restarting, sentinels still disagreeing)
        time.sleep(_POLL_S)
    raise RedisServerError(f"timed out after {deadline_s:.0f} s waiting for {what}")


def replicas_of(master: RedisServer, servers: list[RedisServer]) -> list[RedisServer]:
    """The running servers replicating `master`, as it sees them."""
    with admin(master.port) as client:
        replication = client.info("replication")
    ports = {
        int(v["port"])
        for k, v in replication.items()
        if k.startswith("slave") and isinstance(v, dict)
    }
    return [s for s in servers if s.port in ports and s.running]


def cut_replication(replicas: list[RedisServer]) -> None:
    """Make `replicas` lose their master and fail to get back (bad credentials on the
    handshake): writes their master acknowledges from now on reach none of them, so a replica
    promoted after the master dies lacks them (what asynchronous replication loses when a
    master dies under load, made certain). See `restore_replication`."""
    for replica in replicas:
        with admin(replica.port) as client:
            client.config_set("masteruser", "swarm-cut-off")
            client.config_set("masterauth", "no-such-password")
            client.execute_command("CLIENT", "KILL", "TYPE", "master")


def restore_replication(replicas: list[RedisServer]) -> None:
    for replica in replicas:
        if replica.running:
            with admin(replica.port) as client:
                client.config_set("masteruser", "")
                client.config_set("masterauth", "")


def swarm_slot(swarm: str) -> int:
    """The Cluster hash slot of every key of `swarm` (they share the `{NAME}` hash tag)."""
    return int(key_slot(f"swarm:{{{swarm}}}:log".encode()))


class DevCluster:
    """`masters` masters with `replicas` replicas each; `node_timeout_ms` sets how soon a dead
    master is failed over (Redis' default is 15 s; tests use about a second)."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-cluster-"))
        self.replicas = replicas
        self.servers: list[RedisServer] = []
        for i in range((1 + replicas) * masters):
            workdir = self.dir / f"node{i}"
            workdir.mkdir()
            self.servers.append(
                RedisServer(
                    workdir=workdir,
                    extra_args=(
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(workdir / "nodes.conf"),
                        "--cluster-node-timeout", str(node_timeout_ms),
                        # Its own bus port: the default (port + 10000) may be taken or too high.
                        "--cluster-port", str(free_port()),
                        # A replica cut off for a while may still take over: never lose a shard.
                        "--cluster-replica-validity-factor", "0",
                        *FAST_SYNC,
                    ),
                )
            )

    def url(self, i: int = 0) -> str:
        return self.servers[i].url

    def start(self) -> DevCluster:
        for server in self.servers:
            server.start()
        addresses = [f"{HOST}:{s.port}" for s in self.servers]
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerError("redis-cli not found on PATH: run scripts/setup.sh")
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RedisServerError(f"redis-cli --cluster create failed: {done.stdout[-500:]}")
        self.wait_healthy()
        return self

    def running(self) -> list[RedisServer]:
        return [s for s in self.servers if s.running]

    def node_id(self, server: RedisServer) -> str:
        with admin(server.port) as client:
            return bytes(client.execute_command("CLUSTER", "MYID")).decode()

    def _slots(self, server: RedisServer) -> dict[int, int]:
        """slot range start -> master port, as `server` sees the cluster."""
        with admin(server.port) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        return {int(r[0]): int(r[2][1]) for r in ranges}

    def masters(self) -> list[RedisServer]:
        """Running servers that are masters owning slots, as the cluster sees it."""
        ports = set(self._slots(self.running()[0]).values())
        return [s for s in self.running() if s.port in ports]

    def master_of_slot(self, slot: int) -> RedisServer:
        with admin(self.running()[0].port) as client:
            for r in client.execute_command("CLUSTER", "SLOTS"):
                if int(r[0]) <= slot <= int(r[1]):
                    port = int(r[2][1])
                    return next(s for s in self.servers if s.port == port)
        raise RedisServerError(f"no master serves slot {slot}")

    def master_of(self, swarm: str) -> RedisServer:
        return self.master_of_slot(swarm_slot(swarm))

    def swarms_on_each_master(self, prefix: str) -> list[str]:
        """One swarm name per master, each hashed to a slot that master owns."""
        wanted = {s.port: "" for s in self.masters()}
        i = 0
        while not all(wanted.values()):
            name = f"{prefix}-{i}"
            owner = self.master_of(name).port
            if not wanted[owner]:
                wanted[owner] = name
            i += 1
        return list(wanted.values())

    def wait_healthy(self, deadline_s: float = READY_DEADLINE_S) -> None:
        """Every running node says cluster_state:ok, all agree on who owns what, and each master
        has its replicas connected (so a kill can be failed over)."""

        def healthy() -> bool:
            running = self.running()
            views = []
            for server in running:
                with admin(server.port) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    if b"cluster_state:ok" not in info:
                        return False
                views.append(self._slots(server))
            if any(view != views[0] for view in views):
                return False
            masters = set(views[0].values())
            replicas_up = 0
            for port in masters:
                with admin(port) as client:
                    replication = client.info("replication")
                replicas_up += sum(
                    1 for k, v in replication.items()
                    if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
                )  # fmt: skip
            return replicas_up >= min(len(running) - len(masters), self.replicas * len(masters))

        wait_for(healthy, "the cluster to be healthy", deadline_s)

    def wait_state(self, state: str) -> None:
        """Wait until every running node says cluster_state:`state` (ok or fail)."""

        def reached() -> bool:
            for server in self.running():
                with admin(server.port) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                if f"cluster_state:{state}".encode() not in info:
                    return False
            return True

        wait_for(reached, f"cluster_state:{state} on every node")

    def kill_master_of(self, swarm: str) -> RedisServer:
        """SIGKILL the master owning `swarm`'s slot; returns it (dead). See `wait_failover`."""
        master = self.master_of(swarm)
        master.kill()
        return master

    def wait_failover(self, swarm: str, dead: RedisServer) -> RedisServer:
        """Wait until a replica of `dead` was promoted and serves `swarm`'s slot."""

        def promoted() -> bool:
            owner = self.master_of(swarm)
            if owner is dead:
                return False
            with admin(owner.port) as client:
                return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")

        wait_for(promoted, f"a replica to take over the slot of {swarm}")
        return self.master_of(swarm)

    def heal(self) -> None:
        """Restart every dead node (it rejoins as a replica) and wait for a healthy cluster."""
        for server in self.servers:
            if not server.running:
                server.start()
        self.wait_healthy()

    def move_slot(self, slot: int, target: RedisServer, batch: int = 100) -> None:
        """Migrate `slot` with its keys to `target`, as `redis-cli --cluster reshard` does."""
        source = self.master_of_slot(slot)
        if source is target:
            return
        source_id, target_id = self.node_id(source), self.node_id(target)
        with admin(source.port) as src, admin(target.port) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for other in self.masters():
            if other not in (source, target):
                with admin(other.port) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_healthy()

    def close(self) -> None:
        for server in self.servers:
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "DevCluster",
    "cut_replication",
    "free_port",
    "replicas_of",
    "restore_replication",
    "swarm_slot",
]

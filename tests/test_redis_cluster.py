"""Daemons on a real Redis Cluster (3 masters, 3 replicas, made by `redis-cli --cluster create`).

What a team on a cluster depends on: any node's address works, swarms spread over the masters,
edits converge, and no edit is lost when the master of a swarm's slot dies mid-burst or when the
slot moves to another master while agents write.
"""

from __future__ import annotations

import json
import re
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import redis
from daemon_harness import (
    Agent,
    assert_each_line_once,
    awaitable_bursts,
    converged,
    daemon_env,
    describe,
    in_thread,
    merged_writes,
    run_cli,
    wait_until_async,
)
from topology_harness import Bursts, daemons, late_joiner_rebuilds, runtime_of

from swarm.devtools.devcluster import (
    DevCluster,
    cut_replication,
    replicas_of,
    restore_replication,
    swarm_slot,
)
from swarm.devtools.devredis import HOST, RedisServer

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def shard_subscribers(server: RedisServer, swarm: str) -> int:
    """How many clients SSUBSCRIBE'd to the swarm's channel on `server`."""
    with redis.Redis(host=HOST, port=server.port) as client:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", f"swarm:{{{swarm}}}:bus")
    return int(reply[1])


async def test_swarms_on_every_master_converge_with_nodes_entering_through_different_nodes(
    tmp_path: Path, redis_cluster: DevCluster
) -> None:
    swarms = redis_cluster.swarms_on_each_master("spread")
    masters = {redis_cluster.master_of(s).port for s in swarms}
    assert len(masters) == 3, "one swarm per master"
    servers = redis_cluster.servers
    async with AsyncExitStack() as stack:
        groups = []
        for i, swarm in enumerate(swarms):
            # Every daemon enters through a node of its own, replicas included.
            urls = [servers[(2 * i) % 6].url, servers[(2 * i + 1) % 6].url]
            group = daemons(tmp_path, swarm, urls, ["a", "b"])
            groups.append(await stack.enter_async_context(group))
        for group in groups:
            for daemon in group:
                assert runtime_of(daemon).transport.topology == "cluster"
        agents = [
            Agent(d.dir, f"{d.settings.swarm}-{d.settings.node}", seed=i, in_place=0.0)
            for i, d in enumerate(d for group in groups for d in group)
        ]
        await awaitable_bursts(agents, seconds=2.0)
        for group, pair in zip(groups, zip(agents[::2], agents[1::2], strict=True), strict=True):
            expected = merged_writes(pair)
            folders = [d.dir for d in group]
            await wait_until_async(
                lambda folders=folders, expected=expected: converged(folders, expected),
                f"swarm {group[0].settings.swarm} converged",
                explain=lambda folders=folders, expected=expected: describe(folders, expected),
            )
            assert_each_line_once(folders, expected)
        # `swarm status` enters through any node too, a replica here.
        done = await in_thread(
            run_cli, "status", "--swarm", swarms[0], "--redis-url", servers[5].url, "--json",
            "--wait", "20", timeout=40,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["converged"]
    for swarm in swarms:  # each swarm's keys, and only they, on the master of its slot
        master = redis_cluster.master_of(swarm)
        with redis.Redis(host=HOST, port=master.port) as client:
            assert client.exists(f"swarm:{{{swarm}}}:log", f"swarm:{{{swarm}}}:nodes") == 2


async def test_master_killed_mid_burst_loses_no_edit(
    tmp_path: Path, redis_cluster: DevCluster
) -> None:
    swarm = "failover"
    master = redis_cluster.master_of(swarm)
    others = [s.url for s in redis_cluster.servers if s is not master]
    async with daemons(tmp_path, swarm, others[:2], ["a", "b"]) as group:
        agents = [Agent(d.dir, d.settings.node or "", seed=i, in_place=0.0) for i, d in
                  enumerate(group)]  # fmt: skip
        replicators = [runtime_of(d).replicator for d in group]
        bursts = Bursts(agents, replicators)
        await bursts.until_published(20, "the burst under way")
        # The replica stops getting writes the master still acknowledges, then the master dies:
        # the replica promoted lacks entries the daemons had confirmed.
        replicas = replicas_of(master, redis_cluster.servers)
        cut_replication(replicas)
        await bursts.until_published(10, "more edits acknowledged by the master alone")
        master.kill()
        restore_replication(replicas)
        await in_thread(redis_cluster.wait_failover, swarm, master)
        await bursts.until_published(10, "edits published to the new master")
        await bursts.stop()
        expected = merged_writes(agents)
        folders = [d.dir for d in group]
        await wait_until_async(
            lambda: converged(folders, expected) and all(
                r.node.store.outbox_depth() == 0 for r in replicators
            ),
            "both nodes hold every edit after the failover",
            explain=lambda: describe(folders, expected),
        )
        assert_each_line_once(folders, expected)
        assert any(r.counters.rollbacks for r in replicators), (
            "the promoted replica lacked acknowledged entries and a daemon noticed"
        )
        await wait_until_async(
            lambda: all(r.node.store.outbox_depth() == 0 and r.caught_up for r in replicators),
            "both nodes re-sent what the new master lacked",
        )
        reference = group[0].dir
    await late_joiner_rebuilds(tmp_path, swarm, others[2], reference)
    assert_each_line_once([tmp_path / swarm / "late" / "mem"], expected)


async def test_slot_resharded_to_another_master_while_edits_flow(
    tmp_path: Path, redis_cluster: DevCluster
) -> None:
    swarm = "reshard"
    source = redis_cluster.master_of(swarm)
    target = next(m for m in redis_cluster.masters() if m is not source)
    urls = [redis_cluster.servers[0].url, redis_cluster.servers[5].url]
    async with daemons(tmp_path, swarm, urls, ["a", "b"]) as group:
        await wait_until_async(lambda: shard_subscribers(source, swarm) == 2, "both subscribed")
        agents = [Agent(d.dir, d.settings.node or "", seed=i, in_place=0.0) for i, d in
                  enumerate(group)]  # fmt: skip
        replicators = [runtime_of(d).replicator for d in group]
        bursts = Bursts(agents, replicators)
        await bursts.until_published(20, "the burst under way")
        await in_thread(redis_cluster.move_slot, swarm_slot(swarm), target)
        assert redis_cluster.master_of(swarm) is target
        # Live updates follow the slot: both daemons subscribe again on its new master.
        await wait_until_async(
            lambda: shard_subscribers(target, swarm) == 2, "both subscribed on the new master"
        )
        await bursts.until_published(10, "edits published to the new master")
        await bursts.stop()
        expected = merged_writes(agents)
        folders = [d.dir for d in group]
        await wait_until_async(
            lambda: converged(folders, expected),
            "both nodes hold every edit made across the reshard",
            explain=lambda: describe(folders, expected),
        )
        assert_each_line_once(folders, expected)
        assert shard_subscribers(source, swarm) == 0


def test_status_says_the_cluster_is_down_when_a_shard_has_no_master(
    redis_cluster: DevCluster,
) -> None:
    master = redis_cluster.master_of("down")
    for server in [*replicas_of(master, redis_cluster.servers), master]:
        server.kill()
    redis_cluster.wait_state("fail")  # the others noticed: a slot has no master left
    entry = next(s for s in redis_cluster.servers if s.running)
    done = run_cli("status", "--swarm", "down", "--redis-url", entry.url, timeout=40)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "Redis Cluster" in done.stderr and "is down" in done.stderr, done.stderr


def documented_acl(doc: str, swarm: str) -> list[str]:
    """The `ACL SETUSER` lines of a doc, for `swarm`: the test proves the documentation."""
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    lines = re.findall(r"^ACL SETUSER .*$", text, flags=re.MULTILINE)
    return [line.replace("NAME", swarm).replace("CHANGE-ME", "s3cret") for line in lines]


async def test_the_documented_cluster_acl_is_enough(
    tmp_path: Path, redis_cluster: DevCluster
) -> None:
    swarm = "acl"
    lines = documented_acl("security.md", swarm) + documented_acl("deploy.md", swarm)
    for server in redis_cluster.servers:
        with redis.Redis(host=HOST, port=server.port) as admin:
            admin.execute_command("ACL", "LOG", "RESET")
            for line in lines:
                admin.execute_command(*line.split())
    urls = [redis_cluster.servers[1].url, redis_cluster.servers[4].url]
    access = {"redis_username": f"swarm-{swarm}", "redis_password": "s3cret"}
    async with daemons(tmp_path, swarm, urls, ["a", "b"], **access) as (a, b):
        assert runtime_of(a).transport.topology == "cluster"
        agent = Agent(a.dir, "a", in_place=0.0)
        for _ in range(5):
            await in_thread(agent.append, "MEMORY.md")
        await wait_until_async(
            lambda: converged([a.dir, b.dir], agent.written), "synced as the ACL user"
        )
        heartbeats = runtime_of(b).replicator.heartbeats
        await wait_until_async(lambda: bool(heartbeats.peers), "presence")
    denied = []
    for server in redis_cluster.servers:
        with redis.Redis(host=HOST, port=server.port) as admin:
            denied += [e for e in admin.acl_log() if e.get("username") == f"swarm-{swarm}"]
    assert denied == [], f"the documented ACL refused the swarm something: {denied}"

    # swarm doctor checks a cluster user against the same list: this one may, one without the
    # cluster additions may not.
    lacking = documented_acl("security.md", swarm)[0].replace(f"swarm-{swarm}", "lacking", 1)
    for server in redis_cluster.servers:
        with redis.Redis(host=HOST, port=server.port) as admin:
            admin.execute_command(*lacking.split())
    for user, verdict in ((f"swarm-{swarm}", "ok    acl:"), ("lacking", "FAIL  acl:")):
        env = daemon_env({"SWARM_REDIS_USERNAME": user, "SWARM_REDIS_PASSWORD": "s3cret"})
        done = await in_thread(
            run_cli, "doctor", "--dir", str(tmp_path), "--swarm", swarm,
            "--redis-url", urls[0], env=env, timeout=40,
        )  # fmt: skip
        line = next(x for x in done.stdout.splitlines() if " acl:" in x)
        assert line.startswith(verdict), done.stdout + done.stderr
    assert "spublish" in line and "ssubscribe" in line, line

"""Daemons on a Sentinel-watched Redis: a master, a replica and three sentinels, real servers.

What a team on Sentinel depends on: `redis+sentinel://` URLs work for the daemon and for
`swarm status`, a master killed mid-burst is followed to the promoted replica with no edit lost,
and a wrong URL says what is wrong in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    Agent,
    assert_each_line_once,
    converged,
    describe,
    in_thread,
    merged_writes,
    run_cli,
    wait_until_async,
)
from topology_harness import Bursts, daemons, late_joiner_rebuilds, runtime_of

from swarm.devtools.devcluster import cut_replication, restore_replication
from swarm.devtools.devsentinel import DevSentinel

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinel() -> Iterator[DevSentinel]:
    setup = DevSentinel(service="memory", replicas=1, sentinels=3)
    try:
        setup.start()
        yield setup
    finally:
        setup.close()


async def test_master_killed_mid_burst_is_followed_and_loses_no_edit(
    tmp_path: Path, sentinel: DevSentinel
) -> None:
    swarm = "team"
    # One node knows every sentinel, the other two of them: either is enough.
    urls = [sentinel.url(), sentinel.url(sentinels=2)]
    async with daemons(tmp_path, swarm, urls, ["a", "b"]) as group:
        assert all(runtime_of(d).transport.topology == "sentinel" for d in group)
        agents = [Agent(d.dir, d.settings.node or "", seed=i, in_place=0.0) for i, d in
                  enumerate(group)]  # fmt: skip
        replicators = [runtime_of(d).replicator for d in group]
        bursts = Bursts(agents, replicators)
        await bursts.until_published(20, "the burst under way")
        master = sentinel.current_master()
        cut_replication(sentinel.replicas)  # the replica now misses what the master confirms
        await bursts.until_published(10, "more edits acknowledged by the master alone")
        master.kill()
        restore_replication(sentinel.replicas)
        promoted = await in_thread(sentinel.wait_failover, master)
        assert promoted is not master
        await bursts.until_published(10, "edits published to the new master")
        await bursts.stop()
        expected = merged_writes(agents)
        folders = [d.dir for d in group]
        await wait_until_async(
            lambda: converged(folders, expected)
            and all(r.node.store.outbox_depth() == 0 and r.caught_up for r in replicators),
            "both nodes hold every edit after the failover",
            explain=lambda: describe(folders, expected),
        )
        assert_each_line_once(folders, expected)
        assert any(r.counters.rollbacks for r in replicators), (
            "the promoted replica lacked acknowledged entries and a daemon noticed"
        )
        done = await in_thread(
            run_cli, "status", "--swarm", swarm, "--redis-url", urls[1], "--json", "--wait", "20",
            timeout=40,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["converged"]
        reference = group[0].dir
    await late_joiner_rebuilds(tmp_path, swarm, urls[0], reference)

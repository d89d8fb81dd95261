"""Which Redis a URL names, and the optional WAIT for replicas (a real master + replica)."""

from __future__ import annotations

import subprocess

import pytest
from daemon_harness import in_thread, run_cli

from swarm.config import ConfigError, SwarmSettings, load_settings
from swarm.devtools.devcluster import FAST_SYNC, free_port
from swarm.devtools.devredis import HOST, RedisServer
from swarm.devtools.devsentinel import DevSentinel
from swarm.transport.redis_transport import RedisTransport
from swarm.transport.topology import SentinelTarget, node_url, parse_sentinel_url, where
from swarm.wire import Envelope, Kind


def test_sentinel_url_names_sentinels_service_database_and_the_masters_credentials() -> None:
    target = parse_sentinel_url("redis+sentinel://user:p%40ss@s1:26380,s2,[::1]:5000/mymaster/3")
    assert target == SentinelTarget(
        (("s1", 26380), ("s2", 26379), ("::1", 5000)), "mymaster", 3, "user", "p@ss"
    )
    assert parse_sentinel_url("redis+sentinel://s1:1/svc").db == 0
    assert where("redis+sentinel://s1:1,s2:2/svc") == "service svc of sentinels s1:1,s2:2"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "names the service after the hosts"),
        ("redis+sentinel://s1:x/svc", "bad sentinel port 'x'"),
        ("redis+sentinel://s1:99999/svc", "bad sentinel port 99999"),
        ("redis+sentinel://s1/svc/zero", "bad database number 'zero'"),
        ("redis+sentinel:///svc", "at least one HOST:PORT"),
    ],
)
def test_a_bad_sentinel_url_is_one_line_naming_the_setting(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(SwarmSettings, {"swarm": "team", "redis_url": url}, environ={})
    message = str(raised.value)
    assert says in message and "redis_url" in message and "\n" not in message


def test_a_cluster_node_url_keeps_scheme_credentials_and_options() -> None:
    url = "rediss://u:p@seed:7000/0?ssl_cert_reqs=none"
    assert node_url(url, "10.0.0.2", 7003) == "rediss://u:p@10.0.0.2:7003/0?ssl_cert_reqs=none"


async def test_wait_counts_publishes_no_replica_confirmed_and_never_fails_them() -> None:
    master = RedisServer(extra_args=FAST_SYNC)
    replica = RedisServer(extra_args=("--replicaof", HOST, str(master.port)))
    # WAIT returns as soon as the replica has it: a long limit costs nothing while it is there.
    patient = RedisTransport(master.url, "team", "a", wait_replicas=1, wait_timeout_ms=20_000)
    brief = RedisTransport(master.url, "team", "b", wait_replicas=1, wait_timeout_ms=100)
    try:
        master.start()
        replica.start()
        env = Envelope("team", "MEMORY.md", "a", Kind.UPDATE, b"x")
        await patient.publish(env)
        assert patient.unreplicated == 0, "the replica confirmed it"
        replica.kill()
        _prev, stream_id = await brief.publish_chained(env)
        assert brief.unreplicated == 1, "no replica confirmed it"
        assert (await brief.log_info())["last_id"] == stream_id, "and it is stored all the same"
    finally:
        await patient.close()
        await brief.close()
        replica.close()
        master.close()


def assert_one_line_error(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert says in done.stderr, done.stderr


async def test_sentinel_urls_reach_the_master_or_say_what_is_wrong() -> None:
    with DevSentinel(service="svc", replicas=0, sentinels=1) as sentinel:
        transport = RedisTransport(sentinel.url(), "team", "a")
        try:
            await transport.publish(Envelope("team", "MEMORY.md", "a", Kind.UPDATE, b"x"))
            assert transport.topology == "sentinel"
            with sentinel.master.client() as client:
                assert client.xlen("swarm:{team}:log") == 1
        finally:
            await transport.close()
        unknown = sentinel.url().replace("/svc/", "/nope/")
        assert_one_line_error(
            await in_thread(run_cli, "status", "--swarm", "team", "--redis-url", unknown),
            "unknown Sentinel service name 'nope'",
        )
    nobody = f"redis+sentinel://{HOST}:{free_port()},{HOST}:{free_port()}/svc"
    assert_one_line_error(
        await in_thread(run_cli, "status", "--swarm", "team", "--redis-url", nobody),
        "Sentinel unreachable",
    )

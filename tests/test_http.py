"""The sidecar's HTTP side: liveness, readiness that follows Redis, this node's status, and
Prometheus metrics that move with traffic."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from daemon_harness import DaemonGroup, DaemonProcess, wait_until
from prometheus_client.parser import text_string_to_metric_families

from swarm.devtools.devredis import RedisServer, free_port
from swarm.http import HttpServer

if TYPE_CHECKING:
    from swarm.runtime import Runtime

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.2", "SWARM_OFFLINE_AFTER": "2"}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def metrics(port: int) -> dict[str, float]:
    """sample name (with labels for histogram buckets left out) -> value."""
    status, text = get(port, "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" not in sample.labels:
                samples[sample.name] = sample.value
    return samples


def with_http(group: DaemonGroup, node: str) -> tuple[DaemonProcess, int]:
    port = free_port()
    daemon = group.add(node, env=FAST, extra_args=["--http", f"127.0.0.1:{port}"])
    return daemon, port


# -- the protocol ------------------------------------------------------------------------------


async def request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    return reply


async def test_requests_are_answered_and_bad_ones_refused() -> None:
    # these answers do not depend on the runtime: a bare stand-in is enough. HTTP/1.1 requests
    # name their Host (RFC 9112 3.2: a server answers 400 without one).
    server = HttpServer(cast("Runtime", SimpleNamespace()))
    await server.start("127.0.0.1", 0)
    try:
        ok = await request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nok\n")
        head = await request(server.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        assert b"Content-Length: 3\r\n" in head
        missing = await request(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404")
        post = await request(server.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405")
        garbage = await request(server.port, b"\x16\x03\x01 hello\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        huge = await request(server.port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 400")
    finally:
        await server.close()


# -- real daemons --------------------------------------------------------------------------------


def test_status_and_metrics_move_with_traffic(redis_server: RedisServer, tmp_path: Path) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, a_port = with_http(group, "a")
        b, b_port = with_http(group, "b")
        for daemon in (a.start(), b.start()):
            daemon.wait_ready()
        wait_until(lambda: get(a_port, "/readyz")[0] == get(b_port, "/readyz")[0] == 200, "ready")
        before_a, before_b = metrics(a_port), metrics(b_port)
        for name in (
            "swarm_updates_out_total",
            "swarm_updates_in_total",
            "swarm_updates_out_bytes_total",
            "swarm_updates_in_bytes_total",
            "swarm_apply_seconds_count",
            "swarm_render_seconds_count",
            "swarm_lag_operations",
            "swarm_outbox_depth",
            "swarm_redis_reconnects_total",
            "swarm_rejected_messages_total",
            "swarm_files_synced",
            "swarm_render_errors_total",
            "swarm_ingest_errors_total",
        ):
            assert name in before_a, name
        assert before_a["swarm_ready"] == 1

        (a.dir / "MEMORY.md").write_text("# memory\n- from a\n")
        wait_until(lambda: (b.dir / "MEMORY.md").exists(), "MEMORY.md rendered on b", 15)

        def moved() -> bool:
            after_a, after_b = metrics(a_port), metrics(b_port)
            return (
                after_a["swarm_updates_out_total"] > before_a["swarm_updates_out_total"]
                and after_a["swarm_updates_out_bytes_total"] > 0
                and after_b["swarm_updates_in_total"] > before_b["swarm_updates_in_total"]
                and after_b["swarm_apply_seconds_count"] > before_b["swarm_apply_seconds_count"]
                and after_b["swarm_render_seconds_count"] > before_b["swarm_render_seconds_count"]
                and after_a["swarm_files_synced"] == after_b["swarm_files_synced"] == 1
            )

        wait_until(moved, "metrics follow the update from a to b", 15)

        code, body = get(b_port, "/status")
        assert code == 200
        status: dict[str, Any] = json.loads(body)
        assert (status["node"], status["swarm"], status["ready"]) == ("b", "team", True)
        assert set(status["files"]) == {"MEMORY.md"}
        assert status["counters"]["replication"]["received"] >= 1
        assert status["redis"]["connected"] is True


def test_readyz_follows_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, port = with_http(group, "a")
        a.start().wait_ready()
        wait_until(lambda: get(port, "/readyz") == (200, "ready\n"), "ready")

        redis_server.stop()
        wait_until(lambda: get(port, "/readyz")[0] == 503, "not ready without Redis", 15)
        code, reason = get(port, "/readyz")
        assert code == 503 and "Redis unreachable" in reason
        assert get(port, "/healthz")[0] == 200  # alive all along: no restart wanted
        assert metrics(port)["swarm_ready"] == 0

        redis_server.start()
        wait_until(lambda: get(port, "/readyz")[0] == 200, "ready again with Redis", 20)
        assert metrics(port)["swarm_redis_reconnects_total"] >= 1

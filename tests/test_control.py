"""The daemon's control socket, with the daemon in the test's event loop: an edit is on disk when
the answer comes, bad requests get one-line refusals, and the socket goes away with the daemon."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import pytest
from daemon_harness import InProcessDaemon, daemon_settings, in_thread

from swarm.control_client import ControlClient, ControlError, DaemonUnavailable, socket_path
from swarm.devtools.devredis import RedisServer


def daemon(tmp_path: Path, redis_server: RedisServer, **extra: object) -> InProcessDaemon:
    folder = tmp_path / "memory-folder"
    folder.mkdir()
    (folder / "MEMORY.md").write_text("# Memory\n\n## Decisions\n- first\n")
    return InProcessDaemon(
        daemon_settings(folder, tmp_path / "state", "a", redis_server.url, **extra)
    )


async def test_an_edit_is_on_disk_when_the_daemon_answers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with daemon(tmp_path, redis_server) as running:
        assert running.runtime is not None
        running.runtime.node.hold_renders(60)  # the render loop stays out of it
        client = ControlClient(running.settings.resolved_state_dir)
        answer = await client.post(
            "/v1/append", {"path": "MEMORY.md", "text": "- chose Postgres", "section": "Decisions"}
        )
        assert answer["changed"] is True and answer["line"] == 5
        text = await in_thread((running.dir / "MEMORY.md").read_text)
        assert text == "# Memory\n\n## Decisions\n- first\n- chose Postgres\n"
        # No peer online: delivered once the update is in Redis.
        state = await client.post("/v1/wait", {**answer["write"], "timeout": 10})
        assert state["delivered"] is True and state["in_redis"] is True and state["peers"] == []


async def test_bad_requests_are_refused_in_one_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with daemon(tmp_path, redis_server, max_file_bytes=64) as running:
        await in_thread((running.dir / "big.md").write_text, "x" * 100 + "\n")
        client = ControlClient(running.settings.resolved_state_dir)
        cases = [
            ("/v1/append", {"path": "MEMORY.md"}, "'text' must be a string"),
            ("/v1/append", {"path": "/etc/x.md", "text": "a"}, "is absolute"),
            ("/v1/replace", {"path": "MEMORY.md", "old": "- none", "new": "b"}, "no line reads"),
            ("/v1/wait", {"path": "MEMORY.md", "sv": "%%", "timeout": 1}, "base64 state vector"),
        ]
        for route, body, message in cases:
            with pytest.raises(ControlError, match=message):
                await client.post(route, body)
        # A file the node does not sync (too large here) is not edited behind its back.
        await running.runtime.node.ingest("big.md")  # type: ignore[union-attr]
        with pytest.raises(ControlError, match=r"big\.md is not synced: larger than"):
            await client.post("/v1/append", {"path": "big.md", "text": "- a"})
        state = await client.post(
            "/v1/wait",
            {"path": "MEMORY.md", "sv": base64.b64encode(b"\x00").decode(), "timeout": 0},
        )
        assert state["delivered"] is True


async def test_the_socket_goes_away_with_the_daemon(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    running = await daemon(tmp_path, redis_server).start()
    path = socket_path(running.settings.resolved_state_dir)
    assert path.exists()
    info = await ControlClient(running.settings.resolved_state_dir).get("/v1/info")
    assert info["node"] == "a" and info["swarm"] == "team"
    await running.stop()
    assert not path.exists()
    with pytest.raises(DaemonUnavailable):
        await ControlClient(running.settings.resolved_state_dir).get("/v1/info")


async def test_a_state_folder_path_too_long_for_a_socket_address_still_works(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    async with daemon(deep, redis_server) as running:
        assert len(str(socket_path(running.settings.resolved_state_dir))) > 108
        answer = await ControlClient(running.settings.resolved_state_dir).post(
            "/v1/append", {"path": "MEMORY.md", "text": "- deep"}
        )
        assert answer["synced"] is True


async def test_the_control_server_leaves_the_daemons_signal_handlers_alone(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """SIGTERM and SIGINT are the daemon's (graceful flush, a second signal exits at once):
    uvicorn must not put its own handlers in their place while it serves."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    async with daemon(tmp_path, redis_server) as running:
        await ControlClient(running.settings.resolved_state_dir).get("/v1/info")  # it serves
        assert {signum: signal.getsignal(signum) for signum in before} == before


async def test_a_file_private_by_the_daemons_settings_is_edited_but_never_sent(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The daemon decides with its own private globs, whatever the caller's settings said."""
    extra = {"private": ("memory/private/", "vault.md")}
    async with daemon(tmp_path, redis_server, **extra) as running:
        runtime = running.runtime
        assert runtime is not None
        client = ControlClient(running.settings.resolved_state_dir)
        answer = await client.post("/v1/append", {"path": "vault.md", "text": "- 4711"})
        assert answer["synced"] is False and "write" not in answer
        assert await in_thread((running.dir / "vault.md").read_text) == "- 4711\n"
        assert "vault.md" not in runtime.node.docs
        # (the outbox may be flushing MEMORY.md's import meanwhile: its depth proves nothing)
        assert all(entry.path != "vault.md" for entry in runtime.store.outbox())
        assert "vault.md" not in runtime.store.paths()

"""Faults a swarm must survive with nothing lost: Redis restarting (data kept or wiped), a dropped
pub/sub message, a daemon killed mid-burst.

Agents here write atomically: these tests are about Redis and process faults, and in-place writes
have their own test (see test_in_place_writer_slower_than_the_quiet_window_loses_nothing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import (
    Agent,
    DaemonGroup,
    InProcessDaemon,
    assert_each_line_once,
    assert_late_joiner_gets_everything,
    converged,
    daemon_settings,
    describe,
    holds_all,
    in_thread,
    merged_writes,
    read_tree,
    wait_until,
    wait_until_async,
    write_file,
)

from swarm.devtools.devredis import RedisServer
from swarm.runtime import Runtime
from swarm.transport.base import Message
from swarm.wire import Kind

pytestmark = pytest.mark.slow


def burst_in_background(agents: list[Agent], seconds: float) -> Callable[[], None]:
    """Start the agents' bursts; returns a function that waits for them to finish."""
    threads = [
        threading.Thread(target=agent.burst, args=(seconds,), daemon=True) for agent in agents
    ]
    for thread in threads:
        thread.start()

    def join() -> None:
        for thread in threads:
            thread.join(seconds + 15)
            assert not thread.is_alive()

    return join


@pytest.mark.parametrize("wipe", [False, True], ids=["data-kept", "data-wiped"])
def test_redis_restart_mid_burst_loses_nothing(
    tmp_path: Path, redis_server_factory: Callable[..., RedisServer], wipe: bool
) -> None:
    server = redis_server_factory(persistence=True)
    with DaemonGroup(tmp_path, server.url) as group:
        a, b = group.start_ready("a", "b")
        agents = [Agent(a.dir, "a", seed=1, in_place=0.0), Agent(b.dir, "b", seed=2, in_place=0.0)]
        join = burst_in_background(agents, seconds=3.0)
        wait_until(lambda: sum(len(v) for v in merged_writes(agents).values()) >= 20, "burst on")
        server.restart(wipe=wipe)
        join()

        expected = merged_writes(agents)
        wait_until(
            lambda: converged(group.folders, expected),
            "both nodes hold every line after Redis came back",
            explain=lambda: describe(group.folders, expected) + "\n" + group.logs(),
        )
        assert_each_line_once(group.folders, expected)
        if not wipe:
            return
        # Redis came back empty: the nodes re-seeded it, so a brand-new node joining with no
        # peer online gets everything from Redis alone.
        wait_until(
            lambda: all("re-seeding" in d.current_log() for d in (a, b)),
            "both nodes noticed the wipe",
            explain=group.logs,
        )
        assert a.stop() == 0 and b.stop() == 0
        assert_late_joiner_gets_everything(
            group, a.dir, expected, "the node joining after the wipe has every file"
        )


class _DropsOneUpdate(InProcessDaemon):
    """Loses the next UPDATE pub/sub message once armed, as a dropped delivery would."""

    dropped: list[Message]
    armed: bool

    def _before_serve(self, runtime: Runtime) -> None:
        self.dropped, self.armed = [], False
        queue = runtime.transport._queue
        put = queue.put

        async def lossy_put(message: Message | None) -> None:
            if (
                self.armed
                and message is not None
                and message.envelope.kind is Kind.UPDATE
                and not self.dropped
            ):
                self.dropped.append(message)
                return
            await put(message)

        queue.put = lossy_put  # type: ignore[method-assign,assignment]


HEARTBEAT_S = 0.5


async def test_a_dropped_pubsub_message_heals_within_two_heartbeats_without_new_edits(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    folders = {name: tmp_path / name / "mem" for name in ("a", "b")}
    settings = {
        name: daemon_settings(
            folder, folder.parent / "state", name, redis_server.url, heartbeat_interval=HEARTBEAT_S
        )
        for name, folder in folders.items()
    }
    sender, receiver = InProcessDaemon(settings["a"]), _DropsOneUpdate(settings["b"])
    await sender.start()
    await receiver.start()
    try:
        await in_thread(write_file, folders["a"] / "MEMORY.md", "# Memory\n", atomic=True)
        await wait_until_async(
            lambda: read_tree(folders["b"]) == read_tree(folders["a"]), "the first edit arrives"
        )
        receiver.armed = True
        await in_thread(write_file, folders["a"] / "MEMORY.md", "# Memory\n- lost\n", atomic=True)
        await wait_until_async(lambda: bool(receiver.dropped), "the update was dropped")
        dropped_at = time.monotonic()
        await wait_until_async(
            lambda: "- lost" in read_tree(folders["b"]).get("MEMORY.md", ""),
            "b healed the dropped message from Redis",
            timeout=10,
        )
        healed_after = time.monotonic() - dropped_at
        assert healed_after <= 2 * HEARTBEAT_S + 0.3, f"healed after {healed_after:.2f} s"
    finally:
        await receiver.stop()
        await sender.stop()


def test_sigkill_mid_burst_loses_nothing_that_reached_the_disk(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        agent = Agent(a.dir, "a", seed=5, in_place=0.0)
        join = burst_in_background([agent], seconds=2.5)
        wait_until(lambda: sum(len(v) for v in agent.written.values()) >= 15, "burst under way")
        a.kill()  # the agent keeps writing while its sidecar is dead
        join()
        a.start().wait_ready()

        wait_until(
            lambda: converged([a.dir, b.dir], agent.written),
            "every line written before and after the kill reached b",
            explain=lambda: describe([a.dir, b.dir], agent.written) + "\n" + group.logs(),
        )
        assert_each_line_once([a.dir, b.dir], agent.written)


def test_in_place_writer_slower_than_the_quiet_window_loses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """An agent that truncates MEMORY.md and only writes it back 0.2 s later (a busy machine, a
    slow disk) while another node edits: the empty file in between must not erase lines."""
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        lines = [f"- fact {i}" for i in range(5)]
        write_file(a.dir / "MEMORY.md", "".join(f"{line}\n" for line in lines), atomic=True)
        wait_until(lambda: holds_all(b.dir, {"MEMORY.md": lines}), "b has the five facts")

        text = (a.dir / "MEMORY.md").read_text()
        with open(a.dir / "MEMORY.md", "w", encoding="utf-8") as handle:  # truncates now
            handle.flush()
            time.sleep(0.2)  # the writer's own slowness (the workload), not synchronisation
            Agent(b.dir, "b").append("MEMORY.md", "- from b while a was writing")
            handle.write(text + "- from a\n")
        expected = {"MEMORY.md": [*lines, "- from a", "- from b while a was writing"]}
        wait_until(
            lambda: converged([a.dir, b.dir], expected),
            "both nodes hold every line",
            explain=lambda: describe([a.dir, b.dir], expected) + "\n" + group.logs(),
        )
        assert_each_line_once([a.dir, b.dir], expected)

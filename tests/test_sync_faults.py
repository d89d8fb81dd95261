"""Faults a swarm must survive with nothing lost: Redis restarting (data kept or wiped), a dropped
pub/sub message, a daemon killed mid-burst.

Agents here write atomically: these tests are about Redis and process faults, and in-place writes
have their own test (see test_in_place_writer_slower_than_the_quiet_window_loses_nothing).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio
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
        await _first_edit_arrives(folders)
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


# Heartbeats (and the anti-entropy they carry) this slow cannot heal anything within a test:
# what heals below is the mechanism under test alone.
SLOW_HEARTBEAT = {"heartbeat_interval": 60.0, "offline_after": 600.0}
GAP_HEALS_WITHIN_S = 3.0  # the gap check waits 0.1 s, then one log read; a heartbeat is 60 s


async def _first_edit_arrives(folders: dict[str, Path]) -> None:
    """a writes MEMORY.md's first line and b holds the same files: the pair syncs."""
    await in_thread(write_file, folders["a"] / "MEMORY.md", "# Memory\n", atomic=True)
    await wait_until_async(
        lambda: read_tree(folders["b"]) == read_tree(folders["a"]), "the first edit arrives"
    )


def _in_process_pair(
    tmp_path: Path, url: str, receiver_class: type[InProcessDaemon], **extra: float
) -> tuple[dict[str, Path], InProcessDaemon, InProcessDaemon]:
    folders = {name: tmp_path / name / "mem" for name in ("a", "b")}
    settings = {
        name: daemon_settings(folder, folder.parent / "state", name, url, **extra)
        for name, folder in folders.items()
    }
    return folders, InProcessDaemon(settings["a"]), receiver_class(settings["b"])


async def test_a_broken_chain_of_log_ids_alone_triggers_a_log_read(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """b loses one of a's updates; a's next update names the lost one as its predecessor: that
    hole in the chain, not a heartbeat, makes b read the log and heal."""
    folders, sender, receiver = _in_process_pair(
        tmp_path, redis_server.url, _DropsOneUpdate, **SLOW_HEARTBEAT
    )
    assert isinstance(receiver, _DropsOneUpdate)
    await sender.start()
    await receiver.start()
    try:
        memory = folders["a"] / "MEMORY.md"
        await _first_edit_arrives(folders)
        receiver.armed = True
        await in_thread(write_file, memory, "# Memory\n- lost\n", atomic=True)
        await wait_until_async(lambda: bool(receiver.dropped), "the update was dropped")
        await in_thread(write_file, memory, "# Memory\n- lost\n- next\n", atomic=True)
        sent_at = time.monotonic()
        await wait_until_async(
            lambda: read_tree(folders["b"]).get("MEMORY.md") == "# Memory\n- lost\n- next\n",
            "b read the log over the hole and holds both lines",
            timeout=GAP_HEALS_WITHIN_S,
        )
        print(f"healed {time.monotonic() - sent_at:.2f} s after the next update was written")
    finally:
        await receiver.stop()
        await sender.stop()


class _HeldResubscribe(InProcessDaemon):
    """Its subscriber, once `hold` is set, waits for `release` before it subscribes again, so
    what is published meanwhile is lost to its pub/sub (as during any reconnect)."""

    hold: bool
    held: asyncio.Event
    release: asyncio.Event

    def _before_serve(self, runtime: Runtime) -> None:
        self.hold, self.held, self.release = False, asyncio.Event(), asyncio.Event()
        transport = runtime.transport
        subscribe = transport._subscribe  # type: ignore[attr-defined]

        async def held_subscribe() -> object:
            if self.hold:
                self.held.set()
                await self.release.wait()
            return await subscribe()

        transport._subscribe = held_subscribe  # type: ignore[attr-defined]


async def _kill_pubsub_clients(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await client.aclose()


async def test_a_reconnect_alone_triggers_a_log_read(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """b's subscription drops; a's update is published while b is not subscribed and nothing
    follows it: the gap marker of b's reconnect alone must make b read the log."""
    folders, sender, receiver = _in_process_pair(
        tmp_path, redis_server.url, _HeldResubscribe, **SLOW_HEARTBEAT
    )
    assert isinstance(receiver, _HeldResubscribe)
    await sender.start()
    await receiver.start()
    try:
        memory = folders["a"] / "MEMORY.md"
        await _first_edit_arrives(folders)
        receiver.hold = True
        await _kill_pubsub_clients(redis_server.url)
        await receiver.held.wait()
        assert sender.runtime is not None
        published = sender.runtime.replicator.counters.published
        await in_thread(write_file, memory, "# Memory\n- while b was away\n", atomic=True)
        await wait_until_async(
            lambda: sender.runtime is not None
            and sender.runtime.replicator.counters.published > published
            and sender.runtime.node.store.outbox_depth() == 0,
            "a published its update",
        )
        receiver.release.set()
        released_at = time.monotonic()
        await wait_until_async(
            lambda: "- while b was away" in read_tree(folders["b"]).get("MEMORY.md", ""),
            "b read the log after its reconnect",
            timeout=GAP_HEALS_WITHIN_S,
        )
        print(f"healed {time.monotonic() - released_at:.2f} s after b subscribed again")
    finally:
        await receiver.stop()
        await sender.stop()


async def test_a_missed_update_whose_writer_went_offline_still_arrives(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """b loses a's update and a goes offline (nobody can answer for it any more); b's own next
    write moves b past that entry in the log: its cursor must not skip the entry it never
    applied, the log still has it."""
    folders, sender, receiver = _in_process_pair(tmp_path, redis_server.url, _DropsOneUpdate)
    assert isinstance(receiver, _DropsOneUpdate)
    await sender.start()
    await receiver.start()
    try:
        await _first_edit_arrives(folders)
        receiver.armed = True
        await in_thread(write_file, folders["a"] / "MEMORY.md", "# Memory\n- missed\n", atomic=True)
        await wait_until_async(lambda: bool(receiver.dropped), "the update was dropped")
        await sender.stop()  # a is gone: only the log holds its update
        await in_thread(write_file, folders["b"] / "notes.md", "- b goes on\n", atomic=True)
        await wait_until_async(
            lambda: "- missed" in read_tree(folders["b"]).get("MEMORY.md", ""),
            "b applied the update of the writer that went offline",
            timeout=10,
        )
    finally:
        await receiver.stop()
        await sender.stop()

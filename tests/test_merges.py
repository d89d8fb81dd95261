"""Sidecars say what they merge: one INFO line per burst of remote changes written to a file,
and a bounded journal of recent merges for the status page."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from daemon_harness import DaemonGroup, wait_until, wait_until_async

from swarm.devtools.devredis import RedisServer
from swarm.merges import MergeJournal

BASE = "# memory\n- one\n- two\n"


async def test_a_burst_of_renders_is_one_entry_and_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = MergeJournal(burst_s=0.2)
    caplog.set_level(logging.INFO, logger="swarm.merges")
    journal.remote("MEMORY.md", ["cloud"])
    journal.rendered("MEMORY.md", BASE, BASE + "- three\n")
    journal.remote("MEMORY.md", ["local"])
    journal.rendered("MEMORY.md", BASE + "- three\n", "# memory\n- one\n- 2\n- three\n- four\n")
    await wait_until_async(lambda: bool(journal.recent), "the burst closed", 5)
    (merge,) = journal.recent
    assert (merge.added, merge.removed, merge.senders) == (3, 1, ("cloud", "local"))
    lines = [r.getMessage() for r in caplog.records if r.name == "swarm.merges"]
    assert lines == ["merged 3 lines and 1 removal from cloud, local into MEMORY.md"]
    assert journal.entries()[0]["text"] == lines[0]


async def test_only_renders_of_remote_changes_are_merges() -> None:
    journal = MergeJournal(burst_s=0.05)
    journal.rendered("MEMORY.md", BASE, BASE + "- mine\n")  # an edit made here: no sender
    journal.remote("SOUL.md", [])  # a snapshot read from Redis names no sender
    journal.rendered("SOUL.md", None, "# soul\n- calm\n")
    journal.remote("memory/old.md", ["cloud"])
    journal.rendered("memory/old.md", "- gone\n", None)
    await wait_until_async(lambda: len(journal.recent) == 2, "both bursts closed", 5)
    texts = sorted(entry["text"] for entry in journal.entries())
    assert texts == [
        "created SOUL.md with 2 lines from the swarm's snapshot",
        "deleted memory/old.md (deleted on cloud)",
    ]


async def test_the_journal_keeps_the_newest_entries_only() -> None:
    journal = MergeJournal(limit=3, burst_s=0.01)
    for i in range(5):
        journal.remote(f"f{i}.md", ["cloud"])
        journal.rendered(f"f{i}.md", "", f"- {i}\n")
    await wait_until_async(lambda: len(journal._open) == 0, "every burst closed", 5)
    assert [entry["path"] for entry in journal.entries()] == ["f4.md", "f3.md", "f2.md"]


@pytest.mark.slow
def test_a_sidecar_logs_what_it_merged_from_its_peer(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, b = group.start_ready("a", "b")
        (a.dir / "MEMORY.md").write_text(BASE)
        wait_until(lambda: (b.dir / "MEMORY.md").exists(), "MEMORY.md on b", 15, group.logs)
        wait_until(
            lambda: "created MEMORY.md with 3 lines from a" in b.current_log(),
            "b logs the new file",
            15,
            group.logs,
        )
        with (a.dir / "MEMORY.md").open("a") as handle:
            handle.write("- three\n- four\n")
        wait_until(
            lambda: "merged 2 lines from a into MEMORY.md" in b.current_log(),
            "b logs the merge",
            15,
            group.logs,
        )
        assert "merged" not in a.current_log(), "a wrote the lines itself: nothing merged there"

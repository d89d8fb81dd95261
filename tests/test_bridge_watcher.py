from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from daemon_harness import wait_until_async

from swarm.bridge.policy import PathPolicy
from swarm.bridge.watcher import FileEvent, FolderWatcher, scan

DEADLINE = 5.0


@dataclass
class Recorder:
    root: Path
    policy: PathPolicy
    batches: list[list[FileEvent]] = field(default_factory=list)
    hidden: set[str] = field(default_factory=set)

    def events(self) -> list[FileEvent]:
        return [event for batch in self.batches for event in batch if event.path not in self.hidden]

    def paths(self) -> set[str]:
        return {event.path for event in self.events()}

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        await wait_until_async(condition, what, DEADLINE, explain=lambda: f"got {self.batches}")

    async def wait_event(self, path: str, *, deleted: bool) -> None:
        await self.wait_for(lambda: FileEvent(path, deleted) in self.events(), f"{path} {deleted}")

    def clear(self) -> None:
        self.batches.clear()


BACKENDS = ["inotify", "poll"] if sys.platform.startswith("linux") else ["poll"]


@pytest.fixture(params=BACKENDS)
async def recorder(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Recorder]:
    root = tmp_path / "root"
    root.mkdir()
    policy = PathPolicy(root)
    rec = Recorder(root, policy)
    stop = asyncio.Event()

    async def collect() -> None:
        async for batch in FolderWatcher(root, policy, backend=request.param).events(stop):
            rec.batches.append(batch)

    task = asyncio.create_task(collect())
    # The OS watch starts inside the task: touch a probe until it is reported.
    probe = root / "probe.md"
    limit = time.monotonic() + DEADLINE
    while "probe.md" not in rec.paths():
        assert time.monotonic() < limit, "watcher never started"
        probe.write_text(str(time.monotonic_ns()), encoding="utf-8")
        await asyncio.sleep(0.02)
    probe.unlink()
    await rec.wait_event("probe.md", deleted=True)
    # The polling backend may still deliver a batch of the probe's earlier writes after its
    # deletion; the probe is this fixture's own file, so the tests never see it.
    rec.hidden.add("probe.md")
    rec.clear()
    yield rec
    stop.set()
    await asyncio.wait_for(task, DEADLINE)


async def test_create_modify_delete_in_root(recorder: Recorder) -> None:
    path = recorder.root / "MEMORY.md"
    path.write_text("one\n", encoding="utf-8")
    await recorder.wait_event("MEMORY.md", deleted=False)
    recorder.clear()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("two\n")
    await recorder.wait_event("MEMORY.md", deleted=False)
    recorder.clear()
    path.unlink()
    await recorder.wait_event("MEMORY.md", deleted=True)


async def test_batches_are_deduplicated(recorder: Recorder) -> None:
    path = recorder.root / "MEMORY.md"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(20):
            handle.write(f"line {i}\n")
            handle.flush()
    await recorder.wait_event("MEMORY.md", deleted=False)
    for batch in recorder.batches:
        assert len(batch) == len({event.path for event in batch})


async def test_rename_reports_old_deleted_and_new_changed(recorder: Recorder) -> None:
    (recorder.root / "draft.md").write_text("x\n", encoding="utf-8")
    await recorder.wait_event("draft.md", deleted=False)
    recorder.clear()
    os.rename(recorder.root / "draft.md", recorder.root / "final.md")
    await recorder.wait_event("draft.md", deleted=True)
    await recorder.wait_event("final.md", deleted=False)


async def test_files_in_folder_created_after_start(recorder: Recorder) -> None:
    folder = recorder.root / "memory"
    folder.mkdir()
    (folder / "2026-11-25.md").write_text("today\n", encoding="utf-8")
    await recorder.wait_event("memory/2026-11-25.md", deleted=False)
    nested = folder / "topics" / "deep"
    nested.mkdir(parents=True)
    (nested / "rust.md").write_text("🦀\n", encoding="utf-8")
    await recorder.wait_event("memory/topics/deep/rust.md", deleted=False)


async def test_folder_moved_in_and_out(recorder: Recorder, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "a.md").write_text("a\n", encoding="utf-8")
    (outside / "sub" / "b.md").write_text("b\n", encoding="utf-8")
    (outside / "skip.txt").write_text("no\n", encoding="utf-8")
    os.rename(outside, recorder.root / "memory")
    await recorder.wait_event("memory/a.md", deleted=False)
    await recorder.wait_event("memory/sub/b.md", deleted=False)
    recorder.clear()
    shutil.move(recorder.root / "memory", tmp_path / "moved-out")
    await recorder.wait_event("memory/a.md", deleted=True)
    await recorder.wait_event("memory/sub/b.md", deleted=True)
    assert "memory/skip.txt" not in recorder.paths()


async def test_ignored_files_are_not_reported(recorder: Recorder) -> None:
    root = recorder.root
    (root / ".swarm").mkdir()
    (root / ".swarm" / "state.db").write_bytes(b"sqlite")
    (root / "memory" / "runtime").mkdir(parents=True)
    (root / "memory" / "runtime" / "x.md").write_text("x\n", encoding="utf-8")
    (root / ".MEMORY.md.swp").write_bytes(b"swap")
    (root / "MEMORY.md~").write_text("backup\n", encoding="utf-8")
    (root / "notes.txt").write_text("notes\n", encoding="utf-8")
    (root / ".MEMORY.md.a1.swarm-tmp").write_text("tmp\n", encoding="utf-8")
    # A marker written last: once it is seen, the earlier writes have been processed too.
    (root / "marker.md").write_text("m\n", encoding="utf-8")
    await recorder.wait_event("marker.md", deleted=False)
    assert recorder.paths() == {"marker.md"}


async def test_swarmignore_change_reloads_policy_and_is_not_reported(recorder: Recorder) -> None:
    root = recorder.root
    (root / "scratch.md").write_text("s\n", encoding="utf-8")
    await recorder.wait_event("scratch.md", deleted=False)
    (root / ".swarmignore").write_text("scratch.md\n", encoding="utf-8")
    await recorder.wait_for(lambda: not recorder.policy.accepts("scratch.md"), "policy reload")
    recorder.clear()
    (root / "scratch.md").write_text("changed\n", encoding="utf-8")
    (root / "marker.md").write_text("m\n", encoding="utf-8")
    await recorder.wait_event("marker.md", deleted=False)
    assert recorder.paths() == {"marker.md"}
    # Un-ignoring reports the file that became visible.
    recorder.clear()
    (root / ".swarmignore").unlink()
    await recorder.wait_event("scratch.md", deleted=False)
    assert ".swarmignore" not in recorder.paths()


async def test_stops_when_stop_is_set(tmp_path: Path) -> None:
    stop = asyncio.Event()
    watcher = FolderWatcher(tmp_path, PathPolicy(tmp_path))

    async def drain() -> None:
        async for _ in watcher.events(stop):
            pass

    task = asyncio.create_task(drain())
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, DEADLINE)


def test_scan_lists_accepted_regular_files_sorted(tmp_path: Path) -> None:
    names = [
        "SOUL.md",
        "MEMORY.md",
        "memory/2026-11-25.md",
        "memory/runtime/x.md",
        ".swarm/state.md",
        "notes.txt",
        ".MEMORY.md.swp",
    ]
    for rel in names:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n", encoding="utf-8")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.md").write_text("s\n", encoding="utf-8")
    os.symlink(outside, tmp_path / "linked")
    assert scan(tmp_path, PathPolicy(tmp_path)) == [
        "MEMORY.md",
        "SOUL.md",
        "memory/2026-11-25.md",
    ]


# -- inotify: a file its writer closed is reported at once --------------------------------------

inotify_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux inotify")
_FOREVER_MS = 600_000  # a quiet time no test outlives: whatever is reported came from a close


@pytest.fixture
async def closing(tmp_path: Path) -> AsyncIterator[Recorder]:
    """An inotify watcher whose quiet time for files held open never ends within a test."""
    root = tmp_path / "root"
    root.mkdir()
    policy = PathPolicy(root)
    rec = Recorder(root, policy)
    stop = asyncio.Event()
    watcher = FolderWatcher(root, policy, debounce_ms=_FOREVER_MS, backend="inotify")

    async def collect() -> None:
        async for batch in watcher.events(stop):
            rec.batches.append(batch)

    task = asyncio.create_task(collect())
    limit = time.monotonic() + DEADLINE
    while "probe.md" not in rec.paths():
        assert time.monotonic() < limit, "watcher never started"
        (root / "probe.md").write_text(str(time.monotonic_ns()), encoding="utf-8")
        await asyncio.sleep(0.02)
    rec.hidden.add("probe.md")  # the fixture's own file: its late events are not the tests'
    rec.clear()
    yield rec
    stop.set()
    await asyncio.wait_for(task, DEADLINE)


@inotify_only
async def test_closed_file_is_reported_without_quiet_time(closing: Recorder) -> None:
    with open(closing.root / "MEMORY.md", "a", encoding="utf-8") as handle:
        handle.write("one\n")
    await closing.wait_event("MEMORY.md", deleted=False)


@inotify_only
async def test_file_held_open_waits_for_its_close(closing: Recorder) -> None:
    handle = open(closing.root / "MEMORY.md", "a", encoding="utf-8")  # noqa: SIM115
    try:
        handle.write("half of a rewrite\n")
        handle.flush()
        # Events arrive in order: once the marker's close is seen, the open file's write was too.
        (closing.root / "marker.md").write_text("m\n", encoding="utf-8")
        await closing.wait_event("marker.md", deleted=False)
        assert "MEMORY.md" not in closing.paths()
    finally:
        handle.close()
    await closing.wait_event("MEMORY.md", deleted=False)


@inotify_only
async def test_folder_renamed_inside_root_is_watched_under_its_new_name(closing: Recorder) -> None:
    (closing.root / "memory" / "sub").mkdir(parents=True)
    (closing.root / "memory" / "sub" / "a.md").write_text("a\n", encoding="utf-8")
    await closing.wait_event("memory/sub/a.md", deleted=False)
    os.rename(closing.root / "memory", closing.root / "notes")
    await closing.wait_event("memory/sub/a.md", deleted=True)
    await closing.wait_event("notes/sub/a.md", deleted=False)
    closing.clear()
    (closing.root / "notes" / "sub" / "b.md").write_text("b\n", encoding="utf-8")
    await closing.wait_event("notes/sub/b.md", deleted=False)
    assert all(not path.startswith("memory/") for path in closing.paths())


@inotify_only
async def test_root_removed_ends_the_watch_with_an_error(tmp_path: Path) -> None:
    from swarm.bridge.inotify_source import FolderGone

    root = tmp_path / "root"
    root.mkdir()
    stop = asyncio.Event()
    watcher = FolderWatcher(root, PathPolicy(root), backend="inotify")
    started = asyncio.Event()

    async def drain() -> None:
        async for batch in watcher.events(stop):
            if FileEvent("probe.md", False) in batch:
                started.set()

    task = asyncio.create_task(drain())
    limit = time.monotonic() + DEADLINE
    while not started.is_set():
        assert time.monotonic() < limit, "watcher never started"
        (root / "probe.md").write_text("p\n", encoding="utf-8")
        await asyncio.sleep(0.02)
    shutil.rmtree(root)
    with pytest.raises(FolderGone):
        await asyncio.wait_for(task, DEADLINE)


def test_overflow_reports_every_file_known_or_on_disk(tmp_path: Path) -> None:
    """inotify reports a queue overflow as the root itself: every file is looked at again."""
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "a.md").write_text("a\n", encoding="utf-8")
    watcher = FolderWatcher(tmp_path, PathPolicy(tmp_path))
    watcher._known = {"gone.md"}
    events = watcher._batch([str(watcher.root)])
    assert events == [FileEvent("gone.md", True), FileEvent("memory/a.md", False)]

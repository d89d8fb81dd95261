"""Defaults that fit an agent's workspace: nested repositories, dependencies, virtual
environments, build and cache folders and `.gitignore`d paths are skipped, the OpenClaw layout
always syncs, the watcher and the scan agree, and what is skipped is reported with its reason."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from daemon_harness import wait_until_async

from swarm.bridge import workspace
from swarm.bridge.policy import NOT_INCLUDED, PRIVATE, PathPolicy
from swarm.bridge.survey import SAMPLE_LIMIT, Survey
from swarm.bridge.watcher import FolderWatcher, scan

SYNCED = {
    "AGENTS.md", "SOUL.md", "MEMORY.md", "notes.md", "keep.draft.md", "sub/plan.md",
    "memory/2026-01-02.md", "memory/build/topic.md", "memory/drafts/today.md",
    "skills/search/SKILL.md",
}  # fmt: skip
SKIPPED = {
    "tools/scraper/README.md": workspace.NESTED_REPO,  # a clone: its own .git folder
    "tools/wt/README.md": workspace.NESTED_REPO,  # a worktree: a .git file
    "node_modules/left-pad/README.md": workspace.DEPENDENCIES,
    "skills/search/node_modules/x/README.md": workspace.DEPENDENCIES,
    ".venv/README.md": workspace.VIRTUAL_ENV,
    "py/env311/lib/README.md": workspace.VIRTUAL_ENV,  # any name: it holds pyvenv.cfg
    "build/notes.md": workspace.BUILD_OR_CACHE,
    "pkg.egg-info/PKG-INFO.md": workspace.BUILD_OR_CACHE,
    "src/__pycache__/x.md": workspace.BUILD_OR_CACHE,
    "drafts/idea.md": workspace.GITIGNORED,  # the root .gitignore: drafts/
    "scratch.draft.md": workspace.GITIGNORED,  # *.draft.md (keep.draft.md is negated)
    "sub/local.md": workspace.GITIGNORED,  # sub/.gitignore, relative to sub/
    "memory/private/diary.md": PRIVATE,
    "script.py": NOT_INCLUDED,
}
GITIGNORE = "drafts/\n*.draft.md\n!keep.draft.md\nMEMORY.md\nmemory/\nskills/\n"


def make_workspace(root: Path) -> None:
    for rel in [*SYNCED, *SKIPPED]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n", encoding="utf-8")
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (root / "sub/.gitignore").write_text("local.md\n", encoding="utf-8")
    (root / "tools/scraper/.git").mkdir()
    (root / "tools/wt/.git").write_text("gitdir: /elsewhere\n", encoding="utf-8")
    (root / "py/env311/pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")


def policy_for(root: Path) -> PathPolicy:
    return PathPolicy(root, private=("memory/private/", "*.private.md"))


def test_the_scan_takes_the_memory_and_skips_the_workspace(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    assert set(scan(tmp_path, policy_for(tmp_path))) == SYNCED


def test_each_path_is_judged_alike_by_name_and_by_the_scan(tmp_path: Path) -> None:
    """The watcher asks `accepts` for each event path; the scan prunes folders: same answers."""
    make_workspace(tmp_path)
    policy = policy_for(tmp_path)
    for rel in SYNCED:
        assert policy.accepts(rel), rel
    for rel, reason in SKIPPED.items():
        assert not policy.accepts(rel), rel
        assert policy.file_reason(rel) == reason, rel


def test_what_is_skipped_is_reported_with_its_reason(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    survey = Survey()
    scan(tmp_path, policy_for(tmp_path), survey)
    report = survey.to_json()
    assert report["paths"] == {
        "build/": workspace.BUILD_OR_CACHE,
        "drafts/": workspace.GITIGNORED,
        "memory/private/": PRIVATE,
        "node_modules/": workspace.DEPENDENCIES,
        "pkg.egg-info/": workspace.BUILD_OR_CACHE,
        "py/env311/": workspace.VIRTUAL_ENV,
        "skills/search/node_modules/": workspace.DEPENDENCIES,
        "src/__pycache__/": workspace.BUILD_OR_CACHE,
        "tools/scraper/": workspace.NESTED_REPO,
        "tools/wt/": workspace.NESTED_REPO,
        ".venv/": workspace.VIRTUAL_ENV,
        "scratch.draft.md": workspace.GITIGNORED,
        "script.py": NOT_INCLUDED,
        "sub/local.md": workspace.GITIGNORED,
    }
    assert report["counts"][workspace.NESTED_REPO] == 2
    assert report["counts"][workspace.GITIGNORED] == 3


def test_the_report_stays_bounded_and_keeps_folders_first(tmp_path: Path) -> None:
    for i in range(SAMPLE_LIMIT * 4):
        (tmp_path / f"f{i:03d}.txt").write_text("x", encoding="utf-8")
    (tmp_path / "node_modules").mkdir()
    survey = Survey()
    scan(tmp_path, PathPolicy(tmp_path), survey)
    report = survey.to_json()
    assert len(report["paths"]) == SAMPLE_LIMIT
    assert "node_modules/" in report["paths"]
    assert report["counts"] == {NOT_INCLUDED: SAMPLE_LIMIT * 4, workspace.DEPENDENCIES: 1}


def test_the_defaults_can_be_turned_off_for_a_plain_memory_folder(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    plain = PathPolicy(tmp_path, workspace_defaults=False)
    assert plain.accepts("build/notes.md") and plain.accepts("drafts/idea.md")


async def test_the_watcher_follows_a_gitignore_and_a_new_repository(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/a.md").write_text("a\n", encoding="utf-8")
    (tmp_path / ".gitignore").write_text("notes/\n", encoding="utf-8")
    policy = PathPolicy(tmp_path)
    assert scan(tmp_path, policy) == []
    seen: list[str] = []
    stop = asyncio.Event()

    async def collect() -> None:
        async for batch in FolderWatcher(tmp_path, policy).events(stop):
            seen.extend(event.path for event in batch if not event.deleted)

    task = asyncio.create_task(collect())
    try:
        deadline = time.monotonic() + 5
        while "probe.md" not in seen:  # the OS watch starts inside the task
            assert time.monotonic() < deadline, "watcher never started"
            (tmp_path / "probe.md").write_text(str(time.monotonic_ns()), encoding="utf-8")
            await asyncio.sleep(0.02)
        (tmp_path / ".gitignore").write_text("", encoding="utf-8")  # notes/ syncs now
        await wait_until_async(lambda: "notes/a.md" in seen, "notes/a.md admitted", 5)

        (tmp_path / "lib").mkdir()
        (tmp_path / "lib/.git").mkdir()  # git init: a nested repository from now on
        await wait_until_async(lambda: not policy.accepts("lib/x.md"), "lib/ skipped", 5)
        seen.clear()
        (tmp_path / "lib/README.md").write_text("not memory\n", encoding="utf-8")
        (tmp_path / "after.md").write_text("memory\n", encoding="utf-8")
        await wait_until_async(lambda: "after.md" in seen, "after.md seen", 5)
        assert "lib/README.md" not in seen
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)

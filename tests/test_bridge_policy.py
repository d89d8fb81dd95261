from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarm.bridge.policy import PathPolicy
from swarm.bridge.reader import read_stable


@pytest.mark.parametrize(
    "rel", ["MEMORY.md", "SOUL.md", "memory/2026-11-25.md", "memory/topic.md", "a/b/c/deep.md"]
)
def test_defaults_accept_markdown_at_any_depth(tmp_path: Path, rel: str) -> None:
    assert PathPolicy(tmp_path).accepts(rel)


@pytest.mark.parametrize(
    "rel",
    [
        ".swarm/state.db",
        ".swarm/notes.md",
        ".git/HEAD.md",
        "memory/runtime/x.md",
        ".MEMORY.md.swp",
        "memory/.topic.md.swo",
        "MEMORY.md~",
        ".#MEMORY.md",
        "#MEMORY.md#",
        "MEMORY.md.tmp",
        ".MEMORY.md.k3j2.swarm-tmp",
        "4913",
        "notes.txt",
        "memory",
    ],
)
def test_defaults_reject_state_editor_files_and_other_types(tmp_path: Path, rel: str) -> None:
    assert not PathPolicy(tmp_path).accepts(rel)


@pytest.mark.parametrize(
    "rel", ["", "/etc/passwd.md", "../outside.md", "memory/../../x.md", "./MEMORY.md", "a//b.md"]
)
def test_rejects_paths_that_are_not_clean_relative_paths(tmp_path: Path, rel: str) -> None:
    assert not PathPolicy(tmp_path).accepts(rel)


def test_swarmignore_patterns_and_negation(tmp_path: Path) -> None:
    (tmp_path / ".swarmignore").write_text(
        "# private notes\nprivate/\ndrafts/*.md\n!drafts/keep.md\n/TOP.md\n", encoding="utf-8"
    )
    policy = PathPolicy(tmp_path)
    assert not policy.accepts("private/a.md")
    assert not policy.accepts("memory/private/a.md")
    assert not policy.accepts("drafts/wip.md")
    assert policy.accepts("drafts/keep.md")
    assert not policy.accepts("TOP.md")
    assert policy.accepts("memory/TOP.md")
    assert policy.accepts("MEMORY.md")


def test_negation_cannot_reinclude_swarm_state(tmp_path: Path) -> None:
    (tmp_path / ".swarmignore").write_text("!.swarm/\n!.swarm/x.md\n", encoding="utf-8")
    assert not PathPolicy(tmp_path).accepts(".swarm/x.md")


def test_reload_picks_up_swarmignore_changes(tmp_path: Path) -> None:
    policy = PathPolicy(tmp_path)
    assert policy.accepts("scratch.md")
    (tmp_path / ".swarmignore").write_text("scratch.md\n", encoding="utf-8")
    assert policy.accepts("scratch.md"), "rules change only on reload"
    policy.reload()
    assert not policy.accepts("scratch.md")
    (tmp_path / ".swarmignore").unlink()
    policy.reload()
    assert policy.accepts("scratch.md")


def test_extra_include_and_ignore_globs(tmp_path: Path) -> None:
    policy = PathPolicy(tmp_path, include=("*.md", "*.txt"), ignore=("logs/", "*.bak.md"))
    assert policy.accepts("notes.txt")
    assert not policy.accepts("logs/today.md")
    assert not policy.accepts("memory/old.bak.md")
    assert policy.accepts("memory/old.md")
    assert not policy.accepts("image.png")


def test_state_dir_inside_root_is_ignored(tmp_path: Path) -> None:
    policy = PathPolicy(tmp_path, state_dir=tmp_path / "var" / "swarm")
    assert not policy.accepts("var/swarm/cache.md")
    assert policy.accepts("var/other.md")


def test_relative_maps_inside_paths_and_refuses_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    policy = PathPolicy(root)
    assert policy.relative(root / "memory" / "x.md") == "memory/x.md"
    assert policy.relative(tmp_path / "elsewhere.md") is None
    assert policy.relative(root / ".." / "root2" / "x.md") is None
    assert policy.relative(root) is None


def test_policy_answers_by_name_and_links_are_refused_at_the_moment_of_io(tmp_path: Path) -> None:
    """A link can be swapped in after a path was accepted: the policy does not look at the disk
    (its answer would be stale); every read refuses a link when it happens."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.md").write_text("secret", encoding="utf-8")
    os.symlink(outside, root / "linked")
    os.symlink(outside / "secret.md", root / "SECRET.md")
    policy = PathPolicy(root)
    assert policy.accepts("linked/secret.md") and policy.accepts("SECRET.md")
    for rel in ("linked/secret.md", "SECRET.md"):
        read = read_stable(root / rel, root=root)
        assert read.text is None and "is a symbolic link" in (read.problem or "")

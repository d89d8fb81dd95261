from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import swarm.bridge.render as render_mod
from swarm.bridge.render import (
    RenderConflict,
    RenderError,
    remove_file,
    write_atomic,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".swarm-tmp"))


def test_creates_new_file_and_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "memory" / "2026-11-25.md"
    write_atomic(path, "# Today\n- 🦀 한국어\r\n", expected=None)
    assert path.read_bytes() == "# Today\n- 🦀 한국어\r\n".encode()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask
    assert _leftovers(tmp_path) == []


def test_replaces_when_disk_matches_expected_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("old\n", encoding="utf-8")
    path.chmod(0o600)
    inode_before = path.stat().st_ino
    write_atomic(path, "new\n", expected="old\n")
    assert path.read_text(encoding="utf-8") == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode_before, "replaced by rename, not rewritten in place"
    assert _leftovers(tmp_path) == []


def test_conflict_when_disk_differs_leaves_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("agent wrote this\n", encoding="utf-8")
    with pytest.raises(RenderConflict) as caught:
        write_atomic(path, "merged\n", expected="what we last saw\n")
    assert caught.value.current.text == "agent wrote this\n"
    assert path.read_text(encoding="utf-8") == "agent wrote this\n"
    assert _leftovers(tmp_path) == []


def test_conflict_when_file_appeared_but_caller_expected_none(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("agent created\n", encoding="utf-8")
    with pytest.raises(RenderConflict):
        write_atomic(path, "ours\n", expected=None)
    with pytest.raises(RenderConflict):
        write_atomic(path, "ours\n", expected="agent created\n", expect_missing=True)
    assert path.read_text(encoding="utf-8") == "agent created\n"


def test_expect_missing_writes_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "SOUL.md"
    write_atomic(path, "soul\n", expected=None, expect_missing=True)
    assert path.read_text(encoding="utf-8") == "soul\n"


def test_conflict_when_agent_deleted_the_file(tmp_path: Path) -> None:
    """Re-creating a file the agent deleted would undo an unseen agent write."""
    path = tmp_path / "MEMORY.md"
    with pytest.raises(RenderConflict) as caught:
        write_atomic(path, "ours\n", expected="was here\n")
    assert caught.value.current.missing
    assert not path.exists()


def test_conflict_when_disk_holds_binary(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_bytes(b"\x00binary")
    with pytest.raises(RenderConflict) as caught:
        write_atomic(path, "text\n", expected="text\n")
    assert caught.value.current.problem == "binary (NUL byte)"
    assert path.read_bytes() == b"\x00binary"


def test_no_space_leaves_original_intact_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("precious\n", encoding="utf-8")

    def full_disk(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(RenderError) as caught:
        write_atomic(path, "x" * 10_000, expected="precious\n")
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert "No space left on device" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert path.read_text(encoding="utf-8") == "precious\n"
    assert _leftovers(tmp_path) == []


def test_permission_error_on_rename_is_a_render_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("precious\n", encoding="utf-8")

    def refuse(*args: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(render_mod, "_renameat2", refuse)
    with pytest.raises(RenderError) as caught:
        write_atomic(path, "new\n", expected="precious\n")
    monkeypatch.undo()
    assert caught.value.errno == errno.EACCES
    assert path.read_text(encoding="utf-8") == "precious\n"
    assert _leftovers(tmp_path) == []


def test_write_between_check_and_rename_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent write landing while the temp file is being synced is not overwritten."""
    path = tmp_path / "MEMORY.md"
    path.write_text("seen\n", encoding="utf-8")
    real_fsync = os.fsync

    def agent_writes_during_fsync(fd: int) -> None:
        real_fsync(fd)
        if not path.read_text(encoding="utf-8").startswith("agent"):
            path.write_text("agent, mid-render, longer\n", encoding="utf-8")

    monkeypatch.setattr(os, "fsync", agent_writes_during_fsync)
    with pytest.raises(RenderConflict) as caught:
        write_atomic(path, "render\n", expected="seen\n")
    monkeypatch.undo()
    assert caught.value.current.text == "agent, mid-render, longer\n"
    assert path.read_text(encoding="utf-8") == "agent, mid-render, longer\n"
    assert _leftovers(tmp_path) == []


def test_remove_file_deletes_expected_content_and_empty_folders(tmp_path: Path) -> None:
    path = tmp_path / "memory" / "old" / "2026-01-01.md"
    path.parent.mkdir(parents=True)
    path.write_text("bye\n", encoding="utf-8")
    assert remove_file(path, expected="bye\n", root=tmp_path).changed
    assert not path.exists()
    assert not (tmp_path / "memory").exists()
    assert tmp_path.exists()


def test_remove_file_keeps_folders_that_hold_other_files(tmp_path: Path) -> None:
    path = tmp_path / "memory" / "a.md"
    path.parent.mkdir()
    path.write_text("a\n", encoding="utf-8")
    (tmp_path / "memory" / "b.md").write_text("b\n", encoding="utf-8")
    assert remove_file(path, expected="a\n", root=tmp_path).changed
    assert (tmp_path / "memory" / "b.md").exists()


def test_remove_file_conflict_keeps_agent_content(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("agent edit\n", encoding="utf-8")
    with pytest.raises(RenderConflict) as caught:
        remove_file(path, expected="old\n", root=tmp_path)
    assert caught.value.current.text == "agent edit\n"
    assert path.read_text(encoding="utf-8") == "agent edit\n"


def test_remove_file_missing_returns_false(tmp_path: Path) -> None:
    assert not remove_file(tmp_path / "gone.md", expected="x\n", root=tmp_path).changed


def test_agent_file_renamed_in_the_last_instant_is_captured_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent saving atomically (temp file + rename) right after the last check, right before
    the swap: its file is what the swap takes out, and it is handed back."""
    path = tmp_path / "MEMORY.md"
    path.write_text("seen\n", encoding="utf-8")
    real_recheck = render_mod._recheck

    def recheck_then_agent_saves(*args: Any) -> None:
        real_recheck(*args)
        agent_tmp = tmp_path / ".MEMORY.md.agent"
        agent_tmp.write_text("seen\nagent line\n", encoding="utf-8")
        agent_tmp.replace(path)

    monkeypatch.setattr(render_mod, "_recheck", recheck_then_agent_saves)
    displaced = write_atomic(path, "seen\nrendered\n", expected="seen\n").displaced
    assert displaced is not None
    assert path.read_text(encoding="utf-8") == "seen\nrendered\n"
    assert len(_leftovers(tmp_path)) == 1, "kept until its text is merged"
    assert displaced.poll() == "seen\nagent line\n"
    displaced.finish()
    assert _leftovers(tmp_path) == []

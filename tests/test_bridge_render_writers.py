"""Renders against other writers and against links: the lease, the displaced file, the fallback
without leases, a crash's leftovers, and the folder walk that never follows a link."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import swarm.bridge.displaced as displaced_mod
import swarm.bridge.render as render_mod
from swarm.bridge import lease
from swarm.bridge.displaced import BUSY, Displaced, content_digest, recover_leftovers
from swarm.bridge.reader import read_stable
from swarm.bridge.render import (
    RenderBusy,
    RenderRefused,
    RenderResult,
    remove_file,
    write_atomic,
)

DEADLINE_S = 10.0


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".swarm-tmp"))


def poll_until_read(handle: Displaced) -> str | None:
    """What the displaced file holds once no writer holds it; the file is removed after."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        answer = handle.poll()
        if answer is not BUSY:
            handle.finish()
            assert not isinstance(answer, displaced_mod._Busy)
            return answer
        time.sleep(0.01)
    raise AssertionError("the displaced file was never readable")


@pytest.fixture
def no_leases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(lease, "enabled", False)
    monkeypatch.setattr(displaced_mod, "LINGER", 0.3)
    yield


def test_leases_work_here(tmp_path: Path) -> None:
    """The tests below assume what the daemon gets on a local file system it owns."""
    path = tmp_path / "f.md"
    path.write_text("x\n", encoding="utf-8")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert lease.take(fd) is lease.Lease.GRANTED
        lease.release(fd)
    finally:
        os.close(fd)


# -- writers holding the file --------------------------------------------------------------------


def test_no_render_lands_while_another_writer_holds_the_file_open(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("seen\n", encoding="utf-8")
    with open(path, "a", encoding="utf-8") as writer:
        with pytest.raises(RenderBusy):
            write_atomic(path, "seen\nrendered\n", expected="seen\n", root=tmp_path)
        with pytest.raises(RenderBusy):
            remove_file(path, expected="seen\n", root=tmp_path)
        writer.write("agent line\n")
    assert path.read_text(encoding="utf-8") == "seen\nagent line\n"
    assert _leftovers(tmp_path) == []
    write_atomic(path, "seen\nagent line\nrendered\n", expected="seen\nagent line\n", root=tmp_path)
    assert path.read_text(encoding="utf-8") == "seen\nagent line\nrendered\n"


def test_a_reader_holding_the_file_open_does_not_hold_renders(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("old\n", encoding="utf-8")
    with open(path, encoding="utf-8") as reader:
        write_atomic(path, "new\n", expected="old\n", root=tmp_path)
        assert reader.read() == "old\n", "a reader keeps the whole old text, never half of one"
    assert path.read_text(encoding="utf-8") == "new\n"


def writer_arrives_during(
    monkeypatch: pytest.MonkeyPatch, path: Path, line: str, hold: float
) -> threading.Thread:
    """Once the render checked the file under its lease, an agent opens it to append: the open
    waits in the kernel for the lease; the agent writes `line` `hold` seconds after it got in."""
    real_verify = render_mod._verify
    writer = threading.Thread(target=_append_held, args=(path, line, hold), daemon=True)

    def verify_then_writer_arrives(*args: Any) -> Any:
        seen = real_verify(*args)
        old = args[3]
        writer.start()
        deadline = time.monotonic() + DEADLINE_S
        while lease.intact(old):  # the writer waits on our lease now
            assert time.monotonic() < deadline, "the writer never reached the lease"
            time.sleep(0.001)
        return seen

    monkeypatch.setattr(render_mod, "_verify", verify_then_writer_arrives)
    return writer


def _append_held(path: Path, line: str, hold: float) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        time.sleep(hold)
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def test_a_writer_opening_during_the_render_writes_to_the_old_file_which_is_handed_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("seen\n", encoding="utf-8")
    writer = writer_arrives_during(monkeypatch, path, "late line\n", hold=0.2)
    result = write_atomic(path, "seen\nrendered\n", expected="seen\n", root=tmp_path)
    assert path.read_text(encoding="utf-8") == "seen\nrendered\n"
    assert result.displaced is not None, "the old file is kept while its writer writes"
    assert len(_leftovers(tmp_path)) == 1
    assert poll_until_read(result.displaced) == "seen\nlate line\n"
    writer.join(DEADLINE_S)
    assert _leftovers(tmp_path) == []


def test_a_writer_opening_during_a_delete_hands_its_text_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "memory" / "old.md"
    path.parent.mkdir()
    path.write_text("bye\n", encoding="utf-8")
    writer_arrives_during(monkeypatch, path, "still here\n", hold=0.1)
    result = remove_file(path, expected="bye\n", root=tmp_path)
    assert not path.exists()
    assert result.displaced is not None
    assert poll_until_read(result.displaced) == "bye\nstill here\n"
    assert _leftovers(tmp_path) == []


# -- without leases ------------------------------------------------------------------------------


def test_without_leases_a_writer_keeps_writing_into_the_old_file_and_nothing_is_lost(
    tmp_path: Path, no_leases: None
) -> None:
    """The fallback: the render cannot see the writer; the old file is watched until it has
    been quiet for LINGER seconds, and what the writer wrote meanwhile is handed back."""
    path = tmp_path / "MEMORY.md"
    path.write_text("seen\n", encoding="utf-8")
    with open(path, "a", encoding="utf-8") as writer:
        result = write_atomic(path, "seen\nrendered\n", expected="seen\n", root=tmp_path)
        assert result.displaced is not None
        for chunk in ("chunk 1\n", "chunk 2\n"):
            writer.write(chunk)
            writer.flush()
            assert result.displaced.poll() is BUSY
            time.sleep(0.1)
    assert poll_until_read(result.displaced) == "seen\nchunk 1\nchunk 2\n"
    assert path.read_text(encoding="utf-8") == "seen\nrendered\n"
    assert _leftovers(tmp_path) == []


def test_without_leases_an_untouched_old_file_is_dropped_after_the_quiet_time(
    tmp_path: Path, no_leases: None
) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("seen\n", encoding="utf-8")
    result = write_atomic(path, "seen\nrendered\n", expected="seen\n", root=tmp_path)
    assert result.displaced is not None
    assert poll_until_read(result.displaced) is None
    assert _leftovers(tmp_path) == []


# -- a crash's leftovers -------------------------------------------------------------------------


def test_leftovers_of_a_crash_are_told_apart_by_the_inode_in_their_name(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "x.md").write_text("rendered\n", encoding="utf-8")
    swapped = tmp_path / "memory" / "scratch"
    swapped.write_text("old\nagent\n", encoding="utf-8")
    ino = swapped.stat().st_ino
    digest = content_digest(b"rendered\n")
    swapped.rename(tmp_path / "memory" / f".x.md.{ino}.{digest}.swarm-tmp")
    live = (tmp_path / "memory" / "x.md").stat().st_ino  # never the inode of another file
    (tmp_path / f".MEMORY.md.{live}.{digest}.swarm-tmp").write_text("never swapped\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / f".y.md.{ino}.{digest}.swarm-tmp").write_text("not ours\n")

    found = recover_leftovers(tmp_path, lambda rel: rel == ".git")
    assert [(h.rel, h.expected, h.rendered) for h in found] == [("memory/x.md", None, digest)]
    assert poll_until_read(found[0]) == "old\nagent\n"
    assert _leftovers(tmp_path) == [f".y.md.{ino}.{digest}.swarm-tmp"]


# -- links -------------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "x.md").write_text("outside\n", encoding="utf-8")
    return folder


def untouched(outside: Path) -> bool:
    return os.listdir(outside) == ["x.md"] and (outside / "x.md").read_text() == "outside\n"


Action = Callable[[Path, Path], RenderResult]
ACTIONS: dict[str, Action] = {
    "replace": lambda path, root: write_atomic(path, "new\n", expected="outside\n", root=root),
    "create": lambda path, root: write_atomic(path, "new\n", expected=None, root=root),
    "delete": lambda path, root: remove_file(path, expected="outside\n", root=root),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_folder_link_is_never_followed(tmp_path: Path, outside: Path, action: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "memory")
    with pytest.raises(RenderRefused, match="memory is a symbolic link"):
        ACTIONS[action](root / "memory" / "x.md", root)
    assert untouched(outside)
    assert read_stable(root / "memory" / "x.md", root=root).problem == (
        "memory is a symbolic link; swarm does not follow links"
    )


@pytest.mark.parametrize("action", ["replace", "delete"])
def test_a_file_link_is_neither_followed_nor_replaced(
    tmp_path: Path, outside: Path, action: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside / "x.md", root / "x.md")
    with pytest.raises(RenderRefused, match=r"x\.md is a symbolic link"):
        ACTIONS[action](root / "x.md", root)
    assert (root / "x.md").is_symlink() and untouched(outside)
    assert read_stable(root / "x.md", root=root).problem == (
        "x.md is a symbolic link; swarm does not follow links"
    )
    assert _leftovers(root) == []


def test_a_link_swapped_in_at_the_last_instant_is_swapped_back_and_refused(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    path = root / "x.md"
    path.write_text("seen\n", encoding="utf-8")
    real_recheck = render_mod._recheck

    def recheck_then_link_appears(*args: Any) -> None:
        real_recheck(*args)
        os.symlink(outside / "x.md", root / "link")
        os.replace(root / "link", path)

    monkeypatch.setattr(render_mod, "_recheck", recheck_then_link_appears)
    with pytest.raises(RenderRefused, match=r"x\.md is a symbolic link"):
        write_atomic(path, "new\n", expected="seen\n", root=root)
    assert path.is_symlink() and untouched(outside)
    assert _leftovers(root) == []

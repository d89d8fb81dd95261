from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from swarm.bridge import lease
from swarm.bridge.reader import DEFAULT_MAX_BYTES, read_stable


def _age(path: Path, seconds: float = 10.0) -> None:
    """Backdate mtime so the read is not held for the quiet window."""
    past = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(past, past))


@pytest.mark.parametrize(
    "text",
    [
        "# Memory\n\n- likes 🦀 and 🐍\n",
        "# 기억\n사용자는 한국어를 선호한다.\n",
        "line one\r\nline two\r\n",
        "\ufeff# with BOM\n",
        "no trailing newline",
        "",
    ],
)
def test_utf8_texts_round_trip_byte_exact(tmp_path: Path, text: str) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_bytes(text.encode("utf-8"))
    result = read_stable(path)
    assert result.text == text
    assert result.problem is None
    assert not result.missing
    st = path.stat()
    assert result.stat == (st.st_ino, st.st_size, st.st_mtime_ns)


def test_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    result = read_stable(tmp_path / "nope" / "MEMORY.md")
    assert result.missing
    assert result.text is None


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.md"
    path.write_bytes("café".encode("latin-1"))
    result = read_stable(path)
    assert result.text is None
    assert result.problem == "not UTF-8"


def test_binary(tmp_path: Path) -> None:
    path = tmp_path / "blob.md"
    path.write_bytes(b"# title\n\x00\x01\x02")
    assert read_stable(path).problem == "binary (NUL byte)"


def test_oversize_reports_both_sizes(tmp_path: Path) -> None:
    path = tmp_path / "big.md"
    path.write_bytes(b"a" * int(5.2 * 1024 * 1024))
    result = read_stable(path)
    assert result.text is None
    assert result.problem == "larger than 4 MiB (5.2 MiB)"
    assert read_stable(path, max_bytes=DEFAULT_MAX_BYTES * 2).text is not None


def test_oversize_by_a_little_shows_the_files_own_size(tmp_path: Path) -> None:
    """Rounded, a file just over the limit would read "larger than 4 MiB (4 MiB)"."""
    path = tmp_path / "big.md"
    path.write_bytes(b"a" * (DEFAULT_MAX_BYTES + 1))
    assert read_stable(path).problem == "larger than 4 MiB (4,194,305 bytes)"
    path.write_bytes(b"a" * (DEFAULT_MAX_BYTES + 40_000))
    assert read_stable(path).problem == "larger than 4 MiB (4,234,304 bytes)"


def test_directory_and_fifo_are_not_regular_files(tmp_path: Path) -> None:
    (tmp_path / "dir.md").mkdir()
    os.mkfifo(tmp_path / "pipe.md")
    assert read_stable(tmp_path / "dir.md").problem == "not a regular file"
    assert read_stable(tmp_path / "pipe.md").problem == "not a regular file"


def test_permission_denied_is_a_problem_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "locked.md"
    path.write_text("x", encoding="utf-8")

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    # Simulated: the tests may run as root, which bypasses file modes.
    monkeypatch.setattr(os, "open", refuse)
    result = read_stable(path)
    assert result.text is None
    assert result.problem == "unreadable: Permission denied"


def test_old_file_is_read_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.md"
    path.write_text("settled\n", encoding="utf-8")
    _age(path)
    started = time.monotonic()
    assert read_stable(path, settle=1.0).text == "settled\n"
    assert time.monotonic() - started < 0.5


def test_in_place_rewrite_is_never_returned_half_written(tmp_path: Path) -> None:
    """An agent truncates then writes in slow chunks; what a reader returns as settled is the
    old or the whole new text, never a half, however slow the machine: while the writer holds
    the file open, a read says so (the read lease is refused), whatever the timing."""
    path = tmp_path / "MEMORY.md"
    old = "".join(f"old line {i}\n" for i in range(50))
    new = "".join(f"new line {i} ✓\n" for i in range(50))
    path.write_text(old, encoding="utf-8")
    _age(path)
    chunks = [new[i : i + 40] for i in range(0, len(new), 40)]
    started = threading.Event()
    done = threading.Event()

    def writer() -> None:
        with open(path, "r+b") as handle:
            handle.truncate(0)
            started.set()
            for chunk in chunks:
                time.sleep(0.002)
                handle.write(chunk.encode("utf-8"))
                handle.flush()
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    started.wait(5)
    seen: list[str | None] = []
    while not done.is_set() or not seen:
        read = read_stable(path, settle=0.05, attempts=40)
        if not read.writer_open:
            seen.append(read.text)
    thread.join()
    seen.append(read_stable(path).text)
    assert all(text in (old, new) for text in seen), [t[:30] if t else t for t in seen]
    assert seen[-1] == new


def test_a_read_under_a_writer_says_so_and_a_closed_file_is_taken_at_once(tmp_path: Path) -> None:
    """With a lease, no quiet time is needed: a file nobody holds open for writing is whole."""
    path = tmp_path / "MEMORY.md"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("half")
        handle.flush()
        assert read_stable(path, settle=5.0).writer_open
    started = time.monotonic()
    read = read_stable(path, settle=5.0)  # written just now, but closed: no need to wait
    assert (read.text, read.writer_open) == ("half", False)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("leases", [True, False], ids=["lease", "no-lease"])
def test_gives_up_with_a_problem_when_the_file_never_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leases: bool
) -> None:
    """A writer that never stops: under a lease the read says a writer holds the file; without
    one, it never looks quiet and the reader gives up."""
    monkeypatch.setattr(lease, "enabled", leases)
    path = tmp_path / "busy.md"
    path.write_text("", encoding="utf-8")
    stop = threading.Event()
    opened = threading.Event()

    def scribbler() -> None:
        with open(path, "ab") as handle:
            opened.set()
            while not stop.is_set():
                handle.write(b"x")
                handle.flush()
                time.sleep(0.001)

    thread = threading.Thread(target=scribbler)
    thread.start()
    assert opened.wait(5)
    try:
        # a window far wider than the writer's 1 ms pace, so a loaded machine cannot fake quiet
        result = read_stable(path, settle=0.1, attempts=3)
    finally:
        stop.set()
        thread.join()
    if leases:
        assert result.writer_open
    else:
        assert (result.text, result.writer_open) == (None, False)
        assert result.problem == "still being written after 3 reads"

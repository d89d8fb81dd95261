"""The local store: round trips, group commit, bounds, bad files, and SIGKILL safety."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.store import OutboxEntry, Store, StoreError


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "node" / ".swarm"


@pytest.fixture
def store(state_dir: Path) -> Iterator[Store]:
    with Store(state_dir) as opened:
        yield opened


def append_local(store: Store, path: str, update: bytes) -> int:
    entry_id = store.append_update(path, update, local=True)
    assert entry_id is not None
    return entry_id


def peek(state_dir: Path, sql: str) -> list[tuple[object, ...]]:
    """Read through an independent connection: what another process would see on disk."""
    conn = sqlite3.connect(state_dir / "state.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- opening -------------------------------------------------------------------------------


def test_creates_private_folder_and_wal_database(state_dir: Path) -> None:
    with Store(state_dir):
        pass
    assert (state_dir / "state.db").is_file()
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert peek(state_dir, "PRAGMA journal_mode") == [("wal",)]


def test_reopen_sees_everything_committed(state_dir: Path) -> None:
    with Store(state_dir) as first:
        first.set_meta("node_id", "n1")
        first.append_update("MEMORY.md", b"\x01\x02", local=True)
        first.compact_doc("SOUL.md", b"soul")
        first.append_update("SOUL.md", b"tail", local=False)
        first.record_version("MEMORY.md", "hello\n")
        first.set_file_state("MEMORY.md", exists=True)
        first.trash("old.md", "bye\n")
    with Store(state_dir) as second:
        assert second.get_meta("node_id") == "n1"
        assert second.paths() == ["MEMORY.md", "SOUL.md"]
        assert second.load_doc("MEMORY.md") == [b"\x01\x02"]
        assert second.load_doc("SOUL.md") == [b"soul", b"tail"]
        assert [(e.path, e.update) for e in second.outbox()] == [("MEMORY.md", b"\x01\x02")]
        assert second.versions("MEMORY.md") == ["hello\n"]
        assert second.file_states() == {"MEMORY.md": True}
        assert [content for _, content in second.trashed("old.md")] == ["bye\n"]


def test_garbage_file_is_an_error_and_left_untouched(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    db = state_dir / "state.db"
    garbage = random.Random(7).randbytes(20_000)
    db.write_bytes(garbage)
    with pytest.raises(StoreError) as caught:
        Store(state_dir)
    message = str(caught.value)
    assert str(db) in message and "\n" not in message
    assert db.read_bytes() == garbage
    assert sorted(os.listdir(state_dir)) == ["state.db"]


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_database_is_an_error_and_left_untouched(state_dir: Path, keep: float) -> None:
    with Store(state_dir) as store:
        rng = random.Random(3)
        for i in range(100):
            store.append_update(f"memory/{i % 7}.md", rng.randbytes(1500), local=True)
    db = state_dir / "state.db"
    whole = db.read_bytes()
    truncated = whole[: int(len(whole) * keep)]
    db.write_bytes(truncated)
    with pytest.raises(StoreError) as caught:
        Store(state_dir)
    assert str(db) in str(caught.value) and "\n" not in str(caught.value)
    assert db.read_bytes() == truncated


def test_newer_schema_version_is_an_error_and_left_untouched(state_dir: Path) -> None:
    with Store(state_dir) as store:
        store.set_meta("node_id", "n1")
    conn = sqlite3.connect(state_dir / "state.db")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    before = (state_dir / "state.db").read_bytes()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(state_dir)
    assert (state_dir / "state.db").read_bytes() == before


def test_foreign_sqlite_database_is_an_error_and_left_untouched(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    conn = sqlite3.connect(state_dir / "state.db")
    conn.execute("CREATE TABLE accounts (name TEXT)")
    conn.commit()
    conn.close()
    before = (state_dir / "state.db").read_bytes()
    with pytest.raises(StoreError, match="not a swarm state database"):
        Store(state_dir)
    assert (state_dir / "state.db").read_bytes() == before


def test_state_folder_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ".swarm").write_text("not a folder")
    with pytest.raises(StoreError, match="state"):
        Store(tmp_path / ".swarm")


# -- meta and documents --------------------------------------------------------------------


def test_meta_round_trip_and_overwrite(store: Store) -> None:
    assert store.get_meta("node_id") is None
    store.set_meta("node_id", "alpha")
    store.set_meta("node_id", "beta")
    assert store.get_meta("node_id") == "beta"


def test_document_log_compaction_and_stats(store: Store) -> None:
    assert store.paths() == []
    assert store.load_doc("MEMORY.md") == []
    assert store.log_stats("MEMORY.md") == (0, 0)
    assert store.append_update("MEMORY.md", b"aa", local=False) is None
    store.append_update("MEMORY.md", b"bbb", local=False)
    store.append_update("memory/2026-11-25.md", b"c", local=False)
    assert store.load_doc("MEMORY.md") == [b"aa", b"bbb"]
    assert store.log_stats("MEMORY.md") == (2, 5)

    store.compact_doc("MEMORY.md", b"merged")
    assert store.load_doc("MEMORY.md") == [b"merged"]
    assert store.log_stats("MEMORY.md") == (0, 0)
    store.append_update("MEMORY.md", b"d", local=False)
    assert store.load_doc("MEMORY.md") == [b"merged", b"d"]
    store.compact_doc("MEMORY.md", b"merged2")
    assert store.load_doc("MEMORY.md") == [b"merged2"]
    assert store.load_doc("memory/2026-11-25.md") == [b"c"]
    assert store.paths() == ["MEMORY.md", "memory/2026-11-25.md"]


def test_forget_doc_keeps_trash_and_outbox(store: Store) -> None:
    store.compact_doc("gone.md", b"base")
    entry_id = store.append_update("gone.md", b"edit", local=True)
    store.trash("gone.md", "old text\n")
    store.forget_doc("gone.md")
    assert store.paths() == []
    assert store.load_doc("gone.md") == []
    assert [e.id for e in store.outbox()] == [entry_id]
    assert [content for _, content in store.trashed("gone.md")] == ["old text\n"]


# -- outbox --------------------------------------------------------------------------------


def test_outbox_order_limit_and_ack(store: Store) -> None:
    ids = [append_local(store, "a.md", bytes([i])) for i in range(5)]
    store.append_update("a.md", b"remote", local=False)
    assert store.outbox_depth() == 5
    assert store.outbox(limit=2) == [
        OutboxEntry(ids[0], "a.md", b"\x00"),
        OutboxEntry(ids[1], "a.md", b"\x01"),
    ]
    store.ack([ids[0], ids[2], 12345])
    store.ack([ids[0]])
    assert [e.id for e in store.outbox()] == [ids[1], ids[3], ids[4]]
    assert store.outbox_depth() == 3


def test_outbox_ids_are_never_reused(state_dir: Path) -> None:
    with Store(state_dir) as store:
        first = append_local(store, "a.md", b"1")
        store.ack([first])
    with Store(state_dir) as store:
        assert append_local(store, "a.md", b"2") > first


def test_outbox_survives_compaction(store: Store) -> None:
    entry_id = append_local(store, "a.md", b"edit")
    store.compact_doc("a.md", b"state")
    assert store.outbox() == [OutboxEntry(entry_id, "a.md", b"edit")]


# -- batch ---------------------------------------------------------------------------------


def test_batch_commits_once_on_exit(store: Store, state_dir: Path) -> None:
    with store.batch():
        store.append_update("a.md", b"1", local=True)
        store.set_meta("k", "v")
        with store.batch():
            store.append_update("a.md", b"2", local=True)
        # Nothing is on disk yet, not even the nested batch: it joined the outer one.
        assert peek(state_dir, "SELECT count(*) FROM outbox") == [(0,)]
        assert peek(state_dir, "SELECT count(*) FROM meta") == [(0,)]
    assert peek(state_dir, "SELECT count(*) FROM outbox") == [(2,)]
    assert peek(state_dir, "SELECT value FROM meta") == [("v",)]


def test_batch_rolls_back_on_exception(store: Store, state_dir: Path) -> None:
    store.set_meta("k", "before")
    with pytest.raises(RuntimeError), store.batch():
        store.set_meta("k", "after")
        store.append_update("a.md", b"1", local=True)
        raise RuntimeError("boom")
    assert store.get_meta("k") == "before"
    assert store.outbox_depth() == 0
    assert store.load_doc("a.md") == []
    store.set_meta("k", "later")  # the store is usable again
    assert peek(state_dir, "SELECT value FROM meta") == [("later",)]


def test_failed_nested_batch_undoes_only_itself(store: Store) -> None:
    with store.batch():
        store.set_meta("outer", "1")
        with pytest.raises(RuntimeError), store.batch():
            store.set_meta("inner", "1")
            raise RuntimeError("boom")
        store.set_meta("outer2", "1")
    assert store.get_meta("outer") == "1"
    assert store.get_meta("outer2") == "1"
    assert store.get_meta("inner") is None


# -- render history ------------------------------------------------------------------------


def test_history_newest_first_and_dedup_of_newest(store: Store) -> None:
    assert store.versions("a.md") == []
    assert store.last_version("a.md") is None
    store.record_version("a.md", "one\n")
    store.record_version("a.md", "two\n")
    store.record_version("a.md", "two\n")
    store.record_version("a.md", "one\n")  # not the newest: recorded again
    store.record_version("b.md", "other\n")
    assert store.versions("a.md") == ["one\n", "two\n", "one\n"]
    assert store.last_version("a.md") == "one\n"
    assert store.versions("b.md") == ["other\n"]


def test_history_count_bound(state_dir: Path) -> None:
    with Store(state_dir, history_limit=3) as store:
        for i in range(10):
            store.record_version("a.md", f"v{i}\n")
        store.record_version("b.md", "kept\n")
        assert store.versions("a.md") == ["v9\n", "v8\n", "v7\n"]
        assert store.versions("b.md") == ["kept\n"]


def test_history_byte_bound_counts_utf8_bytes(state_dir: Path) -> None:
    with Store(state_dir, history_bytes=10) as store:
        store.record_version("a.md", "aaaa")
        store.record_version("a.md", "bbbb")
        assert store.versions("a.md") == ["bbbb", "aaaa"]  # 8 bytes
        store.record_version("a.md", "é")  # 2 UTF-8 bytes: 10 in all, still within
        assert store.versions("a.md") == ["é", "bbbb", "aaaa"]
        store.record_version("a.md", "c")  # 11 bytes: the oldest goes
        assert store.versions("a.md") == ["c", "é", "bbbb"]


def test_history_keeps_newest_even_if_over_byte_bound(state_dir: Path) -> None:
    with Store(state_dir, history_bytes=10) as store:
        store.record_version("a.md", "short")
        store.record_version("a.md", "x" * 50)
        assert store.versions("a.md") == ["x" * 50]


# -- file states and trash -----------------------------------------------------------------


def test_file_states_round_trip(store: Store) -> None:
    assert store.file_states() == {}
    store.set_file_state("a.md", exists=True)
    store.set_file_state("b.md", exists=True)
    store.set_file_state("a.md", exists=False)
    assert store.file_states() == {"a.md": False, "b.md": True}


def test_trash_newest_first_with_timestamps(store: Store) -> None:
    before = time.time()
    store.trash("a.md", "first")
    store.trash("a.md", "second ✓")
    store.trash("b.md", "elsewhere")
    after = time.time()
    entries = store.trashed("a.md")
    assert [content for _, content in entries] == ["second ✓", "first"]
    assert all(before <= at <= after for at, _ in entries)
    assert store.trashed("missing.md") == []


# -- crash safety --------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from swarm.store import Store

    store = Store(Path(sys.argv[1]))
    group = int(sys.argv[2])
    for round_ in range(10**9):
        with store.batch():
            ids = [
                store.append_update(f"doc{i % 3}.md", b"x" * (100 + i % 50), local=True)
                for i in range(group)
            ]
        print(*ids, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("group", [1, 20])
def test_sigkill_loses_nothing_that_returned(state_dir: Path, group: int) -> None:
    printed = _ids_printed_until_killed(_WRITER, state_dir, str(group), at_least=2000)
    assert peek(state_dir, "PRAGMA quick_check") == [("ok",)]
    with Store(state_dir) as store:
        present = {entry.id for entry in store.outbox(limit=10**9)}
        assert printed <= present
        # Each local update went to the log and the outbox together, a batch all or nothing.
        logged = sum(store.log_stats(f"doc{i}.md")[0] for i in range(3))
        assert logged == len(present)
        assert len(present) % group == 0


def test_release_memory_keeps_every_row(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.record_version("MEMORY.md", "- kept\n")
        store.release_memory()
        assert store.last_version("MEMORY.md") == "- kept\n"


def test_checkpoint_from_another_thread_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    import threading

    with Store(tmp_path) as store:
        for i in range(50):
            store.append_update("MEMORY.md", bytes([i]) * 200, local=True)
        db = tmp_path / "state.db"
        before = db.stat().st_size
        worker = threading.Thread(target=store.checkpoint)
        worker.start()
        worker.join()
        assert db.stat().st_size > before  # the pages left the WAL for the database file
        store.append_update("MEMORY.md", b"after", local=True)  # the writer goes on
        assert len(store.load_doc("MEMORY.md")) == 51


_CRASH_BEFORE_OUTBOX = textwrap.dedent(
    """
    import os
    import sys
    from pathlib import Path
    from swarm.store import Store

    store = Store(Path(sys.argv[1]))
    conn = store._conn
    # The process dies the instant the outbox row is about to be written: after the log row.
    conn.create_function("crash", 0, lambda: os._exit(9))
    conn.execute(
        "CREATE TEMP TRIGGER die BEFORE INSERT ON main.outbox BEGIN SELECT crash(); END"
    )
    store.append_update("MEMORY.md", b"local edit", local=True)
    """
)


def test_a_crash_between_the_log_row_and_the_outbox_row_keeps_neither(state_dir: Path) -> None:
    """`append_update` outside any batch: the log row and the outbox row of a local update are
    one transaction. A log row without its outbox row is an edit this node holds and never
    sends (the document loads it, so nothing would ever notice it is missing elsewhere)."""
    with Store(state_dir) as store:
        append_local(store, "MEMORY.md", b"before")
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH_BEFORE_OUTBOX, str(state_dir)], timeout=60, check=False
    )
    assert crashed.returncode == 9
    assert peek(state_dir, "SELECT data FROM doc_log ORDER BY rowid") == [(b"before",)]
    assert peek(state_dir, "SELECT data FROM outbox ORDER BY id") == [(b"before",)]


# -- group commit ----------------------------------------------------------------------------


async def test_group_commit_is_one_commit_per_loop_turn(store: Store, state_dir: Path) -> None:
    import asyncio

    store.defer_commits(asyncio.get_running_loop())
    for i in range(5):
        append_local(store, "a.md", b"u%d" % i)
    store.set_meta("cursor", "1-0")
    assert peek(state_dir, "SELECT count(*) FROM outbox") == [(0,)]  # not committed yet
    commits = store._commits
    await asyncio.sleep(0)
    assert peek(state_dir, "SELECT count(*) FROM outbox") == [(5,)]
    assert peek(state_dir, "SELECT value FROM meta WHERE key = 'cursor'") == [("1-0",)]
    assert store._commits == commits + 1


async def test_group_commit_commits_what_is_about_to_leave(store: Store, state_dir: Path) -> None:
    import asyncio

    store.defer_commits(asyncio.get_running_loop())
    first = append_local(store, "a.md", b"one")
    assert [entry.id for entry in store.outbox()] == [first]
    assert peek(state_dir, "SELECT id FROM outbox") == [(first,)]


async def test_group_commit_failed_batch_undoes_only_itself(store: Store, state_dir: Path) -> None:
    import asyncio

    store.defer_commits(asyncio.get_running_loop())
    kept = append_local(store, "a.md", b"kept")
    with pytest.raises(RuntimeError), store.batch():
        append_local(store, "a.md", b"undone")
        raise RuntimeError("boom")
    store.close()
    assert peek(state_dir, "SELECT id, data FROM outbox") == [(kept, b"kept")]


_GROUP_WRITER = textwrap.dedent(
    """
    import asyncio
    import sys
    from pathlib import Path
    from swarm.store import Store

    async def main() -> None:
        store = Store(Path(sys.argv[1]))
        store.defer_commits(asyncio.get_running_loop())
        for turn in range(10**9):
            for i in range(7):
                with store.batch():
                    store.append_update(f"doc{i % 3}.md", b"x" * (100 + i), local=True)
            if turn % 3 == 0:  # what outbox() returns is what leaves the node
                print(*[entry.id for entry in store.outbox(limit=10**9)], flush=True)
            await asyncio.sleep(0)

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_sigkill_with_group_commit_loses_nothing_that_left(state_dir: Path) -> None:
    sent = _ids_printed_until_killed(_GROUP_WRITER, state_dir, at_least=3000)
    assert peek(state_dir, "PRAGMA quick_check") == [("ok",)]
    with Store(state_dir) as store:
        present = {entry.id for entry in store.outbox(limit=10**9)}
        assert sent <= present
        logged = sum(store.log_stats(f"doc{i}.md")[0] for i in range(3))
        assert logged == len(present)  # log and outbox together, each batch all or nothing


def _ids_printed_until_killed(script: str, state_dir: Path, *args: str, at_least: int) -> set[int]:
    """Run a writer script, SIGKILL it once it printed `at_least` ids (each printed only after
    its store call returned), and return every id of a complete line it printed."""
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(state_dir), *args], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    printed: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(printed) < at_least and time.monotonic() < deadline:
            line = writer.stdout.readline()
            assert line, "writer exited early"
            printed.update(int(field) for field in line.split())
        assert writer.poll() is None, "writer must still be writing when killed"
        writer.send_signal(signal.SIGKILL)
        rest, _ = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL
    printed.update(
        int(field)
        for line in rest.splitlines(keepends=True)
        if line.endswith("\n")
        for field in line.split()
    )
    assert len(printed) >= at_least
    return printed

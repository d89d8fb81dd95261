"""The audit trail's parts on their own: who wrote each line (kept inside the document), the
store's history across compaction and the upgrade from schema 1, replaying it, and times."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.audit.blame import blame
from swarm.audit.history import HistoryError, load
from swarm.audit.when import parse_moment
from swarm.memory import MemoryDoc
from swarm.memory.stamps import Author
from swarm.store import Store


def who(doc: MemoryDoc) -> list[tuple[str, str]]:
    return [(line.text, line.node) for line in blame(doc)]


def test_each_line_names_the_node_that_wrote_it_on_every_replica() -> None:
    a = MemoryDoc("M.md", author=Author("a", "cloud"))
    b = MemoryDoc("M.md", author=Author("b", "laptop"))
    b.apply(a.write("# Notes\nfirst ü\n"))
    a.apply(b.write("# Notes\nfirst ü\nsecond\n", ["# Notes\nfirst ü\n"]))
    assert who(a) == who(b) == [("# Notes", "a"), ("first ü", "a"), ("second", "b")]
    line = blame(b)[2]
    assert line.role == "laptop" and line.at is not None
    # A third replica built from a snapshot (no history at all) knows the same.
    c = MemoryDoc.restore("M.md", [a.encode_state()])
    assert who(c) == who(a)


def test_a_stale_whole_file_write_keeps_the_original_authors() -> None:
    a = MemoryDoc("M.md", author=Author("a"))
    b = MemoryDoc("M.md", author=Author("b"))
    b.apply(a.write("one\ntwo\n"))
    a.apply(b.write("one\ntwo\nthree\n", ["one\ntwo\n"]))
    # a's agent rewrites the file whole from what it read before b's line arrived
    b.apply(a.write("one\ntwo\nfour\n", ["one\ntwo\n"]))
    assert who(b) == [("one", "a"), ("two", "a"), ("three", "b"), ("four", "a")]


def test_a_document_without_authors_blames_unknown() -> None:
    doc = MemoryDoc("M.md")
    doc.write("old\n")
    assert [line.node for line in blame(doc)] == ["unknown"]


def fill(store: Store, doc: MemoryDoc, texts: list[str]) -> None:
    for text in texts:
        current = doc.content if doc.exists else ""
        update = doc.write(text, [current])
        assert update is not None
        store.append_update("M.md", update, local=True)


def test_history_survives_compaction_and_replays_every_edit(tmp_path: Path) -> None:
    doc = MemoryDoc("M.md", author=Author("a"))
    with Store(tmp_path) as store:
        fill(store, doc, ["one\n", "one\ntwo\n"])
        store.compact_doc("M.md", doc.encode_state())
        fill(store, doc, ["one\ntwo\nthree\n", "two\nthree\n"])
        history = load(store, "M.md")
    assert [(e.added, e.removed, e.nodes) for e in history.edits] == [
        (["one"], [], ("a",)),
        (["two"], [], ("a",)),
        (["three"], [], ("a",)),
        ([], ["one"], ("a",)),
    ]
    assert history.since == history.edits[0].at
    assert history.text_at(history.edits[1].at or 0) == "one\ntwo\n"
    with pytest.raises(HistoryError, match="starts at"):
        history.text_at((history.since or 0) - 60)


def test_a_schema_1_store_is_upgraded_in_place_and_keeps_its_documents(tmp_path: Path) -> None:
    doc = MemoryDoc("M.md")
    update = doc.write("kept\n")
    assert update is not None
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE doc_base (path TEXT PRIMARY KEY, state BLOB NOT NULL);"
        "CREATE TABLE doc_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,"
        " data BLOB NOT NULL);"
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT, data BLOB);"
        "CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT, text TEXT,"
        " size INTEGER);"
        "CREATE TABLE file_state (path TEXT PRIMARY KEY, on_disk INTEGER NOT NULL);"
        "CREATE TABLE trash (seq INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT, deleted_at REAL,"
        " content TEXT);"
        "PRAGMA user_version=1;"
    )
    conn.execute("INSERT INTO doc_log (path, data) VALUES ('M.md', ?)", (update,))
    conn.commit()
    conn.close()
    with Store(tmp_path) as store:
        assert MemoryDoc.restore("M.md", store.load_doc("M.md")).content == "kept\n"
        later = MemoryDoc.restore("M.md", store.load_doc("M.md"), Author("a"))
        fill(store, later, ["kept\nnew\n"])
        history = load(store, "M.md")
    # The old update has no time: history is known from the first timed edit on.
    assert [e.at is None for e in history.edits] == [True, False]
    assert history.since == history.edits[1].at


def test_old_history_is_folded_into_a_base_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import swarm.store as store_mod

    monkeypatch.setattr(store_mod, "AUDIT_KEEP_BYTES", 1)  # keep nothing but the newest
    doc = MemoryDoc("M.md", author=Author("a"))
    with Store(tmp_path) as store:
        fill(store, doc, ["1\n", "1\n2\n", "1\n2\n3\n"])
        store.compact_doc("M.md", doc.encode_state())
        history = load(store, "M.md")
        assert history.start == "1\n2\n"  # the folded part is the start now
        assert [e.added for e in history.edits] == [["3"]]
        assert MemoryDoc.restore("M.md", store.load_doc("M.md")).content == "1\n2\n3\n"


def test_times_parse_as_users_type_them() -> None:
    assert parse_moment("-30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_moment("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_moment("2026-11-30T14:00:00+00:00") == 1796047200.0
    with pytest.raises(ValueError, match="not a time"):
        parse_moment("yesterday")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["a\n", "b\n", "c\n", "d\n"]), min_size=1, max_size=6), st.data())
def test_blame_agrees_on_two_replicas_whatever_the_writes(
    lines: list[str], data: st.DataObject
) -> None:
    a = MemoryDoc("M.md", author=Author("a"))
    b = MemoryDoc("M.md", author=Author("b"))
    b.apply(a.write("".join(lines)))
    for _ in range(3):
        writer, reader = data.draw(st.sampled_from([(a, b), (b, a)]))
        current = writer.content
        new = "".join(data.draw(st.permutations(split(current))))
        update = writer.write(new + "x\n", [current])
        if update is not None:
            reader.apply(update)
    assert who(a) == who(b)
    assert "".join(line.text + "\n" for line in blame(a)) == a.content


def split(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_undoing_a_node_reverts_its_edits_and_keeps_the_others(tmp_path: Path) -> None:
    from swarm.audit.rollback import text_without

    a = MemoryDoc("M.md", author=Author("a"))
    b = MemoryDoc("M.md", author=Author("b"))
    with Store(tmp_path) as store:

        def edit(writer: MemoryDoc, other: MemoryDoc, text: str) -> None:
            update = writer.write(text, [writer.content])
            assert update is not None
            other.apply(update)
            store.append_update("M.md", update, local=writer is a)

        edit(a, b, "keep\nold b target\n")
        edit(b, a, "keep\nb line\n")  # b replaces a line
        edit(a, b, "keep\nb line\na line\n")
        edit(b, a, "b second\nkeep\nb line\na line\n")
        history = load(store, "M.md", a)
    since = history.edits[1].at or 0.0
    assert text_without(history, a.content, "b", since) == "keep\nold b target\na line\n"
    with pytest.raises(HistoryError):
        text_without(history, a.content, "b", since - 3600)

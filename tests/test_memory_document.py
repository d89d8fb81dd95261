"""The memory model's merge rules, scenario by scenario."""

import pycrdt
import pytest

from swarm.memory import MemoryDoc, UpdateError
from swarm.memory.genesis import genesis_update
from swarm.memory.text import normalize


def exchange(*docs: MemoryDoc) -> None:
    """Full mutual sync, including the genesis fix-ups that merging produces."""
    for _ in range(3):
        states = [doc.encode_state() for doc in docs]
        followups: list[bytes] = []
        for i, doc in enumerate(docs):
            for j, state in enumerate(states):
                if i != j:
                    followups += doc.apply(state)
        if not followups:
            break
        for doc in docs:
            for update in followups:
                doc.apply(update)
    contents = {doc.content for doc in docs}
    assert len(contents) == 1, contents


def pair(content: str) -> tuple[MemoryDoc, MemoryDoc]:
    a = MemoryDoc("MEMORY.md")
    a.write(content)
    b = MemoryDoc("MEMORY.md")
    b.apply(a.encode_state())
    return a, b


def test_same_line_concurrent_edit_keeps_both_versions_as_whole_lines() -> None:
    a, b = pair("# Memory\nCurrent focus: nothing\n- keep\n")
    a.write("# Memory\nCurrent focus: the cloud launch\n- keep\n")
    b.write("# Memory\nCurrent focus: offline notes\n- keep\n")
    exchange(a, b)
    lines = a.content.splitlines()
    assert "Current focus: the cloud launch" in lines
    assert "Current focus: offline notes" in lines
    assert "Current focus: nothing" not in lines
    assert lines[0] == "# Memory" and lines[-1] == "- keep"


@pytest.mark.parametrize("final_newline", [True, False])
def test_concurrent_appends_each_on_own_line(final_newline: bool) -> None:
    end = "\n" if final_newline else ""
    a, b = pair("a\nb" + end)
    a.write("a\nb\nfrom-a" + end)
    b.write("a\nb\nfrom-b" + end)
    exchange(a, b)
    assert sorted(a.content.splitlines()) == ["a", "b", "from-a", "from-b"]
    assert a.content.endswith("\n") == final_newline


def test_genesis_of_identical_files_merges_to_one_copy() -> None:
    content = "# Memory\n- likes tea\n- works on swarm\n"
    a, b = MemoryDoc("MEMORY.md"), MemoryDoc("MEMORY.md")
    ua, ub = a.write(content), b.write(content)
    assert ua == ub  # the genesis is a pure function of the content
    exchange(a, b)
    assert a.content == content


def test_genesis_of_different_files_merges_to_union_of_lines() -> None:
    a, b, c = (MemoryDoc("MEMORY.md") for _ in range(3))
    a.write("# Memory\n- shared\n- only a\n")
    b.write("# Memory\n- shared\n- only b\n")
    c.write("# Memory\n- only c\n- shared\n- shared\n")
    exchange(a, b, c)
    lines = a.content.splitlines()
    assert sorted(lines) == sorted(
        ["# Memory", "- shared", "- shared", "- only a", "- only b", "- only c"]
    )


def test_genesis_meeting_order_does_not_matter() -> None:
    contents = ["x\ny\n", "y\nz\n", "z\nx\nw\n"]
    results = set()
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        doc = MemoryDoc("f.md")
        followups = []
        for index in order:
            stored, tail = normalize(contents[index])
            followups += doc.apply(genesis_update(stored, tail))
        results.add(doc.content)
    assert len(results) == 1
    assert sorted(results.pop().splitlines()) == ["w", "x", "y", "z"]


def test_stale_whole_file_rewrite_keeps_remote_edit() -> None:
    a, b = pair("# Memory\n- one\n")
    read_by_agent = a.content
    b.write("# Memory\n- one\n- remote two\n")
    a.apply(b.encode_state())
    rendered = a.content
    # The agent on a wrote its whole file back from what it read before the remote edit.
    a.write(read_by_agent + "- local three\n", bases=[rendered, read_by_agent])
    exchange(a, b)
    assert a.content.splitlines() == ["# Memory", "- one", "- remote two", "- local three"]


def test_stale_rewrite_with_change_of_an_old_line() -> None:
    a, b = pair("title\nfocus: x\nend\n")
    read = a.content
    b.write("title\nfocus: x\nend\nremote line\n")
    a.apply(b.encode_state())
    a.write("title\nfocus: y\nend\n", bases=[a.content, read])
    exchange(a, b)
    assert a.content == "title\nfocus: y\nend\nremote line\n"


def test_unicode_lines_survive_edits_and_merges() -> None:
    base = "👨‍👩‍👧‍👦 가족\n🇰🇷 flag\r\ncafé\ttab\n"
    a, b = pair(base)
    a.write(base + "👍🏽 a\n")
    b.write("👨‍👩‍👧‍👦 가족 수정\n🇰🇷 flag\r\ncafé\ttab\n")
    exchange(a, b)
    assert a.content == "👨‍👩‍👧‍👦 가족 수정\n🇰🇷 flag\r\ncafé\ttab\n👍🏽 a\n"


def test_delete_propagates_and_concurrent_edit_wins() -> None:
    a, b = pair("x\ny\n")
    a.delete()
    assert not a.exists
    b.apply(a.encode_state())
    assert not b.exists and b.content == ""
    c, d = pair("x\ny\n")
    c.delete()
    d.write("x\ny\nlate\n")
    exchange(c, d)
    assert c.exists and c.content == "late\n"


def test_write_after_delete_revives() -> None:
    a, b = pair("x\n")
    a.delete()
    b.apply(a.encode_state())
    b.write("again\n")
    a.apply(b.encode_state())
    assert a.exists and a.content == "again\n"


def test_adopt_is_a_union_that_deletes_nothing() -> None:
    a, _ = pair("- one\n- two\n")
    b2 = MemoryDoc("MEMORY.md")
    b2.apply(a.encode_state())
    b2.write("- one\n- local\n", adopt=True)
    assert b2.content == "- one\n- two\n- local\n"
    assert b2.write(b2.content) is None  # writing what is there produces no update


def test_no_update_when_content_unchanged() -> None:
    a, _ = pair("same\n")
    assert a.write("same\n") is None


def test_malformed_update_is_rejected_without_changing_the_doc() -> None:
    a, _ = pair("keep me\n")
    before = a.encode_state()
    with pytest.raises(UpdateError):
        a.apply(b"\x07garbage\xff\xff")
    assert a.content == "keep me\n"
    assert a.encode_state() == before


def test_missing_dependency_is_reported_as_pending() -> None:
    source = pycrdt.Doc(client_id=99)
    text = source.get("text", type=pycrdt.Text)
    text += "a\n"
    first = source.get_state()
    text += "b\n"
    second_only = source.get_update(first)
    doc = MemoryDoc("f.md")
    doc.apply(second_only)
    assert doc.has_pending
    doc.apply(source.get_update())
    assert not doc.has_pending
    assert doc.content == "a\nb\n"


def test_restore_rebuilds_identical_document() -> None:
    a, _ = pair("one\n")
    a.write("one\ntwo\n")
    restored = MemoryDoc.restore("MEMORY.md", [a.encode_state()])
    assert restored.content == a.content
    assert restored.state_vector_dict() == a.state_vector_dict()


def test_stale_append_does_not_revive_a_line_deleted_since() -> None:
    a, b = pair("keep\nremoved later\n")
    read_by_agent = a.content
    b.write("keep\n")  # another node deletes the last line
    a.apply(b.encode_state())
    # a's agent appends to what it read before the deletion reached it
    a.write(read_by_agent + "new\n", bases=[a.content, read_by_agent])
    exchange(a, b)
    assert a.content == "keep\nnew\n"


def test_writing_a_deleted_file_back_restores_it_whole() -> None:
    a, _ = pair("- kept for later\n")
    before = a.content
    a.delete()
    assert a.write(before, bases=["", before]) is not None  # `swarm restore`, or an agent
    assert a.exists and a.content == before


def test_stale_append_onto_a_deleted_file_brings_back_only_the_new_line() -> None:
    a, b = pair("- one\n- two\n")
    read_by_agent = a.content
    b.delete()  # another node deletes the file
    a.apply(b.encode_state())
    assert not a.exists
    # a's agent writes back what it read before the deletion, plus a line
    a.write(read_by_agent + "- new\n", bases=[read_by_agent])
    exchange(a, b)
    assert a.content == b.content == "- new\n"


def test_writing_an_older_trashed_version_back_restores_it_whole() -> None:
    a, _ = pair("- first\n")
    oldest = a.content
    a.write("- first\n- second\n")
    a.delete()
    assert a.write(oldest, bases=["- first\n- second\n"], kept=["- first\n- second\n", oldest])
    assert a.content == oldest


def test_updates_arriving_out_of_order_with_deletions_all_integrate() -> None:
    """pycrdt 0.14 loses one of two queued updates with missing dependencies when one carries a
    delete set (applied raw in the order below it ends with "y\\na\\n"); the document's own causal
    buffer hands pycrdt each writer's updates in order, so nothing is lost."""
    source = pycrdt.Doc(client_id=5)
    text = source.get("text", type=pycrdt.Text)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    text.insert(0, "x\n")
    text.insert(2, "a\n")
    text.insert(4, "b\n")
    with source.transaction():
        text.insert(0, "y\n")
        del text[2:4]
    doc = MemoryDoc("f.md")
    for index in (0, 2, 3, 1):
        doc.apply(updates[index])
    assert doc.stored_text == str(text) == "y\na\nb\n"
    assert not doc.has_pending


def test_revision_follows_every_change_the_state_vector_included() -> None:
    """Status digests and renders are cached per revision: an update that changes only the
    state vector (operations already deleted) must bump it, a duplicate must not."""
    source = MemoryDoc("MEMORY.md")
    first = source.write("- seed\n")
    added = source.write("- seed\n- gone again\n")
    removed = source.write("- seed\n")
    assert first and added and removed
    doc = MemoryDoc("MEMORY.md")
    doc.apply(first)
    seen = doc.revision
    doc.apply(pycrdt.merge_updates(added, removed))  # text unchanged, state vector grows
    assert doc.content == "- seed\n"
    assert doc.revision > seen
    assert doc.state_vector_dict() == source.state_vector_dict()
    seen = doc.revision
    doc.apply(first)  # nothing new
    assert doc.revision == seen


def test_a_new_empty_file_is_an_update_that_makes_it_exist_elsewhere() -> None:
    a = MemoryDoc("memory/topic.md")
    update = a.write("")
    assert update is not None, "an empty new file must reach the swarm"
    b = MemoryDoc("memory/topic.md")
    assert b.is_empty
    b.apply(update)
    assert b.exists and b.content == "" and not b.is_empty
    assert a.write("") is None  # written again: nothing new
    c = MemoryDoc("memory/topic.md")
    c.write("- filled elsewhere\n")  # a genesis on another node meets the empty file
    exchange(a, b, c)
    assert a.content == "- filled elsewhere\n" and a.exists


def test_appends_keep_the_text_pycrdt_holds() -> None:
    """A pure append notes the new text itself (no copy out of pycrdt): it must be what pycrdt
    holds, with multi-byte characters and after remote changes in between."""
    a, b = pair("# Memory\n")
    text = "# Memory\n"
    for i, line in enumerate(["- café ☕\n", "- 🦀 crab\n", "- plain\n"]):
        text += line
        update = a.write(text)
        assert update is not None
        assert a.stored_text == str(a._text)
        b.apply(update)
        if i == 1:
            remote = b.write(b.content + "- from b\n")
            assert remote is not None
            a.apply(remote)
            text = a.content
    assert a.content == b.content == str(a._text)

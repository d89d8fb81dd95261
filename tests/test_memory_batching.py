"""Property: merging a burst of updates per path (what the outbox publishes) never changes what a
receiver ends up with, and keeps every merged update within the size limit."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.memory import MemoryDoc
from swarm.memory.batching import coalesce, merge_runs

PATHS = ("MEMORY.md", "memory/notes.md", "SOUL.md")

edits = st.lists(
    st.tuples(
        st.sampled_from(PATHS),
        st.sampled_from(("append", "replace", "delete")),
        st.text(alphabet="ab 😀é\n", max_size=12),
    ),
    min_size=1,
    max_size=40,
)


def _write(doc: MemoryDoc, how: str, text: str) -> bytes | None:
    lines = doc.content.splitlines(keepends=True)
    if how == "append" or not lines:
        return doc.write(doc.content + text + "\n")
    if how == "replace":
        lines[len(text) % len(lines)] = text + "\n"
    else:
        del lines[len(text) % len(lines)]
    return doc.write("".join(lines))


@settings(max_examples=150, deadline=None)
@given(edits, st.integers(min_value=1, max_value=400))
def test_coalesced_updates_give_the_same_documents(script: list, limit: int) -> None:
    source = {path: MemoryDoc(path) for path in PATHS}
    updates: list[tuple[str, bytes]] = []
    for path, how, text in script:
        update = _write(source[path], how, text)
        if update is not None:
            updates.append((path, update))

    merged = coalesce(updates, limit)

    by_path = {path: [u for p, u in updates if p == path] for path in PATHS}
    for path, update in merged:
        if len(update) > limit:  # only an update that alone was already too big
            assert update in by_path[path]
    assert len(merged) <= len(updates)
    one_by_one = {path: MemoryDoc(path) for path in PATHS}
    for path, update in updates:
        one_by_one[path].apply(update)
    receiver = {path: MemoryDoc(path) for path in PATHS}
    for path, update in merged:
        receiver[path].apply(update)
    for path in PATHS:
        assert receiver[path].content == one_by_one[path].content == source[path].content
        assert receiver[path].state_vector_dict() == source[path].state_vector_dict()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(20, 80))
def test_log_pages_merged_by_writer_run_converge(seed: int, steps: int) -> None:
    """Three writers append to one file and to one shared log (in the order they publish);
    each reads the log in pages of random length from its own cursor and applies a page the way
    catch-up does, its own entries skipped and each writer's adjacent updates merged. Every
    replica must end identical, with every line written."""
    rng = random.Random(seed)
    docs = [MemoryDoc("MEMORY.md") for _ in range(3)]
    log: list[tuple[int, bytes]] = []
    cursors = [0, 0, 0]
    written: set[str] = set()

    def catch_up(who: int, limit: int) -> None:
        page = log[cursors[who] : cursors[who] + limit]
        cursors[who] += len(page)
        theirs = [update for writer, update in page if writer != who]
        for update, _count in merge_runs(theirs):
            for followup in docs[who].apply(update):
                log.append((who, followup))

    for step in range(steps):
        who = rng.randrange(3)
        if rng.random() < 0.6:
            line = f"- {who} note {step}"
            update = docs[who].write(docs[who].content + line + "\n")
            if update is not None:
                written.add(line)
                log.append((who, update))
        else:
            catch_up(who, rng.randint(1, 12))
    while any(cursor < len(log) for cursor in cursors):
        for who in range(3):
            catch_up(who, len(log))
    contents = {doc.content for doc in docs}
    assert len(contents) == 1
    assert written <= set(contents.pop().splitlines())


def test_only_adjacent_updates_of_one_writer_are_merged() -> None:
    a, b = MemoryDoc("f.md"), MemoryDoc("f.md")
    genesis = a.write("# f\n")  # written by the content's own genesis writer
    assert genesis is not None
    b.apply(genesis)
    a1, a2 = a.write("# f\n- a1\n"), a.write("# f\n- a1\n- a2\n")
    b1 = b.write("# f\n- b1\n")
    a3 = a.write("# f\n- a1\n- a2\n- a3\n")
    assert a1 and a2 and b1 and a3
    runs = merge_runs([genesis, a1, a2, b1, a3])
    assert [count for _update, count in runs] == [1, 2, 1, 1]

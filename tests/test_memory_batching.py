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
@given(st.integers(0, 2**32 - 1), st.integers(20, 60))
def test_bursts_merged_by_writer_run_converge_whatever_the_arrival_order(
    seed: int, steps: int
) -> None:
    """Three writers; each receiver takes random bursts of what is queued for it, in any order,
    and applies them as `merge_runs` groups them (what a node does with a burst). Merging across
    writers or over a gap would let pycrdt lose an update; this must converge with every line."""
    rng = random.Random(seed)
    docs = [MemoryDoc("MEMORY.md") for _ in range(3)]
    seed_update = docs[0].write("# Memory\n")
    assert seed_update is not None
    for doc in docs[1:]:
        doc.apply(seed_update)
    queues: list[list[bytes]] = [[], [], []]
    written: set[str] = set()

    def send(source: int, update: bytes) -> None:
        for other in range(3):
            if other != source:
                queues[other].append(update)

    for step in range(steps):
        who = rng.randrange(3)
        if rng.random() < 0.6:
            line = f"- {who} note {step}"
            update = docs[who].write(docs[who].content + line + "\n")
            assert update is not None
            written.add(line)
            send(who, update)
        elif queues[who]:
            queue = queues[who]
            burst = [queue.pop(rng.randrange(len(queue))) for _ in range(rng.randint(1, 5))
                     if queue]  # fmt: skip
            for update, _count in merge_runs(burst):
                for followup in docs[who].apply(update):
                    send(who, followup)
    for who in range(3):
        for update, _count in merge_runs(queues[who]):
            docs[who].apply(update)
    contents = {doc.content for doc in docs}
    assert len(contents) == 1
    assert written <= set(contents.pop().splitlines())

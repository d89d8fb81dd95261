"""Memory a long-running daemon must give back: documents it drops, state of files it forgets.

A daemon runs for months; anything it keeps per message, per status request or per rebuilt
document grows its RSS until it is restarted (issue 18 item 14: 56 MB to 148 MB in 30 minutes of
chaos). These tests pin the places that leaked; bench/chaos.py measures the RSS over time.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from swarm import heap
from swarm.heap import Trim, TrimSchedule, release_free_memory
from swarm.memory import MemoryDoc
from swarm.node import Node, NodeOptions
from swarm.status import redis_vectors
from swarm.store import Store
from swarm.wire import Kind


def _live_docs() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, MemoryDoc))


def _edited(path: str) -> tuple[MemoryDoc, MemoryDoc]:
    """Two documents of one file that have written, merged, deleted and revived it."""
    a, b = MemoryDoc(path), MemoryDoc(path)
    a.write("# notes\n- one\n")
    b.apply(a.encode_state())
    b.write("# notes\n- one\n- two\n")
    a.apply(b.encode_state())
    a.delete()
    b.apply(a.encode_state())
    b.write("# back\n")
    return a, b


def test_a_document_no_longer_referenced_is_freed() -> None:
    a, b = _edited("MEMORY.md")
    assert b.revision > 0  # its observers ran
    refs = [weakref.ref(a), weakref.ref(b)]
    del a, b
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_observers_still_see_every_change_of_a_live_document() -> None:
    a, b = _edited("MEMORY.md")
    gc.collect()
    a.apply(b.encode_state())
    before = b.revision
    a.write("# back\n- three\n")
    b.apply(a.encode_state())
    assert b.revision > before
    assert b.content == a.content == "# back\n- three\n"


def test_a_status_computed_inside_the_daemon_leaves_no_document_behind() -> None:
    """The status page and the control socket compute `swarm status` in the daemon (every 1.5 s
    while a page is open): each computation rebuilds every file's document from Redis."""
    docs = [MemoryDoc(f"f{i}.md") for i in range(20)]
    for i, doc in enumerate(docs):
        doc.write(f"- fact {i}\n")
    log = [(f"1-{i}", doc.path, Kind.UPDATE, doc.encode_state()) for i, doc in enumerate(docs)]
    del docs, doc
    baseline = _live_docs()
    for _ in range(3):
        held = redis_vectors({}, log)
        assert len(held.vectors) == 20
    assert _live_docs() <= baseline


async def test_a_document_rebuilt_after_a_rejected_update_frees_the_old_one(tmp_path: Path) -> None:
    """An update that would make the file larger than the limit is refused and the document
    rebuilt from the store: the one that took the update in must not stay in memory."""
    root, state = tmp_path / "memory", tmp_path / "state"
    root.mkdir()
    with Store(state) as store:
        node = Node(NodeOptions(root=root, state_dir=state, max_bytes=1024), store)
        peer = MemoryDoc("MEMORY.md")
        small = peer.write("# notes\n")
        assert small is not None
        assert node.apply_remote("MEMORY.md", small, "peer")
        old = weakref.ref(node.docs["MEMORY.md"])
        big = peer.write("# notes\n" + "- a long fact about the user\n" * 100)
        assert big is not None
        assert not node.apply_remote("MEMORY.md", big, "peer")
        assert node.docs["MEMORY.md"].content == "# notes\n"
        gc.collect()
        assert old() is None


def test_freed_memory_goes_back_to_the_os_at_rest_and_periodically_under_steady_work() -> None:
    """glibc hands freed pages back only when asked (malloc_trim). Asked only once work went
    quiet, a daemon under steady edits never asked, and its RSS climbed for as long as they
    went on."""
    now = [0.0]
    schedule = TrimSchedule(busy_every=30.0, clock=lambda: now[0])
    due = []
    work = 0
    for second in range(1, 121):  # two minutes of edits, every second some
        now[0] = float(second)
        work += 7
        due.append(schedule.due(work))
    assert due.count(Trim.BUSY) == 4  # every 30 s, not every pass
    assert Trim.AT_REST not in due
    now[0] += 1
    assert schedule.due(work) is Trim.AT_REST  # the burst went quiet: caches dropped too
    for _ in range(100):  # idle: nothing to give back, nothing done
        now[0] += 1
        assert schedule.due(work) is None


def test_trimming_is_skipped_where_there_is_no_c_library_to_ask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap.ctypes.util, "find_library", lambda name: None)
    heap._malloc_trim.cache_clear()
    try:
        assert release_free_memory() is False
    finally:
        heap._malloc_trim.cache_clear()

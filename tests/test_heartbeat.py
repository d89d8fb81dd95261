"""One heartbeat schema: what replication writes is what status reads; a malformed field from a
peer costs only that field."""

from __future__ import annotations

import base64

from swarm.heartbeat import FileFacts, Heartbeat
from swarm.memory import MemoryDoc, vector


def test_what_a_node_writes_reads_back_the_same() -> None:
    doc = MemoryDoc("MEMORY.md")
    doc.write("- fact\n")
    sv = doc.state_vector()
    facts = FileFacts(sv=base64.b64encode(sv).decode(), digest="d", size=7, hash="h", changed=5.0)
    beat = Heartbeat(role="cloud", pid=42, ready=True, outbox=3, problems={"redis": "down"})
    written = {**beat.model_dump(exclude={"files"}), "files": {"MEMORY.md": facts.model_dump()}}
    read = Heartbeat.read(written)
    assert (read.role, read.pid, read.ready, read.outbox) == ("cloud", 42, True, 3)
    assert read.problems == {"redis": "down"}
    assert read.file_facts() == {"MEMORY.md": facts}
    assert read.file_facts()["MEMORY.md"].state_vector() == vector.decode(sv)


def test_malformed_fields_fall_back_to_their_defaults_one_by_one() -> None:
    read = Heartbeat.read(
        {
            "role": 7,
            "pid": "42",
            "ready": "yes",  # only a real true is ready
            "outbox": True,
            "problems": {"redis": 1},
            "disk": {"a.md": {"state": "error", "reason": None, "for_s": "1"}, "b.md": "x"},
            "files": {"bad.md": {"sv": "not base64!"}, "worse.md": "nope", "none.md": {}},
            "host": "h",
        }
    )
    assert (read.role, read.pid, read.ready, read.outbox, read.host) == ("", None, False, 0, "h")
    assert read.problems == {"redis": "1"}
    assert read.file_facts() == {}
    entries = read.disk_entries()
    assert list(entries) == ["a.md"] and entries["a.md"].reason == "" and not entries["a.md"].for_s
    assert Heartbeat.read("not a dict").ready is False  # type: ignore[arg-type]

"""`swarm status` promises the same bytes on every disk, not only the same CRDT state: a node
whose render is pending or failed, or whose content differs, is not converged, and says why."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from test_status import copy_of, heartbeat, record, validate

from swarm.memory import MemoryDoc
from swarm.status import STUCK_S, NodeState, RedisHeld, build_view, redis_vectors
from swarm.wire import Kind


@pytest.fixture
def memory() -> MemoryDoc:
    doc = MemoryDoc("MEMORY.md")
    doc.write("# memory\n- first\n")
    return doc


def beat(docs: dict[str, MemoryDoc], **info: Any) -> dict[str, Any]:
    """A heartbeat whose files carry their content hash, as nodes send them."""
    sent = heartbeat(docs, **info)
    for path, doc in docs.items():
        digest = hashlib.blake2b(doc.content.encode(), digest_size=16).hexdigest()
        sent["files"][path]["hash"] = digest
    return sent


def disk(state: str, reason: str | None = None, for_s: float = 0.0) -> dict[str, Any]:
    return {"MEMORY.md": {"state": state, "reason": reason, "for_s": for_s}}


def test_a_failed_render_is_an_error_with_the_file_and_the_reason(memory: MemoryDoc) -> None:
    reason = "cannot write /m/MEMORY.md: No space left on device"
    a = record("a", beat({"MEMORY.md": copy_of(memory)}))
    b = record("b", beat({"MEMORY.md": copy_of(memory)}, disk=disk("error", reason, 3.0)))
    view = build_view("team", 1_800_000_000_000, [a, b], RedisHeld())
    node_b = view.nodes[1]
    assert not view.converged and not node_b.converged and node_b.lag == 0
    assert node_b.state is NodeState.ERROR
    assert node_b.disk_differs == {"MEMORY.md": f"render failed: {reason}"}
    assert node_b.last_error == f"MEMORY.md: {reason}"
    assert [(f.path, f.converged, f.disk_differs) for f in view.files] == [
        ("MEMORY.md", False, ("b",))
    ]
    assert view.nodes[0].converged
    validate(view.to_json())


def test_a_render_pending_for_a_moment_is_syncing_and_for_long_behind(memory: MemoryDoc) -> None:
    a = record("a", beat({"MEMORY.md": copy_of(memory)}))
    moment = record("b", beat({"MEMORY.md": copy_of(memory)}, disk=disk("pending", for_s=0.01)))
    view = build_view("team", 1_800_000_000_000, [a, moment], RedisHeld())
    assert not view.converged
    assert view.nodes[1].state is NodeState.SYNCING
    assert view.nodes[1].disk_differs["MEMORY.md"].startswith("render pending for")

    stuck = record("b", beat({"MEMORY.md": copy_of(memory)}, disk=disk("pending", for_s=STUCK_S)))
    view = build_view("team", 1_800_000_000_000, [a, stuck], RedisHeld())
    assert not view.converged and view.nodes[1].state is NodeState.BEHIND
    validate(view.to_json())


def test_content_that_differs_under_the_same_state_is_not_converged(memory: MemoryDoc) -> None:
    odd = beat({"MEMORY.md": copy_of(memory)})
    odd["files"]["MEMORY.md"]["hash"] = "0" * 32
    records = [
        record("a", beat({"MEMORY.md": copy_of(memory)})),
        record("b", odd),
        record("c", beat({"MEMORY.md": copy_of(memory)})),
    ]
    view = build_view("team", 1_800_000_000_000, records, RedisHeld())
    assert not view.converged
    assert [n.node for n in view.nodes if not n.converged] == ["b"]
    assert "content differs" in view.nodes[1].disk_differs["MEMORY.md"]
    expected = hashlib.blake2b(memory.content.encode(), digest_size=16).hexdigest()
    assert view.files[0].hash == expected
    validate(view.to_json())


def test_a_path_a_node_refuses_does_not_keep_the_swarm_from_converging(
    memory: MemoryDoc,
) -> None:
    notes = MemoryDoc("notes/x.md")
    notes.write("- only a syncs notes/\n")
    a = record("a", beat({"MEMORY.md": copy_of(memory), notes.path: notes}))
    refused = {notes.path: "private, ignored or not included on this node"}
    b = record("b", beat({"MEMORY.md": copy_of(memory)}, refused=refused))
    view = build_view("team", 1_800_000_000_000, [a, b], RedisHeld())
    assert view.converged, view.to_json()
    assert view.nodes[1].refused == (notes.path,)
    validate(view.to_json())


def test_what_redis_holds_that_no_node_takes_is_no_target(memory: MemoryDoc) -> None:
    """A peer published a path no file system takes and garbage for `bad.md`: no node holds
    either, and no node lags for them."""
    deep = "/".join(["d"] * 100) + "/x.md"
    crafted = MemoryDoc(deep)
    update = crafted.write("- deep\n")
    assert update is not None
    log = [
        ("1-0", deep, Kind.UPDATE, update),
        ("2-0", "bad.md", Kind.UPDATE, b"\x01\x02garbage"),
        ("3-0", memory.path, Kind.STATE, memory.encode_state()),
    ]
    held = redis_vectors({}, log)
    assert set(held.vectors) == {memory.path}
    view = build_view("team", 1_800_000_000_000, [record("a", beat({"MEMORY.md": memory}))], held)
    assert view.converged and [f.path for f in view.files] == ["MEMORY.md"]

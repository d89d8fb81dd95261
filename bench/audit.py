"""What the audit trail costs: a local edit with and without the author stamps (time, update and
document size), and how long `swarm blame` and `swarm log` take on a file with many edits.

    .venv/bin/python -m bench.audit [EDITS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from swarm.audit.blame import blame
from swarm.audit.history import load
from swarm.memory import MemoryDoc
from swarm.memory.stamps import Author
from swarm.store import Store


def edits(author: Author | None, count: int) -> tuple[float, int, int, MemoryDoc, list[bytes]]:
    """`count` one-line appends: seconds per edit, mean update bytes, final state bytes."""
    doc = MemoryDoc("MEMORY.md", author=author)
    text = "".join(f"- seed line {i}\n" for i in range(200))
    updates = [doc.write(text) or b""]
    started = time.perf_counter()
    for i in range(count):
        current = doc.content
        updates.append(doc.write(current + f"- note {i}\n", [current]) or b"")
    seconds = (time.perf_counter() - started) / count
    mean = sum(len(u) for u in updates[1:]) // count
    return seconds, mean, len(doc.encode_state()), doc, updates


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for label, author in (("without stamps", None), ("with stamps", Author("node-a", "cloud"))):
        seconds, mean, state, doc, updates = edits(author, count)
        print(f"{label:15} {count} appends: {seconds * 1e6:7.1f} us/edit, "
              f"{mean} B/update, state {state / 1024:.1f} KiB")  # fmt: skip
    started = time.perf_counter()
    lines = blame(doc)
    print(f"blame of {len(lines)} lines: {(time.perf_counter() - started) * 1000:.1f} ms")
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp)) as store:
        for update in updates:
            store.append_update("MEMORY.md", update, local=False)
        started = time.perf_counter()
        history = load(store, "MEMORY.md", doc)
        took = time.perf_counter() - started
        print(f"log of {len(history.edits)} edits: {took * 1000:.1f} ms")


if __name__ == "__main__":
    main()

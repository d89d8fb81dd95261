"""Property: three replicas, random edit scripts, random delivery (reordered, duplicated, delayed)
-> identical files everywhere, and every appended line that nobody deleted present exactly once."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from swarm.memory import MemoryDoc

PATHS = ("MEMORY.md", "memory/2026-11-25.md")
FLAVOURS = ("plain", "👨‍👩‍👧 가족", "🇰🇷 café", "tab\tx", "crlf\r", "👍🏽")
REPLICAS = 3


@dataclass
class Replica:
    docs: dict[str, MemoryDoc] = field(default_factory=dict)
    # versions this replica's agent could have read, newest first: what was rendered, and what
    # the agent itself wrote (own=True). An agent always sees its own last write, so it bases a
    # write on that version or a newer render, never on anything older.
    history: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def doc(self, path: str) -> MemoryDoc:
        if path not in self.docs:
            self.docs[path] = MemoryDoc(path)
        return self.docs[path]

    def render(self, path: str, *, own: bool = False) -> None:
        content = self.doc(path).content
        versions = self.history.setdefault(path, [])
        if own or not versions or versions[0][0] != content:
            versions.insert(0, (content, own))

    def bases(self, path: str) -> list[str]:
        found: list[str] = []
        for text, own in self.history.get(path, []):
            found.append(text)
            if own:
                break
        return found

    def last_own(self, path: str) -> str | None:
        return next((text for text, own in self.history.get(path, []) if own), None)


@dataclass
class World:
    replicas: list[Replica]
    queues: list[list[tuple[str, bytes]]]  # per receiving replica
    appended: dict[str, set[str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    counter: int = 0

    def unique(self, flavour: str) -> str:
        self.counter += 1
        return f"L{self.counter} {flavour}"

    def publish(self, source: int, path: str, update: bytes | None) -> None:
        if update is None:
            return
        for index, queue in enumerate(self.queues):
            if index != source:
                queue.append((path, update))

    def deliver(self, target: int, rng: random.Random, count: int) -> None:
        queue = self.queues[target]
        for _ in range(min(count, len(queue))):
            pick = rng.randrange(len(queue))
            path, update = queue[pick]
            if rng.random() < 0.7:  # otherwise keep it queued as a duplicate for later
                queue.pop(pick)
            updates = [update]
            if rng.random() < 0.15:
                # a sync reply too: some peer's whole state of the file, old parts included
                peer = self.replicas[rng.randrange(len(self.replicas))]
                updates.insert(rng.randrange(2), peer.doc(path).encode_state())
            for data in updates:
                for followup in self.replicas[target].doc(path).apply(data):
                    self.publish(target, path, followup)
            self.replicas[target].render(path)


def lines_of(content: str) -> list[str]:
    return [line.rstrip("\r") for line in content.split("\n") if line]


operation = st.tuples(
    st.sampled_from(
        [
            "append",
            "append",
            "edit",
            "drop",
            "delete_file",
            "stale_append",
            "toggle_eol",
            "deliver",
            "deliver",
        ]
    ),
    st.integers(0, REPLICAS - 1),
    st.sampled_from(PATHS),
    st.integers(0, 1000),
    st.sampled_from(FLAVOURS),
)


def _op(kind: str, who: int, number: int = 0) -> tuple[str, int, str, int, str]:
    return (kind, who, "MEMORY.md", number, "plain")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed_content=st.booleans(),
    script=st.lists(operation, min_size=1, max_size=40),
    rng_seed=st.integers(0, 2**32 - 1),
)
# Replica 0 deletes the file; replica 1 renders the deletion, then its agent writes back the
# text it held from before plus one line: only that line may come back.
@example(
    seed_content=True,
    script=[
        *[_op("append", 0)] * 4,
        *[_op("append", 1)] * 2,
        _op("deliver", 0, 3),
        _op("delete_file", 0),
        _op("deliver", 1, 2),
        *[_op("append", 0)] * 6,
        _op("stale_append", 1),
    ],
    rng_seed=1,
)
def test_replicas_converge_and_lose_nothing(
    seed_content: bool, script: list[tuple[str, int, str, int, str]], rng_seed: int
) -> None:
    rng = random.Random(rng_seed)
    world = World([Replica() for _ in range(REPLICAS)], [[] for _ in range(REPLICAS)])
    if seed_content:  # every replica imports the same existing file: must not double
        seed = "# Memory\n- seed one\n- seed two\n"
        world.appended["MEMORY.md"] = {"# Memory", "- seed one", "- seed two"}
        for index, replica in enumerate(world.replicas):
            world.publish(index, "MEMORY.md", replica.doc("MEMORY.md").write(seed))
            replica.render("MEMORY.md", own=True)

    for kind, who, path, number, flavour in script:
        replica = world.replicas[who]
        doc = replica.doc(path)
        current = doc.content
        lines = current.split("\n")
        if kind == "deliver":
            world.deliver(who, rng, number % 6 + 1)
            continue
        if kind in ("append", "stale_append"):
            line = world.unique(flavour)
            world.appended.setdefault(path, set()).add(line.rstrip("\r"))
            bases = replica.bases(path)
            base = bases[rng.randrange(len(bases))] if kind == "stale_append" and bases else current
            sep = "" if not base or base.endswith("\n") else "\n"
            new = base + sep + line + ("\n" if number % 2 else "")
            update = doc.write(new, bases=bases)
        elif kind in ("edit", "drop"):
            # Only lines the agent has certainly read (they were in its own last write): whether
            # an agent deleted a line it had just been shown or never saw it is undecidable.
            seen = set(lines_of(replica.last_own(path) or ""))
            targets = [i for i, text in enumerate(lines) if text and text.rstrip("\r") in seen]
            if not targets:
                continue
            index = targets[number % len(targets)]
            world.deleted.add(lines[index].rstrip("\r"))
            if kind == "edit":
                line = world.unique(flavour)
                world.appended.setdefault(path, set()).add(line.rstrip("\r"))
                lines[index] = line
            else:
                del lines[index]
            update = doc.write("\n".join(lines), bases=replica.bases(path))
        elif kind == "delete_file" and doc.exists:
            world.deleted.update(lines_of(current))
            update = doc.delete()
        elif kind == "toggle_eol" and current:
            new = current[:-1] if current.endswith("\n") else current + "\n"
            update = doc.write(new, bases=replica.bases(path))
        else:
            continue
        world.publish(who, path, update)
        replica.render(path, own=True)

    # Heal: deliver everything, in random order, until nothing is in flight.
    while any(world.queues):
        for target in range(REPLICAS):
            world.deliver(target, rng, len(world.queues[target]))

    for path in PATHS:
        docs = [replica.doc(path) for replica in world.replicas]
        contents = {d.content for d in docs}
        assert len(contents) == 1, f"{path} diverged: {contents}"
        assert len({d.exists for d in docs}) == 1
        final = lines_of(contents.pop())
        for line in world.appended.get(path, set()) - world.deleted:
            assert final.count(line) == 1, f"{line!r} appears {final.count(line)}x in {final}"
        for line in world.deleted:
            assert line not in final, f"deleted {line!r} came back in {final}"


POOL = ["# Memory", "- shared", "- 👨‍👩‍👧 가족", "- café 🇰🇷", "- tab\there", "", "- 👍🏽 ok"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(
        st.tuples(st.lists(st.sampled_from(POOL), min_size=1, max_size=8), st.booleans()),
        min_size=2,
        max_size=4,
    ),
    rng_seed=st.integers(0, 2**32 - 1),
)
def test_independent_imports_merge_to_the_union_of_their_lines(
    files: list[tuple[list[str], bool]], rng_seed: int
) -> None:
    """Each replica imports its own version of one file (a genesis); however the geneses and
    their fix-ups meet, every replica ends with the same text holding each line as often as
    the version that had it most often (a line is compared with its line ending)."""
    rng = random.Random(rng_seed)
    docs = [MemoryDoc("MEMORY.md") for _ in files]
    pending: list[list[bytes]] = [[] for _ in files]
    for index, (lines, crlf) in enumerate(files):
        end = "\r\n" if crlf else "\n"
        update = docs[index].write("".join(line + end for line in lines))
        assert update is not None
        for other in range(len(docs)):
            if other != index:
                pending[other].append(update)
    while any(pending):
        target = rng.choice([i for i, queue in enumerate(pending) if queue])
        update = pending[target].pop(rng.randrange(len(pending[target])))
        for followup in docs[target].apply(update):
            for other in range(len(docs)):
                if other != target:
                    pending[other].append(followup)
    contents = {doc.content for doc in docs}
    assert len(contents) == 1
    merged = Counter(contents.pop().splitlines(keepends=True))
    most: Counter[str] = Counter()
    for lines, crlf in files:  # a line ending differently is a different line
        most |= Counter(line + ("\r\n" if crlf else "\n") for line in lines)
    assert merged == most

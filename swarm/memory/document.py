"""`MemoryDoc`: one memory file as one pycrdt document.

The document holds the file's lines in the root `Text` "text" (always fully terminated, see
`text.normalize`) and small facts in the root `Map` "meta": the virtual tail, whether the file
exists, and the genesis records. Every method runs on the event loop thread: a pycrdt Doc is not
thread-safe.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pycrdt

from swarm.memory import genesis, vector
from swarm.memory.diff import LineEdit, insertions_only, line_edits
from swarm.memory.merge import choose_base, merge3
from swarm.memory.stamps import Author, stamp
from swarm.memory.text import normalize, render, split_lines
from swarm.memory.ytext import apply_line_edits

EXISTS_KEY = "exists"


class UpdateError(ValueError):
    """A CRDT update that could not be applied; the document must be rebuilt from the store."""


def new_client_id() -> int:
    """A fresh client id per document and process run: reusing one after a crash that lost local
    updates would mint operations with ids the swarm already saw."""
    return random.randint(1, (1 << 32) - 1)


def _prefer_existing_terminator(stored: str, tail: str, current: list[str]) -> tuple[str, str]:
    """A file whose final newline was just removed: its last line gets a virtual terminator, and
    that should be the one the line already has, or the line would count as changed (replaced,
    and so revived if another node deleted it meanwhile)."""
    if not tail:
        return stored, tail
    bare = stored[: -len(tail)]
    last = bare[bare.rfind("\n") + 1 :]
    existing = set(current)
    if last + tail in existing:
        return stored, tail
    for other in ("\n", "\r\n"):
        if other != tail and last + other in existing:
            return bare + other, other
    return stored, tail


def _weak(method: Callable[[Any], None]) -> Callable[[Any], None]:
    """An observer that does not keep its document alive. pycrdt keeps a type's observers in a
    Rust subscription the garbage collector cannot see into: an observer holding the
    `MemoryDoc` closes a cycle no collection ever breaks, so every document replaced or dropped
    (a rebuild, a status computed in the daemon) stayed in memory with its whole CRDT state."""
    ref = weakref.WeakMethod(method)

    def observer(event: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(event)

    return observer


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError | GeneratorExit)


class MemoryDoc:
    def __init__(
        self, path: str, *, client_id: int | None = None, author: Author | None = None
    ) -> None:
        self.path = path
        self.author = author  # set: local changes record who made them (swarm/memory/stamps.py)
        self._doc: pycrdt.Doc[Any] = pycrdt.Doc(
            client_id=client_id if client_id is not None else new_client_id()
        )
        self._text = self._doc.get(genesis.TEXT_ROOT, type=pycrdt.Text)
        self._meta = self._doc.get(genesis.META_ROOT, type=pycrdt.Map)
        self._captured: list[bytes] | None = None
        # Reads are far more frequent than changes (every apply compares content before and
        # after): cached here, dropped by the transaction observer whenever the document changes.
        self._text_cache: str | None = None
        self._tail_cache: str | None = None
        self._exists_cache: bool | None = None
        self._meta_changed = True  # genesis records may need resolving
        self._vector_cache: vector.StateVector | None = None
        # Bumped by every change (text, meta or state vector): "did it change?" without reading
        # the text. Kept by cheap per-type observers: a document-wide observer would make
        # pycrdt encode every transaction as an update (~100 µs per remote apply), so one is
        # attached only while a local change is being captured.
        self.revision = 0
        self._changed = False
        self._text.observe(_weak(self._on_text))
        self._meta.observe(_weak(self._on_meta))
        self._resolved_geneses: frozenset[int] = frozenset()
        self._held: list[tuple[int, int, bytes]] = []  # (client, first clock, update)
        self.broken = False

    @classmethod
    def restore(
        cls, path: str, updates: Iterable[bytes], author: Author | None = None
    ) -> MemoryDoc:
        """Rebuild from persisted updates (base state first); raises UpdateError if one is bad."""
        doc = cls(path, author=author)
        for update in updates:
            doc._apply_raw(update)
        return doc

    def integrate(self, update: bytes) -> None:
        """Apply an update as `restore` does: no genesis fix-up (UpdateError if it is bad)."""
        self._apply_raw(update)

    # -- reading ---------------------------------------------------------------------------

    @property
    def stored_text(self) -> str:
        if self._text_cache is None:
            self._text_cache = str(self._text)
        return self._text_cache

    @property
    def _exists_flag(self) -> bool:
        if self._exists_cache is None:
            self._exists_cache = self._meta.get(EXISTS_KEY, True) is not False
        return self._exists_cache

    def drop_caches(self) -> None:
        """Forget the cached text (an idle document needs no Python copy of it)."""
        self._text_cache = None

    @property
    def tail(self) -> str:
        if self._tail_cache is None:
            tail = self._meta.get(genesis.TAIL_KEY, "")
            self._tail_cache = tail if isinstance(tail, str) else ""
        return self._tail_cache

    @property
    def content(self) -> str:
        """The file as it should be on disk."""
        return render(self.stored_text, self.tail)

    @property
    def stored_bytes(self) -> int:
        """UTF-8 size of the stored text, without building it: at least the file's size, at
        most two bytes more (the virtual terminator)."""
        return len(self._text)

    def content_bytes(self) -> int:
        """The file's size in bytes."""
        return len(self.content.encode("utf-8"))

    @property
    def exists(self) -> bool:
        """A deleted file is one whose text is empty and whose exists flag is down: an edit made
        concurrently with the deletion leaves text behind, and then the edit wins."""
        return bool(self.stored_text) or self._exists_flag

    @property
    def is_empty(self) -> bool:
        """True while nothing at all is known about this file (no operation ever applied)."""
        return not self.state_vector_dict()

    def state_vector(self) -> bytes:
        return self._doc.get_state()

    def state_vector_dict(self) -> vector.StateVector:
        if self._vector_cache is None:
            self._vector_cache = vector.decode(self._doc.get_state())
        return dict(self._vector_cache)

    @property
    def crdt(self) -> pycrdt.Doc[Any]:
        """The pycrdt document itself, for readers of its audit facts (swarm/audit/)."""
        return self._doc

    def encode_state(self) -> bytes:
        return self._doc.get_update()

    def diff_since(self, state_vector: bytes) -> bytes:
        """What a peer with this state vector lacks."""
        return self._doc.get_update(state_vector)

    @property
    def has_pending(self) -> bool:
        """True while an update waits for operations that never arrived (invisible in the state
        vector): anti-entropy must fetch them."""
        return bool(self._held)

    # -- changing ----------------------------------------------------------------------------

    def apply(self, update: bytes) -> list[bytes]:
        """Merge a remote update; returns the local follow-up updates it caused (genesis fix-ups)
        that must be persisted and published like local edits."""
        self._apply_raw(update)
        return self.settle()

    def write(
        self,
        content: str,
        bases: Sequence[str] = (),
        *,
        adopt: bool = False,
        kept: Sequence[str] = (),
    ) -> bytes | None:
        """Turn an agent's write of the whole file into a local update (None if nothing changed).

        `bases` are earlier versions of the file as this node rendered or read it, newest first;
        the write is diffed against the one it derives from and merged with everything since.
        `adopt` is for a node seeing a file for the first time while the swarm already has a
        document for it: the result is the union of both, nothing the swarm has is deleted.
        `kept` are deleted versions of the file kept in the trash: writing one of them (or a
        base) back onto the deleted file restores it whole.
        """
        stored, tail = normalize(content)
        if self.is_empty and stored:
            return self._capture(
                lambda: self._doc.apply_update(genesis.genesis_update(stored, tail))
            )
        if self.is_empty:
            # A new empty file: no line to import, but the file itself must reach the swarm.
            return self._capture(self._declare_exists)
        current = self.stored_text
        if (
            not adopt
            and not tail
            and not self.tail
            and stored.startswith(current)
            and all(current.startswith(normalize(b)[0]) for b in bases)
        ):
            # A pure append onto a history that only grew, the usual agent write: it keeps every
            # line the document has and no base could explain it better (a stale base would, if
            # a line had been removed since: then the write must not bring it back).
            added = stored[len(current) :]
            update = self._transact(lambda: self._text.insert(len(self._text), added), tail=tail)
            self._text_cache = stored  # what the insert made: no copy out of pycrdt to learn it
            return update
        current_lines = split_lines(current)
        stored, tail = _prefer_existing_terminator(stored, tail, current_lines)
        stored = "".join(self._keep_virtual_terminator(current_lines, split_lines(stored)))
        if adopt:
            target_edits = insertions_only(current_lines, split_lines(stored))
        else:
            # Writing a known version back onto the deleted file is a restore: it comes back
            # whole. Any other write to it is merged with the deletion like any stale write: a
            # writer still holding the text from before the deletion brings back only what it
            # added, not the lines the swarm deleted since (they are in the trash).
            restore = not self.exists and (content in bases or content in kept)
            older = [_prefer_existing_terminator(*normalize(b), current_lines)[0] for b in bases]
            base = current if restore else choose_base(stored, [current, *older])
            target = stored if base == current else merge3(base, stored, current)
            target_edits = line_edits(current_lines, split_lines(target))
        return self._transact(
            lambda: apply_line_edits(self._text, current_lines, target_edits), tail=tail
        )

    def delete(self) -> bytes | None:
        """The file was deleted on disk: empty the text and lower the exists flag."""
        lines = split_lines(self.stored_text)
        edits = [LineEdit(0, len(lines), ())] if lines else []
        return self._transact(
            lambda: apply_line_edits(self._text, lines, edits), tail=None, revive=False
        )

    # -- internals ---------------------------------------------------------------------------

    def _declare_exists(self) -> None:
        with self._doc.transaction():
            self._meta[EXISTS_KEY] = True

    def _keep_virtual_terminator(self, old: list[str], new: list[str]) -> list[str]:
        """The last line of a file without a final newline carries a virtual terminator that was
        never on disk; when an agent appends after it with its own line ending ("\n" where the
        virtual one is "\r\n"), that is the same line, not a changed one. Treating it as changed
        would make two nodes appending at once both replace it, doubling it."""
        tail = self.tail
        if not tail or not old or not old[-1].endswith(tail):
            return new
        bare = old[-1][: -len(tail)]
        spot = len(old) - 1
        matches = [
            i
            for i, line in enumerate(new)
            if line != old[-1] and line.rstrip("\r\n") == bare and line.endswith("\n")
        ]
        if not matches or old[-1] in new:
            return new
        best = min(matches, key=lambda i: abs(i - spot))
        return [*new[:best], old[-1], *new[best + 1 :]]

    def _transact(
        self, edit_text: Callable[[], object], *, tail: str | None, revive: bool = True
    ) -> bytes | None:
        """One transaction: the text edit plus the meta facts it implies (tail, exists)."""
        exists_now = self._exists_flag

        def change() -> None:
            with self._doc.transaction():
                edit_text()
                if tail is not None and tail != self.tail:
                    self._meta[genesis.TAIL_KEY] = tail
                if revive and not exists_now:
                    self._meta[EXISTS_KEY] = True
                if not revive and exists_now:
                    self._meta[EXISTS_KEY] = False

        return self._capture(change)

    def _capture(self, change: Callable[[], object]) -> bytes | None:
        """Run a local change; returns the update it made (None if it changed nothing)."""
        self._captured = []
        subscription = self._doc.observe(self._on_transaction)
        before = self.state_vector_dict() if self.author is not None else None
        try:
            change()
            if self._captured and self.author is not None and before is not None:
                stamp(self._doc, before, self.author, self._doc.client_id)
        finally:
            self._doc.unobserve(subscription)
            captured, self._captured = self._captured, None
            self._changed = self._changed or bool(captured)
            self._note_change(None)
        if not captured:
            return None
        return captured[0] if len(captured) == 1 else pycrdt.merge_updates(*captured)

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if self._captured is not None:
            self._captured.append(event.update)

    def _note_change(self, state_before: bytes | None) -> None:
        """Bump the revision if the text, the meta map or the state vector changed (an update
        can add operations that were deleted already: only the state vector shows those)."""
        if self._changed or (state_before is not None and self._doc.get_state() != state_before):
            self._changed = False
            self._vector_cache = None
            self.revision += 1

    def _on_text(self, event: object) -> None:
        self._text_cache = None
        self._changed = True

    def _on_meta(self, event: object) -> None:
        self._tail_cache = self._exists_cache = None
        self._meta_changed = True
        self._changed = True

    def _apply_raw(self, update: bytes) -> None:
        """Apply with our own causal buffer.

        pycrdt 0.14 keeps updates with missing dependencies in a pending store, but when two such
        updates queue up it can drop one of them for good (seen with a delete set among them). So an
        update from one writer reaches pycrdt only once everything before it from that writer has,
        and one that still does not integrate is kept here and offered again after each change.
        """
        try:
            pycrdt.get_state(update)  # decodes the whole update: rejects garbage before any change
        except Exception as exc:
            raise UpdateError(f"{self.path}: malformed update ({exc})") from None
        start = vector.update_start(update)
        if start is None:
            self._integrate(update)
        else:
            self._held.append((*start, update))
        self._drain_held()

    def _drain_held(self) -> None:
        progress = True
        while progress and self._held:
            progress = False
            have = self.state_vector_dict()
            waiting: list[tuple[int, int, bytes]] = []
            for client, clock, update in self._held:
                if have.get(client, 0) < clock:
                    waiting.append((client, clock, update))
                    continue
                known = have.get(client, 0) > clock
                # Applied even when its operations are known: an update (a full state, say) may
                # still carry deletions this document lacks; pycrdt skips what it has.
                self._integrate(update)
                have = self.state_vector_dict()
                if known:
                    continue
                if have.get(client, 0) > clock:
                    progress = True
                else:  # waits on another writer's operations
                    waiting.append((client, clock, update))
            self._held = waiting

    def _integrate(self, update: bytes) -> None:
        before = self._doc.get_state()
        try:
            self._doc.apply_update(update)
        except BaseException as exc:  # pycrdt panics derive from BaseException
            # a half-applied update changes it too
            self._text_cache = self._vector_cache = self._tail_cache = self._exists_cache = None
            self._meta_changed = self._changed = True
            self._note_change(before)
            if _is_fatal(exc):
                raise
            self.broken = True
            raise UpdateError(f"{self.path}: update rejected by pycrdt ({exc!r})") from None
        self._note_change(before)

    def settle(self) -> list[bytes]:
        """Run the deterministic genesis fix-up if geneses met (also after a restore, in case a
        crash came between merging a genesis and persisting its fix-up)."""
        if not self._meta_changed:
            return []
        self._meta_changed = False
        records = genesis.records(self._meta)
        if len(records) < 2 or frozenset(records) == self._resolved_geneses:
            return []
        self._resolved_geneses = frozenset(records)
        try:
            fixup = genesis.resolve(records)
        except Exception as exc:  # a peer's odd genesis record must not stop this node
            raise UpdateError(f"{self.path}: genesis records cannot be resolved ({exc})") from None
        if fixup is None:
            return []
        captured = self._capture(lambda: self._doc.apply_update(fixup))
        return [captured] if captured else []

"""The node's local state: one SQLite database (WAL mode) in the state folder.

Holds per-path CRDT documents (compacted base + append-only update log), the outbox of local
updates the transport has not acknowledged yet, the render history used to pick merge bases, the
last known on-disk existence of each file, and the trash of deleted files.

Durability: every public method that returns has committed. The database runs with
``journal_mode=WAL`` and ``synchronous=NORMAL``: a commit appends to the WAL with ``write()`` and
the data then lives in the kernel's page cache, so a process crash (even SIGKILL) loses nothing;
fsync happens only at checkpoints, so a power loss may roll back the last few commits but never
corrupts the database. That trade is what makes an edit cheap; ``batch()`` groups many writes into
one commit where even that cost matters.

Group commit (`defer_commits`, what the daemon runs with): a top-level `batch()` joins one
transaction per turn of the event loop, committed by a callback queued when the transaction
opened, so it runs before anything that a later I/O event or timer wakes. A batch is then a
savepoint (a failure still undoes only its own writes). What is about to leave the node is
committed first, whatever the turn: `outbox()` commits before it reads, and the node and the
replicator call `commit()` before a render, a reply, a heartbeat or a snapshot. A process crash
loses at most the turn in flight: the agent's file or the swarm's log still holds all of it.

Used from one thread only (the event loop thread); the class holds no locks.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pycrdt

log = logging.getLogger(__name__)

DB_NAME = "state.db"
SCHEMA_VERSION = 2

# Version 2: when each update entered the log, and the audit history that compaction moves out
# of the log (swarm/audit/history.py replays it for `swarm log` and `swarm rollback`).
_AUDIT_SCHEMA = """
CREATE TABLE audit_base (
    path TEXT PRIMARY KEY,
    state BLOB NOT NULL,
    at REAL
);
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    data BLOB NOT NULL,
    at REAL
);
CREATE INDEX audit_log_by_path ON audit_log (path, seq);
CREATE TABLE refused_writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    at REAL NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX refused_writes_by_path ON refused_writes (path, seq);
"""
_REFUSED_KEPT = 16  # per path: what agents here tried to write to a protected file
# AUTOINCREMENT on the outbox so an acknowledged id is never handed out again: a late ack
# for an old id must not drop a newer, unsent entry.
_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE doc_base (
    path TEXT PRIMARY KEY,
    state BLOB NOT NULL
);
CREATE TABLE doc_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    data BLOB NOT NULL,
    at REAL
);
CREATE INDEX doc_log_by_path ON doc_log (path, seq);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    text TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX history_by_path ON history (path, seq);
CREATE TABLE file_state (
    path TEXT PRIMARY KEY,
    on_disk INTEGER NOT NULL
);
CREATE TABLE trash (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    deleted_at REAL NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX trash_by_path ON trash (path, seq);
""" + _AUDIT_SCHEMA

_MIGRATIONS = {1: "ALTER TABLE doc_log ADD COLUMN at REAL;" + _AUDIT_SCHEMA}
# History kept per path beyond the live log: older updates are folded into the audit base.
AUDIT_KEEP_S = 30 * 24 * 3600.0
AUDIT_KEEP_BYTES = 8 * 1024 * 1024

_AUTOCHECKPOINT_PAGES = 10_000  # ~40 MB of WAL
_WAL_KEPT_BYTES = 4 * 1024 * 1024


class StoreError(Exception):
    """The state database cannot be opened or written; the message is one line naming the file."""


@dataclass(frozen=True)
class Update:
    """One update of a document's history, with when it entered this node's log."""

    at: float | None
    data: bytes


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    path: str
    update: bytes


class Store:
    """Synchronous access to ``<state_dir>/state.db``; see the module docstring for durability."""

    def __init__(
        self,
        state_dir: Path,
        *,
        history_limit: int = 16,
        history_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        if history_limit < 1 or history_bytes < 1:
            raise ValueError("history_limit and history_bytes must be positive")
        self.db_path = Path(state_dir) / DB_NAME
        self._history_limit = history_limit
        self._history_bytes = history_bytes
        self._depth = 0
        try:
            Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.db_path}: cannot create state folder: {exc}") from exc
        self._conn = self._open()
        self._commits = 0  # top-level commits, so far and at the last checkpoint
        self._checkpointed = -1
        self._loop: asyncio.AbstractEventLoop | None = None  # group commit, see defer_commits
        self._group_open = False
        self.commit_failures = 0

    # -- opening ----------------------------------------------------------------------------

    def _fail(self, reason: str) -> StoreError:
        return StoreError(f"{self.db_path}: {reason}")

    def _open(self) -> sqlite3.Connection:
        """Connect, then check before writing anything: a bad file must be left as it was."""
        try:
            conn = sqlite3.connect(self.db_path, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._fail(f"cannot open: {_one_line(exc)}") from exc
        try:
            self._check(conn)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._fail(f"WAL mode unavailable (journal_mode is {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints fsync: `checkpoint()` runs them off the event loop; this is only the
            # backstop should that stop happening.
            conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_KEPT_BYTES}")  # shrink after bursts
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                script = _SCHEMA if version == 0 else _MIGRATIONS[version]
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise self._fail(_one_line(exc)) from exc
        return conn

    def _check(self, conn: sqlite3.Connection) -> None:
        """Read-only checks: integrity, schema version, and that the file is ours."""
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            raise self._fail(f"not a usable SQLite database ({_one_line(exc)})") from exc
        if problems != ["ok"]:
            raise self._fail(f"corrupt database ({_one_line(problems[0])})")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise self._fail(
                f"schema version {version} is newer than this swarm supports ({SCHEMA_VERSION})"
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise self._fail("not a swarm state database (unversioned, has tables)")

    def close(self) -> None:
        self.commit()
        self._conn.close()

    def defer_commits(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Group commit on `loop` (see the module docstring); None turns it off (committing
        what is open)."""
        if loop is None:
            self.commit()
        self._loop = loop

    def _commit_turn(self) -> None:
        if self._depth > 0 and self._loop is not None:  # a batch left open across an await
            self._loop.call_soon(self._commit_turn)
            return
        self.commit()

    def commit(self) -> None:
        """Commit the open group transaction, if any (a no-op without group commit)."""
        if not self._group_open or self._depth > 0:
            return  # nothing open, or called inside a batch: its own exit decides
        self._group_open = False
        try:
            self._conn.execute("COMMIT")
            self._commits += 1
        except sqlite3.Error as exc:
            # The whole turn is undone: the agent's files and the swarm's log still hold it
            # (the rescan and the cursor bring it back); nothing of it has left the node.
            self.commit_failures += 1
            log.error("%s: cannot commit: %s", self.db_path, _one_line(exc))
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def checkpoint(self) -> None:
        """Copy the WAL back into the database (and fsync) on a connection of its own, so it
        can run in a worker thread while the event loop goes on committing; PASSIVE never
        waits for, or blocks, the writer. Safe to call from any thread; nothing to do (no
        connection opened) if nothing was committed since the last one."""
        commits = self._commits
        if commits == self._checkpointed:
            return
        self._checkpointed = commits
        try:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise self._fail(f"checkpoint failed: {_one_line(exc)}") from exc

    def release_memory(self) -> None:
        """Drop SQLite's page cache (an idle daemon rereads the few pages it next needs)."""
        self._conn.execute("PRAGMA shrink_memory")

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes into one commit; a nested batch joins the outer one.

        The outermost batch commits on exit and rolls back on any exception. A nested batch is
        a savepoint: if it raises, its own writes are undone even when the caller catches the
        exception and the outer batch goes on.
        """
        conn = self._conn
        savepoint = f"batch_{self._depth}"
        try:
            if self._depth == 0 and self._loop is not None and not self._group_open:
                conn.execute("BEGIN IMMEDIATE")
                self._group_open = True
                self._loop.call_soon(self._commit_turn)
            top = self._depth == 0 and not self._group_open
            conn.execute("BEGIN IMMEDIATE" if top else f"SAVEPOINT {savepoint}")
        except sqlite3.Error as exc:
            raise self._fail(f"cannot begin a write: {_one_line(exc)}") from exc
        self._depth += 1
        try:
            yield
        except BaseException as exc:
            self._depth -= 1
            self._undo(savepoint, top)
            if isinstance(exc, sqlite3.Error):
                raise self._fail(_one_line(exc)) from exc
            raise
        self._depth -= 1
        try:
            conn.execute("COMMIT" if top else f"RELEASE {savepoint}")
            if top:
                self._commits += 1
        except sqlite3.Error as exc:
            self._undo(savepoint, top)
            raise self._fail(f"cannot commit: {_one_line(exc)}") from exc

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A method's own writes: a transaction of their own at top level, or simply part of
        the caller's batch (no savepoint per call: a burst of thousands of updates would pay two
        extra statements each; the caller's batch still rolls back as a whole on any error)."""
        if self._depth > 0:
            try:
                yield
            except sqlite3.Error as exc:
                raise self._fail(_one_line(exc)) from exc
            return
        with self.batch():
            yield

    def _undo(self, savepoint: str, top: bool) -> None:
        """Roll back the current level; SQLite may already have rolled back on I/O errors."""
        conn = self._conn
        if not conn.in_transaction:
            self._group_open = False
            return
        if top:
            conn.execute("ROLLBACK")
        else:
            conn.execute(f"ROLLBACK TO {savepoint}")
            conn.execute(f"RELEASE {savepoint}")

    # -- meta -------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._write():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- documents --------------------------------------------------------------------------

    def paths(self) -> list[str]:
        rows = self._conn.execute(
            "SELECT path FROM doc_base UNION SELECT path FROM doc_log ORDER BY path"
        )
        return [str(row[0]) for row in rows]

    def load_doc(self, path: str) -> list[bytes]:
        """The base state first (if the document was ever compacted), then the log in order."""
        base = self._conn.execute("SELECT state FROM doc_base WHERE path = ?", (path,)).fetchone()
        log = self._conn.execute("SELECT data FROM doc_log WHERE path = ? ORDER BY seq", (path,))
        return ([bytes(base[0])] if base else []) + [bytes(row[0]) for row in log]

    def append_update(self, path: str, update: bytes, *, local: bool) -> int | None:
        """Log an update; a local one also enters the outbox in the same transaction."""
        with self._write():
            self._conn.execute(
                "INSERT INTO doc_log (path, data, at) VALUES (?, ?, ?)", (path, update, time.time())
            )
            if not local:
                return None
            cursor = self._conn.execute(
                "INSERT INTO outbox (path, data) VALUES (?, ?)", (path, update)
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def compact_doc(self, path: str, state: bytes) -> None:
        """Replace base and log with ``state``, which must already contain both. The log's
        updates move to the audit history (the base too, if the history starts before it)."""
        with self._write():
            conn = self._conn
            if not self._has_audit(path):
                conn.execute(
                    "INSERT INTO audit_base (path, state, at) SELECT path, state, NULL"
                    " FROM doc_base WHERE path = ?",
                    (path,),
                )
            conn.execute(
                "INSERT INTO audit_log (path, data, at) SELECT path, data, at FROM doc_log"
                " WHERE path = ? ORDER BY seq",
                (path,),
            )
            self._trim_audit(path)
            self._conn.execute("DELETE FROM doc_log WHERE path = ?", (path,))
            self._conn.execute(
                "INSERT INTO doc_base (path, state) VALUES (?, ?)"
                " ON CONFLICT (path) DO UPDATE SET state = excluded.state",
                (path, state),
            )

    def log_stats(self, path: str) -> tuple[int, int]:
        """(number of log updates, their total bytes): what compaction decisions need."""
        count, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM doc_log WHERE path = ?",
            (path,),
        ).fetchone()
        return int(count), int(size)

    def forget_doc(self, path: str) -> None:
        """Drop the document's base and log; trash and unsent outbox entries stay."""
        with self._write():
            self._conn.execute("DELETE FROM doc_base WHERE path = ?", (path,))
            self._conn.execute("DELETE FROM doc_log WHERE path = ?", (path,))
            self._conn.execute("DELETE FROM audit_base WHERE path = ?", (path,))
            self._conn.execute("DELETE FROM audit_log WHERE path = ?", (path,))

    # -- audit history ----------------------------------------------------------------------

    def history(self, path: str) -> tuple[tuple[bytes, float | None] | None, list[Update]]:
        """The document's history as held here: the state it starts from (None: from nothing;
        with the time it stood for, if known), then every update in log order with the time it
        entered the log (None: before version 2 recorded times)."""
        conn = self._conn
        base = conn.execute("SELECT state, at FROM audit_base WHERE path = ?", (path,)).fetchone()
        start: tuple[bytes, float | None] | None = None
        if base is not None:
            start = (bytes(base[0]), None if base[1] is None else float(base[1]))
        elif not self._has_audit(path):
            live = conn.execute("SELECT state FROM doc_base WHERE path = ?", (path,)).fetchone()
            start = (bytes(live[0]), None) if live is not None else None
        rows = [
            Update(None if at is None else float(at), bytes(data))
            for table in ("audit_log", "doc_log")
            for data, at in conn.execute(
                f"SELECT data, at FROM {table} WHERE path = ? ORDER BY seq", (path,)
            )
        ]
        return start, rows

    def _has_audit(self, path: str) -> bool:
        return any(
            self._conn.execute(f"SELECT 1 FROM {table} WHERE path = ? LIMIT 1", (path,)).fetchone()
            for table in ("audit_base", "audit_log")
        )

    def _trim_audit(self, path: str) -> None:
        """Fold the audit history older than `AUDIT_KEEP_S`, or beyond `AUDIT_KEEP_BYTES`
        (the newest always kept), into its base: `swarm rollback` reaches back to what is left."""
        conn = self._conn
        rows = conn.execute(
            "SELECT seq, data, at FROM audit_log WHERE path = ? ORDER BY seq DESC", (path,)
        ).fetchall()
        size, cut = 0, None
        oldest = time.time() - AUDIT_KEEP_S
        for position, (seq, data, at) in enumerate(rows):
            size += len(data)
            if position and (size > AUDIT_KEEP_BYTES or (at is not None and at < oldest)):
                cut = seq
                break
        if cut is None:
            return
        folded = [(bytes(d), a) for s, d, a in reversed(rows) if s <= cut]
        base = conn.execute("SELECT state FROM audit_base WHERE path = ?", (path,)).fetchone()
        parts = ([bytes(base[0])] if base else []) + [data for data, _ in folded]
        state = pycrdt.merge_updates(*parts) if len(parts) > 1 else parts[0]
        conn.execute(
            "INSERT INTO audit_base (path, state, at) VALUES (?, ?, ?) ON CONFLICT (path)"
            " DO UPDATE SET state = excluded.state, at = excluded.at",
            (path, state, folded[-1][1]),
        )
        conn.execute("DELETE FROM audit_log WHERE path = ? AND seq <= ?", (path, cut))

    # -- refused writes (protected files, swarm/protect/) -----------------------------------

    def keep_refused(self, path: str, content: str) -> None:
        """Keep what an agent here tried to write to a protected file (the newest few)."""
        with self._write():
            self._conn.execute(
                "INSERT INTO refused_writes (path, at, content) VALUES (?, ?, ?)",
                (path, time.time(), content),
            )
            self._conn.execute(
                "DELETE FROM refused_writes WHERE path = ? AND seq NOT IN ("
                " SELECT seq FROM refused_writes WHERE path = ? ORDER BY seq DESC LIMIT ?)",
                (path, path, _REFUSED_KEPT),
            )

    def refused_writes(self, path: str) -> list[tuple[float, str]]:
        """(when, content) of the writes kept by `keep_refused`, newest first."""
        rows = self._conn.execute(
            "SELECT at, content FROM refused_writes WHERE path = ? ORDER BY seq DESC", (path,)
        )
        return [(float(at), str(content)) for at, content in rows]

    # -- outbox -----------------------------------------------------------------------------

    def outbox(self, limit: int = 1000) -> list[OutboxEntry]:
        """The oldest unacknowledged entries, committed first: they are about to leave."""
        self.commit()
        rows = self._conn.execute("SELECT id, path, data FROM outbox ORDER BY id LIMIT ?", (limit,))
        return [OutboxEntry(int(id_), str(path), bytes(data)) for id_, path, data in rows]

    def outbox_depth(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def ack(self, ids: Iterable[int]) -> None:
        """Drop acknowledged entries; unknown or repeated ids are ignored."""
        with self._write():
            self._conn.executemany("DELETE FROM outbox WHERE id = ?", ((i,) for i in ids))

    # -- render history ---------------------------------------------------------------------

    def record_version(self, path: str, text: str) -> None:
        """Remember a text rendered to or read from disk, within the per-path bounds.

        The newest version is always kept, even if it alone exceeds ``history_bytes``: it is the
        base the next local write derives from.
        """
        if self.last_version(path) == text:
            return
        with self._write():
            self._conn.execute(
                "INSERT INTO history (path, text, size) VALUES (?, ?, ?)",
                (path, text, len(text.encode("utf-8"))),
            )
            self._conn.execute(
                "DELETE FROM history WHERE seq IN ("
                "  SELECT seq FROM ("
                "    SELECT seq,"
                "      row_number() OVER newest_first AS position,"
                "      sum(size) OVER newest_first AS running_size"
                "    FROM history WHERE path = ?"
                "    WINDOW newest_first AS (ORDER BY seq DESC)"
                "  ) WHERE position > 1 AND (position > ? OR running_size > ?)"
                ")",
                (path, self._history_limit, self._history_bytes),
            )

    def versions(self, path: str) -> list[str]:
        """Newest first."""
        rows = self._conn.execute(
            "SELECT text FROM history WHERE path = ? ORDER BY seq DESC", (path,)
        )
        return [str(row[0]) for row in rows]

    def last_version(self, path: str) -> str | None:
        row = self._conn.execute(
            "SELECT text FROM history WHERE path = ? ORDER BY seq DESC LIMIT 1", (path,)
        ).fetchone()
        return None if row is None else str(row[0])

    # -- file facts -------------------------------------------------------------------------

    def set_file_state(self, path: str, *, exists: bool) -> None:
        with self._write():
            self._conn.execute(
                "INSERT INTO file_state (path, on_disk) VALUES (?, ?)"
                " ON CONFLICT (path) DO UPDATE SET on_disk = excluded.on_disk",
                (path, int(exists)),
            )

    def file_states(self) -> dict[str, bool]:
        """Path -> whether the file existed on disk at the last sync."""
        rows = self._conn.execute("SELECT path, on_disk FROM file_state ORDER BY path")
        return {str(path): bool(on_disk) for path, on_disk in rows}

    # -- trash ------------------------------------------------------------------------------

    def trash(self, path: str, content: str) -> int:
        """Keep the content of a deleted file so it can be restored; the entry's id."""
        with self._write():
            cursor = self._conn.execute(
                "INSERT INTO trash (path, deleted_at, content) VALUES (?, ?, ?)",
                (path, time.time(), content),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def untrash(self, entry: int) -> None:
        """Take back a trash entry (the deletion it was kept for did not happen)."""
        with self._write():
            self._conn.execute("DELETE FROM trash WHERE seq = ?", (entry,))

    def trashed(self, path: str) -> list[tuple[float, str]]:
        """(deletion time, content), newest first (by insertion order, not by clock)."""
        rows = self._conn.execute(
            "SELECT deleted_at, content FROM trash WHERE path = ? ORDER BY seq DESC", (path,)
        )
        return [(float(at), str(content)) for at, content in rows]


def _one_line(problem: object) -> str:
    return " ".join(str(problem).split())

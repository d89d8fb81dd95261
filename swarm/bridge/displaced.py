"""Files a render took away from an agent that may still be writing them, and their recovery.

A render swaps its new file in for the old one (render.py). Whatever another process writes to
the old file afterwards must still reach the memory: the old file is kept, under its temp name
`.NAME.INO.DIGEST.swarm-tmp` (INO: the old file's inode number, DIGEST: of the render's new
text), and read once no process writes it any more. With a read lease that moment is known
exactly (a lease is granted only while no process has the file open for writing); without, the
file is read once it has been quiet for `LINGER` seconds.

The temp name also tells a crash apart: a temp file whose inode number is the one in its name
is an old file that was swapped out (an agent's file: its content may hold a write the store
lacks), and the file in its place holds the render's text if it matches DIGEST; any other temp
file is the new text of a render that never swapped, safe to remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from swarm.bridge import lease
from swarm.bridge.folder import Folder, UnsafePath, open_folder
from swarm.bridge.policy import TEMP_MARK
from swarm.bridge.reader import DEFAULT_MAX_BYTES, read_fd

log = logging.getLogger(__name__)

LINGER = 2.0  # without a lease: quiet time after which no writer is assumed to remain
POLL_S = 0.05
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class _Busy:
    """`poll` answer while a writer may still write the file."""


BUSY = _Busy()


def content_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def temp_name(name: str, ino: int, token: str) -> str:
    """The temp name of a render of `name` replacing the file with inode `ino` (0: none);
    `token` is the digest of the render's text (or anything else: then it is not known)."""
    return f".{name}.{ino}.{token}{TEMP_MARK}"


def parse_temp_name(temp: str) -> tuple[str, int | None, str | None] | None:
    """(target name, inode number, digest of the render's text) of a render's temp file; the
    last two are None for the older format (mkstemp's ".NAME.RANDOM.swarm-tmp")."""
    if not (temp.startswith(".") and temp.endswith(TEMP_MARK)):
        return None
    parts = temp[1 : -len(TEMP_MARK)].rsplit(".", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1]), parts[2]
    older = temp[1 : -len(TEMP_MARK)].rpartition(".")[0]
    return (older, None, None) if older else None


class Displaced:
    """An old file taken away from its name by a render, held open until it can be read.

    `rel` is the path it was the file of; `expected` what the render found in it (None: not
    known, a leftover of a crash). `rendered` is, after a crash, the digest of the text the
    render swapped in (see `content_digest`). Owns `fd` and `folder_fd` (closed by `close`).
    """

    def __init__(
        self,
        rel: str,
        fd: int,
        *,
        folder_fd: int | None,
        name: str | None,
        expected: str | None,
        leased: bool,
        rendered: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.rel = rel
        self.expected = expected
        self.rendered = rendered
        self._fd = fd
        self._folder_fd = folder_fd
        self._name = name
        self._leased = leased
        self._max_bytes = max_bytes
        self._key = _change_key(fd)
        self._quiet_since = time.monotonic()
        self.keep = False  # not text we can merge: left on disk for a person to look at

    def poll(self) -> str | _Busy | None:
        """BUSY while a writer may still write it; else its text if it differs from `expected`
        (None when there is nothing to merge). Call `finish` once the text is merged."""
        if self._leased:
            state = lease.take(self._fd)
            if state is lease.Lease.BUSY:
                return BUSY
            if state is lease.Lease.UNSUPPORTED:
                self._leased = False
        if not self._leased:
            key = _change_key(self._fd)
            if key != self._key:
                self._key, self._quiet_since = key, time.monotonic()
            if time.monotonic() - self._quiet_since < LINGER:
                return BUSY
        try:
            result = read_fd(self._fd, self._max_bytes)
            if result is None or (self._leased and not lease.intact(self._fd)):
                return BUSY  # a writer opened it while we read
        finally:
            if self._leased:
                lease.release(self._fd)
        if result.text is None:
            self.keep = True
            log.error(
                "an agent's write to %s is kept in %s, not merged: %s",
                self.rel,
                self._name or "a deleted file",
                result.problem,
            )
            return None
        return None if result.text == self.expected else result.text

    def finish(self) -> None:
        """The text is merged (or there was none): remove the file, unless it must be kept."""
        if not self.keep and self._name is not None and self._folder_fd is not None:
            try:
                st = os.stat(self._name, dir_fd=self._folder_fd, follow_symlinks=False)
                if st.st_ino == os.fstat(self._fd).st_ino:
                    os.unlink(self._name, dir_fd=self._folder_fd)
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        """Let go; a file not merged yet stays on disk for the next start to recover."""
        for fd in (self._fd, self._folder_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._folder_fd = -1


def _change_key(fd: int) -> tuple[int, int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class DisplacedWatch:
    """Polls displaced files every `POLL_S` and hands each text to `on_text` once readable."""

    def __init__(self, on_text: Callable[[Displaced, str], Awaitable[None]]) -> None:
        self._on_text = on_text
        self._handles: list[Displaced] = []
        self._wake = asyncio.Event()
        self._polling = threading.Lock()  # `close` must not close a file a poll is reading

    def add(self, handle: Displaced) -> None:
        self._handles.append(handle)
        self._wake.set()

    def __len__(self) -> int:
        return len(self._handles)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._handles:
                self._wake.clear()
                await self._wake.wait()
                continue
            for handle, text in await asyncio.to_thread(self._poll_all):
                await self._hand_over(handle, text)
            await asyncio.sleep(POLL_S)

    async def _hand_over(self, handle: Displaced, text: str | None) -> None:
        """Merge, then remove the file: a crash in between leaves it for the next start."""
        try:
            if text is not None:
                await self._on_text(handle, text)
        except Exception:
            log.exception("merging an agent's displaced write to %s failed; kept", handle.rel)
            handle.close()
            return
        except BaseException:  # cancelled at shutdown: the file stays for the next start
            handle.close()
            raise
        handle.finish()

    def _poll_all(self) -> list[tuple[Displaced, str | None]]:
        done: list[tuple[Displaced, str | None]] = []
        with self._polling:
            for handle in list(self._handles):
                try:
                    answer = handle.poll()
                except OSError as exc:
                    log.error("reading a displaced write of %s failed: %s", handle.rel, exc)
                    answer = None
                if not isinstance(answer, _Busy):
                    self._handles.remove(handle)
                    done.append((handle, answer))
        return done

    def close(self) -> None:
        """Let every file go (those not read yet are recovered at the next start)."""
        with self._polling:
            for handle in self._handles:
                handle.close()
            self._handles.clear()


def recover_leftovers(root: Path, skip_dir: Callable[[str], bool]) -> list[Displaced]:
    """After a crash: remove temp files of renders that never swapped, and hand back the old
    files that were swapped out (each may hold an agent write the store lacks). Folders for
    which `skip_dir` (a POSIX path relative to the root) is true are not entered."""
    found: list[Displaced] = []
    for folder_rel, names in _temp_files(root, skip_dir):
        try:
            folder = open_folder(root, folder_rel)
        except (OSError, UnsafePath):
            continue
        with folder:
            for temp in names:
                handle = _recover(folder, temp)
                if handle is not None:
                    found.append(handle)
    return found


def _recover(folder: Folder, temp: str) -> Displaced | None:
    parsed = parse_temp_name(temp)
    if parsed is None:
        return None
    name, ino, digest = parsed
    try:
        fd = os.open(temp, _READ_FLAGS, dir_fd=folder.fd)
    except OSError:
        return None
    own_ino = os.fstat(fd).st_ino
    if ino is not None and ino != own_ino:  # a render's new text that never replaced anything
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder.fd)
        return None
    state = lease.probe(fd)
    return Displaced(
        folder.rel(name),
        fd,
        folder_fd=os.dup(folder.fd),
        name=temp,
        expected=None,
        leased=state is not lease.Lease.UNSUPPORTED,
        rendered=digest,
    )


def _temp_files(root: Path, skip_dir: Callable[[str], bool]) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel
        dirnames[:] = [d for d in dirnames if not skip_dir(f"{prefix}/{d}".lstrip("/"))]
        temps = sorted(n for n in filenames if n.startswith(".") and n.endswith(TEMP_MARK))
        if temps:
            found.append((prefix, temps))
    return found

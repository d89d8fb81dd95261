"""The file side of swarm: which paths sync, how they are read, watched and written.

Knows nothing of CRDTs or Redis: it deals in POSIX paths relative to the memory folder and in
Python `str` texts.
"""

from swarm.bridge.policy import DEFAULT_IGNORE, DEFAULT_INCLUDE, PathPolicy
from swarm.bridge.reader import DEFAULT_MAX_BYTES, ReadResult, read_stable
from swarm.bridge.render import RenderConflict, RenderError, remove_file, write_atomic
from swarm.bridge.watcher import FileEvent, FolderWatcher, scan

__all__ = [
    "DEFAULT_IGNORE",
    "DEFAULT_INCLUDE",
    "DEFAULT_MAX_BYTES",
    "FileEvent",
    "FolderWatcher",
    "PathPolicy",
    "ReadResult",
    "RenderConflict",
    "RenderError",
    "read_stable",
    "remove_file",
    "scan",
    "write_atomic",
]

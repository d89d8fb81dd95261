"""The file side of swarm: which paths sync, how they are read, watched and written.

Knows nothing of CRDTs or Redis: it deals in POSIX paths relative to the memory folder and in
Python `str` texts.
"""

from swarm.bridge.displaced import Displaced, DisplacedWatch, recover_leftovers
from swarm.bridge.policy import DEFAULT_IGNORE, DEFAULT_INCLUDE, PathPolicy
from swarm.bridge.reader import DEFAULT_MAX_BYTES, ReadResult, read_stable
from swarm.bridge.render import (
    AgentWriteCaptured,
    RenderBusy,
    RenderConflict,
    RenderError,
    RenderRefused,
    RenderResult,
    remove_file,
    write_atomic,
)
from swarm.bridge.watcher import FileEvent, FolderWatcher, scan

__all__ = [
    "DEFAULT_IGNORE",
    "DEFAULT_INCLUDE",
    "DEFAULT_MAX_BYTES",
    "AgentWriteCaptured",
    "Displaced",
    "DisplacedWatch",
    "FileEvent",
    "FolderWatcher",
    "PathPolicy",
    "ReadResult",
    "RenderBusy",
    "RenderConflict",
    "RenderError",
    "RenderRefused",
    "RenderResult",
    "read_stable",
    "recover_leftovers",
    "remove_file",
    "scan",
    "write_atomic",
]

"""The one rule for what can be a memory file's path, local or from the network.

A path must be one a file system takes and the daemon can handle: a clean POSIX path relative
to the memory folder, names a file system accepts, and bounded depth and length (a path 2,000
folders deep exhausts Python's recursion in `mkdir`; a name over 255 bytes is refused by every
Linux file system). The policy (`policy.py`) applies it to local files, the node to every path a
peer sends, so a file that cannot be synced from here is never written here either.
"""

from __future__ import annotations

MAX_NAME_BYTES = 255  # one folder or file name: NAME_MAX of Linux file systems
MAX_DEPTH = 32  # names in one path (folders and the file)
MAX_PATH_BYTES = 1024  # the whole relative path; the folder it lives in adds to it


def path_problem(rel: str) -> str | None:
    """Why `rel` can never be a memory file's path, in a few words; None when it can."""
    if not rel:
        return "empty path"
    if rel.startswith("/"):
        return "absolute path"
    if "\x00" in rel:
        return "NUL byte in path"
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        return "path is not UTF-8"
    if size > MAX_PATH_BYTES:
        return f"path of {size} bytes (the limit is {MAX_PATH_BYTES})"
    parts = rel.split("/")
    if len(parts) > MAX_DEPTH:
        return f"path {len(parts)} levels deep (the limit is {MAX_DEPTH})"
    for part in parts:
        if part in ("", ".", ".."):
            return "not a clean relative path"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a name of {len(part.encode('utf-8'))} bytes (the limit is {MAX_NAME_BYTES})"
    return None


def shown(rel: str, limit: int = 120) -> str:
    """`rel` for a log line or a report: quoted, cut short when a peer sent something long."""
    return repr(rel) if len(rel) <= limit else repr(rel[:limit]) + f"... ({len(rel)} characters)"

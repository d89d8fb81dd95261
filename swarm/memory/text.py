"""Text conventions shared by every CRDT operation on a memory file.

Two facts shape this module:

* pycrdt 0.14 measures `Text` positions (insert, delete, len, event deltas) in UTF-8 bytes while
  `str(text)` is a Python string indexed by code point. Every position we hand to pycrdt is a byte
  offset computed here, and `check_pycrdt_offsets()` runs at import so an upgrade that changes the
  unit fails loudly instead of corrupting text.
* Line-granular merging needs every line to be terminated. A file without a final newline is stored
  with a *virtual* terminator (its "tail"), removed again when rendered, so two nodes that both
  append
  to such a file end with two whole lines instead of one mixed line.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import pycrdt


class OffsetUnitError(RuntimeError):
    """pycrdt no longer uses the position unit this module was written for."""


def check_pycrdt_offsets() -> None:
    """Fail loudly if pycrdt's Text positions are not UTF-8 byte offsets."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("probe", type=pycrdt.Text)
    text += "é👍a"
    text.insert(len("é👍".encode()), "|")
    ok = len(text) == len("é👍|a".encode()) and str(text) == "é👍|a"
    if not ok:
        raise OffsetUnitError(
            f"pycrdt {pycrdt.__version__}: Text positions are not UTF-8 byte offsets; "
            "swarm.memory.text must be adapted before use"
        )


check_pycrdt_offsets()


def split_lines(text: str) -> list[str]:
    """Split on "\\n" only, keeping terminators ("\\r\\n" stays whole; a lone "\\r" is content)."""
    if not text:
        return []
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def byte_offsets(lines: list[str]) -> list[int]:
    """Byte offset of the start of each line, plus the total length as a last entry."""
    return [0, *accumulate(len(line.encode("utf-8")) for line in lines)]


def normalize(content: str) -> tuple[str, str]:
    """Return (stored text, tail): the text every line of which is terminated, and the virtual
    terminator that was added ("" if the file already ended with a newline or is empty)."""
    if not content or content.endswith("\n"):
        return content, ""
    tail = "\n" if content.endswith("\r") or "\r\n" not in content else "\r\n"
    return content + tail, tail


def render(stored: str, tail: str) -> str:
    """Inverse of `normalize`: drop the virtual terminator again."""
    if tail and stored.endswith(tail):
        return stored[: -len(tail)]
    return stored

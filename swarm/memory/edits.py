"""Where an agent's append or replace lands in a markdown memory file (pure text logic).

Both work on whole lines of the file's text and return the new text; the caller turns that into a
CRDT edit (swarm/node/ingest.py `edit`) or, for a file that never leaves the node, a file write.

* **Headings** are ATX headings (`#` to `######`, then a space or the end of the line), outside
  fenced code blocks (``` or ~~~). Setext headings (a line underlined with `===`) are not.
* **A section** is a heading and everything after it up to the next heading of the same or a
  higher level (fewer `#`), or the end of the file: its subsections belong to it.
* **Appending under a section** puts the lines right after the section's last non-blank line (so
  the blank lines that separate it from the next heading stay below), or right after the heading
  when the section is empty. A section named `Decisions` is the first heading whose title is
  `Decisions` (case and runs of spaces ignored), at any level; `## Decisions` also demands level 2.
  A missing section is created at the end of the file (`## NAME` unless the name gives its level),
  after a blank line (and after a closing fence if the file ends inside an unclosed code
  block). Without a section the lines go at the end of the file.
* **Replacing** swaps one exact line or block of consecutive lines (compared without their line
  endings) for the new lines; it is refused when the block is absent or occurs more than once.
* New lines take the file's line ending (`\\r\\n` when its first line has one, else `\\n`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarm.memory.diff import LineEdit, apply_edits
from swarm.memory.text import normalize, render, split_lines

DEFAULT_SECTION_LEVEL = 2
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SECTION_NAME = re.compile(r"^(#{1,6})?[ \t]*(.*?)[ \t]*$")


class EditError(ValueError):
    """An edit that cannot be made as asked; the message says why, in one line."""


@dataclass(frozen=True)
class Heading:
    index: int  # line index in the file
    level: int
    title: str


@dataclass(frozen=True)
class Placement:
    """The result of an edit: the whole new text, and where the change is (1-based line)."""

    content: str
    line: int
    lines: int  # how many lines were inserted (append) or now stand in the old block's place
    created_section: bool = False


def bare(line: str) -> str:
    """A line without its terminator ("\\n" or "\\r\\n")."""
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith("\n") else line


def headings(lines: list[str]) -> list[Heading]:
    """Every ATX heading outside fenced code blocks, in order."""
    return _scan(lines)[0]


def _scan(lines: list[str]) -> tuple[list[Heading], str | None]:
    """The headings, and the fence still open at the end of the file (None if none is)."""
    found: list[Heading] = []
    fence: str | None = None
    for index, line in enumerate(lines):
        text = bare(line)
        opened = _FENCE.match(text)
        if fence is not None:
            marks = opened.group(1) if opened else ""
            closes = marks[:1] == fence[0] and len(marks) >= len(fence)
            if closes and not text.strip().lstrip(fence[0]):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        match = _ATX.match(text)
        if match:
            title = _CLOSING_HASHES.sub("", match.group(2) or "")
            found.append(Heading(index, len(match.group(1)), title.strip()))
    return found, fence


def parse_section(name: str) -> tuple[int | None, str]:
    """`"## Decisions"` -> (2, "Decisions"); `"Decisions"` -> (None, "Decisions")."""
    if "\n" in name or "\r" in name:
        raise EditError("a section name is one line")
    match = _SECTION_NAME.match(name.strip())
    assert match is not None  # the pattern matches any single line
    hashes, title = match.group(1), match.group(2)
    if not title:
        raise EditError(f"section {name!r} has no title")
    return (len(hashes) if hashes else None), title


def _same_title(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def find_section(found: list[Heading], level: int | None, title: str) -> Heading | None:
    for heading in found:
        if _same_title(heading.title, title) and (level is None or heading.level == level):
            return heading
    return None


def section_end(lines: list[str], found: list[Heading], heading: Heading) -> int:
    """Index of the first line after the section: the next heading of the same or a higher
    level, or the end of the file."""
    for other in found:
        if other.index > heading.index and other.level <= heading.level:
            return other.index
    return len(lines)


def _eol(lines: list[str]) -> str:
    return "\r\n" if lines and lines[0].endswith("\r\n") else "\n"


def _text_lines(text: str, eol: str, what: str) -> list[str]:
    body = text.replace("\r\n", "\n").rstrip("\n")
    if not body.strip():
        raise EditError(f"{what} is empty")
    return [line + eol for line in body.split("\n")]


def plan_append(content: str, text: str, section: str | None = None) -> Placement:
    """`content` with `text` appended under `section` (see the module docstring)."""
    stored, tail = normalize(content)
    lines = split_lines(stored)
    eol = _eol(lines)
    body = _text_lines(text, eol, "the text to append")
    prefix: list[str] = []
    if section is None:
        at = len(lines)
    else:
        level, title = parse_section(section)
        found, open_fence = _scan(lines)
        heading = find_section(found, level, title)
        if heading is None:
            at = len(lines)
            # A code block left open would swallow the new heading: close it first.
            closing = [open_fence + eol] if open_fence else []
            spacer = [eol] if closing or (lines and bare(lines[-1]).strip()) else []
            prefix = [*closing, *spacer, "#" * (level or DEFAULT_SECTION_LEVEL) + " " + title + eol]
        else:
            end = section_end(lines, found, heading)
            at = heading.index + 1
            for index in range(end - 1, heading.index, -1):
                if bare(lines[index]).strip():
                    at = index + 1
                    break
    result = apply_edits(lines, [LineEdit(at, at, (*prefix, *body))])
    return Placement(render("".join(result), tail), at + len(prefix) + 1, len(body), bool(prefix))


def plan_replace(content: str, old: str, new: str) -> Placement:
    """`content` with the one block of whole lines equal to `old` replaced by `new` (an empty
    `new` deletes the block)."""
    stored, tail = normalize(content)
    lines = split_lines(stored)
    wanted = old.replace("\r\n", "\n").rstrip("\n").split("\n")
    if not "".join(wanted).strip():
        raise EditError("old is empty: give the exact line or lines to replace")
    bares = [bare(line) for line in lines]
    size = len(wanted)
    starts = [i for i in range(len(lines) - size + 1) if bares[i : i + size] == wanted]
    if not starts:
        raise EditError(_not_found(bares, wanted))
    if len(starts) > 1:
        where = ", ".join(str(i + 1) for i in starts[:5]) + (", ..." if len(starts) > 5 else "")
        raise EditError(
            f"{_preview(old)} occurs {len(starts)} times (lines {where}): "
            "include neighbouring lines in old to pick one"
        )
    at = starts[0]
    eol = "\r\n" if lines[at].endswith("\r\n") else "\n"
    body = new.replace("\r\n", "\n").rstrip("\n")
    replacement = tuple(line + eol for line in body.split("\n")) if body else ()
    result = apply_edits(lines, [LineEdit(at, at + size, replacement)])
    return Placement(render("".join(result), tail), at + 1, len(replacement))


def _preview(text: str, limit: int = 60) -> str:
    flat = text.rstrip("\r\n").replace("\n", "\\n")
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _not_found(bares: list[str], wanted: list[str]) -> str:
    what = "no line reads" if len(wanted) == 1 else "no block of lines reads"
    message = f"{what} {_preview(chr(10).join(wanted))}"
    needle = wanted[0].strip()
    if needle:
        for index, line in enumerate(bares):
            if needle in line:
                return f"{message} (line {index + 1} contains it: old must be whole lines)"
    return message

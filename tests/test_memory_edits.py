"""Where `memory_append`, `memory_replace` and `swarm remember` put their lines
(swarm/memory/edits.py): headings and sections as documented, appends that only insert, replaces
of exactly one block."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.memory.edits import (
    EditError,
    bare,
    find_section,
    headings,
    parse_section,
    plan_append,
    plan_replace,
    section_end,
)
from swarm.memory.text import normalize, split_lines

TITLES = ["Decisions", "Notes", "decisions", "Log"]
line_st = st.one_of(
    st.builds(lambda n, t: "#" * n + " " + t, st.integers(1, 4), st.sampled_from(TITLES)),
    st.sampled_from(["", "- a", "- b", "text", "```", "~~~", "  ", "#nospace", "- a"]),
)
doc_st = st.builds(
    lambda lines, eol, final: eol.join(lines) + (eol if final and lines else ""),
    st.lists(line_st, max_size=14),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
body_st = st.lists(st.sampled_from(["- new", "- other", "plain words", "- x y"]), min_size=1,
                   max_size=3).map("\n".join)  # fmt: skip
section_st = st.one_of(
    st.none(),
    st.sampled_from(TITLES),
    st.builds(lambda n, t: "#" * n + " " + t, st.integers(1, 4), st.sampled_from(TITLES)),
)


def bares(content: str) -> list[str]:
    return [bare(line) for line in split_lines(normalize(content)[0])]


@given(doc_st, body_st, section_st)
def test_append_only_inserts_one_contiguous_block(doc: str, body: str, section: str | None) -> None:
    placed = plan_append(doc, body, section)
    before, after = bares(doc), bares(placed.content)
    block = body.split("\n")
    start = placed.line - 1
    assert after[start : start + len(block)] == block
    if not placed.created_section:
        assert after[:start] + after[start + len(block) :] == before
        return
    # A created section: the original, then [closing fence] [blank line] heading, then the block.
    assert after[: len(before)] == before and len(after) == start + len(block)
    *opening, heading = after[len(before) : start]
    assert heading.lstrip("#").strip() == parse_section(section or "")[1]
    assert opening in ([], [""]) or (opening[0][:3] in ("```", "~~~") and opening[1:] == [""])


@given(doc_st, body_st, section_st)
def test_append_lands_inside_its_section(doc: str, body: str, section: str | None) -> None:
    placed = plan_append(doc, body, section)
    lines = split_lines(normalize(placed.content)[0])
    start = placed.line - 1
    if section is None:
        assert start + len(body.split("\n")) == len(lines), "without a section: at the end"
        return
    level, title = parse_section(section)
    found = headings(lines)
    heading = find_section(found, level, title)
    assert heading is not None
    assert heading.index < start
    # Inside: no heading of the same or a higher level between the heading and the block ...
    assert all(h.level > heading.level for h in found if heading.index < h.index < start)
    # ... and right after the heading or the section's last non-blank line.
    assert start == heading.index + 1 or bare(lines[start - 1]).strip()
    original = split_lines(normalize(doc)[0])
    if not placed.created_section:
        # What followed the insertion point inside the section was blank only.
        old = headings(original)
        old_heading = find_section(old, level, title)
        assert old_heading is not None and old_heading.index == heading.index
        tail = original[start : section_end(original, old, old_heading)]
        assert all(not bare(line).strip() for line in tail)


@given(doc_st, body_st)
def test_new_lines_take_the_files_line_ending(doc: str, body: str) -> None:
    placed = plan_append(doc, body, "Decisions")
    stored = normalize(placed.content)[0]
    first = split_lines(normalize(doc)[0])[:1]
    eol = "\r\n" if first and first[0].endswith("\r\n") else "\n"
    inserted = split_lines(stored)[placed.line - 1 : placed.line - 1 + placed.lines]
    assert all(line.endswith(eol) and not line[: -len(eol)].endswith("\r") for line in inserted)


@given(doc_st, st.sampled_from(["- a", "- b", "text", "- a\n- b", "## Notes"]), body_st)
def test_replace_swaps_exactly_one_block_or_refuses(doc: str, old: str, new: str) -> None:
    lines = bares(doc)
    wanted = old.split("\n")
    starts = [i for i in range(len(lines)) if lines[i : i + len(wanted)] == wanted]
    if len(starts) != 1:
        with pytest.raises(EditError):
            plan_replace(doc, old, new)
        return
    placed = plan_replace(doc, old, new)
    at = starts[0]
    expected = lines[:at] + new.split("\n") + lines[at + len(wanted) :]
    assert bares(placed.content) == expected
    assert placed.line == at + 1


def test_section_ends_before_the_next_heading_of_the_same_or_higher_level() -> None:
    doc = "# Agent\n\n## Decisions\n- a\n\n### 2026\n- b\n\n## Notes\n- n\n"
    placed = plan_append(doc, "- c", "Decisions")
    assert placed.content == (
        "# Agent\n\n## Decisions\n- a\n\n### 2026\n- b\n- c\n\n## Notes\n- n\n"
    )
    assert placed.line == 8
    # A level in the name picks the heading of that level only.
    assert "## 2026\n- d\n" in plan_append(doc, "- d", "## 2026").content


def test_empty_section_gets_the_lines_right_under_its_heading() -> None:
    doc = "## Decisions\n\n## Notes\n- n\n"
    assert plan_append(doc, "- a", "decisions").content == "## Decisions\n- a\n\n## Notes\n- n\n"


def test_missing_section_is_created_at_the_end_after_a_blank_line() -> None:
    placed = plan_append("# Agent\n- x", "- chose Postgres", "Decisions")
    assert placed.content == "# Agent\n- x\n\n## Decisions\n- chose Postgres"
    assert placed.created_section and placed.line == 5
    assert plan_append("", "- a", "### Deep").content == "### Deep\n- a\n"


def test_headings_inside_code_fences_do_not_count() -> None:
    doc = "```\n## Decisions\n```\n"
    placed = plan_append(doc, "- a", "Decisions")
    assert placed.created_section
    assert placed.content.endswith("\n## Decisions\n- a\n")
    assert [h.title for h in headings(split_lines("# A #\n#B\n####### C\n## \n"))] == ["A", ""]
    # A code block left open at the end is closed before a new heading, or it would swallow it.
    assert plan_append("```\ncode\n", "- a", "Log").content == "```\ncode\n```\n\n## Log\n- a\n"


def test_crlf_file_keeps_crlf_and_no_final_newline_stays_so() -> None:
    assert plan_append("a\r\nb", "- c").content == "a\r\nb\r\n- c"
    assert plan_replace("a\r\nb\r\n", "b", "c\nd").content == "a\r\nc\r\nd\r\n"


@pytest.mark.parametrize(
    ("old", "message"),
    [
        ("- missing", "no line reads '- missing'"),
        ("chose", "line 2 contains it: old must be whole lines"),
        ("- same", "occurs 2 times (lines 3, 4)"),
        ("  \n", "old is empty"),
    ],
)
def test_replace_refusals_say_why(old: str, message: str) -> None:
    with pytest.raises(EditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_replace("# M\n- chose Postgres\n- same\n- same\n", old, "x")


def test_replace_with_nothing_deletes_the_block() -> None:
    assert plan_replace("a\nb\nc\n", "b", "").content == "a\nc\n"


@pytest.mark.parametrize(
    ("text", "section"), [("   \n", None), ("- a", "two\nlines"), ("- a", "##")]
)
def test_bad_append_input_is_refused(text: str, section: str | None) -> None:
    with pytest.raises(EditError):
        plan_append("x\n", text, section)

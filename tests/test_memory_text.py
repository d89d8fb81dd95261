"""Text conventions: UTF-8 offsets, line splitting, the virtual tail, line edits on a Y.Text."""

import pycrdt
from hypothesis import example, given
from hypothesis import strategies as st

from swarm.memory.diff import apply_edits, line_edits
from swarm.memory.text import check_pycrdt_offsets, normalize, render, split_lines
from swarm.memory.ytext import apply_line_edits

UNICODE_SAMPLES = [
    "👨‍👩‍👧‍👦 family",
    "🇰🇷🇫🇷 flags",
    "👍🏽👋🏿 skin tones",
    "기억은 하나다",
    "café naïve résumé",
    "tab\there",
    "crlf line\r",
    "",
]
lines_st = st.lists(
    st.one_of(st.sampled_from(UNICODE_SAMPLES), st.text(max_size=12)).map(
        lambda s: s.replace("\n", "")
    ),
    max_size=12,
)
texts = st.builds(
    lambda lines, eol, final: eol.join(lines) + (eol if final and lines else ""),
    lines_st,
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)


def test_import_guard_accepts_installed_pycrdt() -> None:
    check_pycrdt_offsets()


@given(texts)
def test_normalize_render_round_trip(content: str) -> None:
    stored, tail = normalize(content)
    assert render(stored, tail) == content
    assert stored == "" or stored.endswith("\n")
    assert "".join(split_lines(stored)) == stored


@st.composite
def edited_texts(draw: st.DrawFn) -> tuple[str, str]:
    """An old text of few distinct lines (repeats are the hard case) and a new text made FROM it
    by a few line edits: drawing both independently almost never yields a near neighbour."""
    old = draw(st.lists(st.sampled_from(["", "- a", "- b", "# H", "crlf\r"]), max_size=10))
    new = list(old)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        at = draw(st.integers(0, len(new)))
        if kind == "insert":
            new.insert(at, draw(st.sampled_from(["", "- a", "- new"])))
        elif new and at < len(new):
            if kind == "delete":
                del new[at]
            elif kind == "duplicate":
                new.insert(at, new[at])
            else:
                new[at] = draw(st.sampled_from(["", "- a", "- changed"]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    final = draw(st.booleans())

    def join(lines: list[str]) -> str:
        return eol.join(lines) + (eol if final and lines else "")

    return join(old), join(new)


def _check_line_edits(old: str, new: str) -> None:
    old_lines, new_lines = split_lines(normalize(old)[0]), split_lines(normalize(new)[0])
    assert apply_edits(old_lines, line_edits(old_lines, new_lines)) == new_lines


@given(edited_texts())
# one of two identical adjacent lines deleted: common prefix and suffix overlap
@example(("# H\n\n\n- a\n", "# H\n\n- a\n"))
@example(("- a\n- a\n", "- a\n"))
def test_line_edits_reproduce_a_text_edited_from_the_old_one(pair: tuple[str, str]) -> None:
    _check_line_edits(*pair)


@given(texts, texts)
def test_line_edits_reproduce_target(old: str, new: str) -> None:
    old_s, new_s = normalize(old)[0], normalize(new)[0]
    old_lines, new_lines = split_lines(old_s), split_lines(new_s)
    assert apply_edits(old_lines, line_edits(old_lines, new_lines)) == new_lines


@given(texts, texts)
def test_line_edits_on_ytext_use_byte_offsets(old: str, new: str) -> None:
    old_s, new_s = normalize(old)[0], normalize(new)[0]
    doc = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    text += old_s
    old_lines = split_lines(old_s)
    with doc.transaction():
        apply_line_edits(text, old_lines, line_edits(old_lines, split_lines(new_s)))
    assert str(text) == new_s


def test_split_lines_keeps_crlf_and_lone_cr() -> None:
    assert split_lines("a\r\nb\rc\nd") == ["a\r\n", "b\rc\n", "d"]
    assert split_lines("") == []
    assert split_lines("\n\n") == ["\n", "\n"]

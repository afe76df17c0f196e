"""Chunking: spans cover the text, stay within size and overlap, and break at natural boundaries."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from embeddings.chunking import chunk_spans, chunk_text

_WORDS = st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "longerword", "ünïcode", "数据"])
_SEPARATORS = st.sampled_from([" ", " ", " ", ". ", "! ", "\n", "\n\n", "  ", "\t", ", "])
_PROSE = st.lists(st.tuples(_WORDS, _SEPARATORS), max_size=200).map(lambda parts: "".join(w + s for w, s in parts))
_TEXT = st.one_of(_PROSE, st.text(max_size=600))


@st.composite
def _size_overlap(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=120))
    overlap = draw(st.integers(min_value=0, max_value=size - 1))
    return size, overlap


@settings(max_examples=400, deadline=None)
@given(text=_TEXT, params=_size_overlap())
@example(text="a" * 50, params=(10, 9))
@example(text="word " * 40, params=(7, 6))
@example(text="\n\n".join(["para"] * 30), params=(12, 11))
def test_spans_cover_the_text_within_size_and_overlap(text: str, params: tuple[int, int]) -> None:
    size, overlap = params
    spans = chunk_spans(text, size, overlap)
    if not text.strip():
        assert spans == []
        return
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
    for start, end in spans:
        assert 0 < end - start <= size
    for (start_a, end_a), (start_b, end_b) in zip(spans, spans[1:], strict=False):
        assert start_a < start_b, "starts strictly increase"
        assert end_a < end_b, "no chunk lies inside its predecessor"
        assert start_b <= end_a, "no gap between neighbours"
        assert end_a - start_b <= overlap, "neighbours share at most `overlap` characters"
    # Dropping each chunk's overlap with its predecessor gives the text back.
    rebuilt = text[: spans[0][1]] + "".join(text[prev_end:end] for (_, prev_end), (_, end) in itertools.pairwise(spans))
    assert rebuilt == text


@settings(max_examples=100, deadline=None)
@given(text=_TEXT, params=_size_overlap())
def test_chunking_is_deterministic(text: str, params: tuple[int, int]) -> None:
    assert chunk_text(text, *params) == chunk_text(text, *params)


def test_a_short_text_is_one_chunk() -> None:
    assert chunk_text("Short text.", 512, 64) == ["Short text."]


def test_blank_text_has_no_chunks() -> None:
    assert chunk_text("", 10, 2) == []
    assert chunk_text(" \n\t ", 10, 2) == []


def test_chunks_end_at_a_paragraph_break_before_a_sentence_end() -> None:
    text = "One two three four five six.\n\nSeven eight. Nine ten eleven twelve thirteen."
    first = chunk_text(text, 45, 0)[0]
    assert first == "One two three four five six.\n\n"


def test_chunks_end_at_a_sentence_end_before_a_word_break() -> None:
    text = "The first sentence ends here. The second one is longer than the window"
    first = chunk_text(text, 50, 0)[0]
    assert first == "The first sentence ends here. "


def test_chunks_break_between_words_when_no_sentence_ends() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    chunks = chunk_text(text, 20, 0)
    assert all(c.endswith(" ") for c in chunks[:-1])
    assert "".join(chunks) == text


def test_overlap_starts_at_a_word() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
    chunks = chunk_text(text, 24, 10)
    for chunk in chunks[1:]:
        assert text[text.index(chunk) - 1] == " ", f"{chunk!r} starts mid-word"
    assert any(a.endswith(b.split(" ")[0] + " ") for a, b in zip(chunks, chunks[1:], strict=False))


def test_text_without_spaces_is_cut_hard_at_the_size() -> None:
    assert chunk_text("x" * 25, 10, 0) == ["x" * 10, "x" * 10, "x" * 5]
    assert chunk_text("x" * 25, 10, 3)[:2] == ["x" * 10, "x" * 10]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, 11), (10, -1)])
def test_bad_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        chunk_spans("some text", size, overlap)

"""Local answers: the grounding prompt, citations, and the real default chat model streaming."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.errors import EmbeddingError
from embeddings.answer import NO_ANSWER, LocalChatModel, Passage, build_messages, cited_numbers
from embeddings.models import default_models_dir, resolve_model

PASSAGES = [
    Passage(
        "docs.handbook", {"filename": "shipping.md"}, "content", 0, "Standard delivery takes 2 to 4 days in the EU."
    ),
    Passage("shop.reviews", {"review_id": 7}, "body", 0, "The grinder arrived damaged."),
]


def test_the_prompt_numbers_passages_with_their_source_and_asks_for_citations() -> None:
    system, user = build_messages("How long is delivery?", PASSAGES)
    assert "[1] docs.handbook (filename=shipping.md) content#0: Standard delivery" in user["content"]
    assert "[2] shop.reviews (review_id=7) body#0" in user["content"]
    assert NO_ANSWER in system["content"] and "cite" in system["content"]


def test_the_context_is_cut_to_fit_a_small_window() -> None:
    long = [Passage("p.q", {"id": i}, "f", 0, "word " * 500) for i in range(10)]
    _, user = build_messages("q", long, max_chars=1500)
    assert len(user["content"]) < 1800


def test_citations_are_read_in_order_and_out_of_range_numbers_ignored() -> None:
    assert cited_numbers("Delivery takes 2-4 days [2]. See also [1] and [2], not [9].", 2) == [2, 1]


def test_a_missing_chat_model_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="models build"):
        list(LocalChatModel(tmp_path / "nope.gguf").stream(build_messages("q", PASSAGES)))


def test_the_default_chat_model_streams_an_answer_locally() -> None:
    path = resolve_model("smollm2-135m-instruct-q4_1", default_models_dir())
    model = LocalChatModel(path, n_ctx=2048)
    try:
        pieces = list(
            model.stream(build_messages("How long does standard delivery take in the EU?", PASSAGES), max_tokens=40)
        )
    finally:
        model.close()
    assert len(pieces) > 1 and "".join(pieces).strip()

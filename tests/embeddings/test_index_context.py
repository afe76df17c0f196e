"""Titles as context, with the real GGUF model: a chunk of a long article carries its title, and bare
titles never crowd the text out of the best hits (``ask --k 2`` once answered with two titles)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from catalog.compiler import Compiler
from catalog.contract import ProductContract
from connectors import ConnectionConfig, connector_for
from connectors.search_embedded import EmbeddedSearchStore
from embeddings.index import index_product
from embeddings.llamacpp import LlamaCppEmbedder
from embeddings.retrieval import hybrid_search

pytestmark = pytest.mark.anyio

_PARAGRAPHS = (
    "Start with a clean workspace and read the manual of your model before you begin.",
    "Most of the work is patience: let each step finish before starting the next one.",
    "If anything smells burnt or sounds wrong, switch the appliance off and call the service desk.",
    "Write down the date, so that you know when to do it again in a few weeks.",
)
ARTICLES = {
    1: (
        "Descaling an espresso machine",
        "Fill the tank with water and a citric acid descaler, run half through the group head, wait twenty "
        "minutes, then run the rest and rinse twice with fresh water.",
    ),
    2: (
        "Steeping green tea",
        "Heat the water to eighty degrees, never boiling, and steep the leaves for two minutes; longer makes "
        "the cup bitter.",
    ),
    3: (
        "Returning a damaged grinder",
        "Photograph the box and the grinder, open a return in your account within fourteen days and print the "
        "prepaid label; the refund follows once the parcel arrives.",
    ),
    4: (
        "Storing coffee beans",
        "Keep beans in an airtight, opaque container at room temperature, away from the fridge; buy what you "
        "drink in two weeks.",
    ),
}


def _contract(**retrieval: Any) -> ProductContract:
    return ProductContract.model_validate(
        {
            "name": "kb.articles",
            "version": "1.0.0",
            "title": "How-to articles",
            "description": "Long how-to articles with a title each.",
            "owner": {"team": "support"},
            "source": {"connection": "kb", "table": "articles"},
            "primary_key": ["article_id"],
            "columns": [
                {"name": "article_id", "type": "integer", "description": "Article number"},
                {"name": "title", "type": "string", "description": "Title"},
                {"name": "body", "type": "string", "description": "Article text"},
            ],
            "retrieval": {"text_fields": ["title", "body"], "chunk": {"size": 200, "overlap": 0}, **retrieval},
        }
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def embedder(embedding_model_path: Path) -> AsyncIterator[LlamaCppEmbedder]:
    model = LlamaCppEmbedder(embedding_model_path)
    try:
        yield model
    finally:
        model.close()


async def _top_two(tmp_path: Path, embedder: LlamaCppEmbedder, contract: ProductContract, question: str) -> list[Any]:
    db = tmp_path / "kb.sqlite"
    if not db.exists():
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE articles (article_id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
            rows = [
                (i, title, "\n\n".join([_PARAGRAPHS[0], text, *_PARAGRAPHS[1:]]))
                for i, (title, text) in ARTICLES.items()
            ]
            conn.executemany("INSERT INTO articles VALUES (?, ?, ?)", rows)
        conn.close()
    store_path = tmp_path / f"search-{len(contract.retrieval.context()) if contract.retrieval else 0}.db"
    async with (
        connector_for(ConnectionConfig(name="kb", kind="sqlite", path=str(db))) as kb,
        EmbeddedSearchStore(store_path) as store,
    ):
        await index_product(contract, kb, store, embedder, compiler=Compiler(kb.dialect, "s"))
        return await hybrid_search(store, embedder, question, k=2, products=["kb.articles"])


@pytest.mark.parametrize(
    ("question", "article"),
    [("how do I descale my espresso machine", 1), ("return a damaged grinder for a refund", 3)],
)
async def test_the_two_best_hits_are_text_headed_by_their_title_not_bare_titles(
    tmp_path: Path, embedder: LlamaCppEmbedder, question: str, article: int
) -> None:
    separate = await _top_two(tmp_path, embedder, _contract(context_fields=[]), question)
    assert "title" in [h.field for h in separate], "titles indexed on their own crowd the top hits"
    headed = await _top_two(tmp_path, embedder, _contract(), question)
    assert [h.field for h in headed] == ["body", "body"]
    assert headed[0].key == {"article_id": article}
    for hit in headed:
        assert hit.text.startswith(f"{ARTICLES[hit.key['article_id']][0]}\n\n")


def test_a_context_field_must_be_a_declared_column() -> None:
    with pytest.raises(ValueError, match=r"retrieval.context_fields[\s\S]*unknown column 'headline'"):
        _contract(context_fields=["headline"])


def test_the_default_context_is_a_title_text_field_beside_others() -> None:
    assert _contract().retrieval is not None and _contract().retrieval.context() == ["title"]
    only_title = _contract(text_fields=["title"]).retrieval
    assert only_title is not None and only_title.context() == []  # nothing else to head

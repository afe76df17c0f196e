"""Keyword search over contracts: weighted word hits, simple and predictable.

Each query word scores once per kind of field it occurs in — name 5, title 4, tags 3, column or
metric names 2, descriptions 1 — and half that when it only starts a catalog word (``cust`` finds
``customer``). Words are lower-cased, split on anything not a letter or digit, and lose a plural
``s``; stop words are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from catalog._model import FrozenModel
from catalog.contract import ProductContract

__all__ = ["ProductMatch", "rank", "tokens"]

_STOPWORDS = frozenset("a an and are as at by for from in is of on or per the to with".split())


class ProductMatch(FrozenModel):
    """A product that matched a keyword search: its contract, its score and which of its fields matched."""

    contract: ProductContract  # the latest version, deprecation applied
    score: float
    matched: list[str]  # which fields matched, e.g. "title", "column customer_email"

    @property
    def name(self) -> str:
        return self.contract.name


def tokens(text: str) -> list[str]:
    """Lower-case words, ``_`` and ``.`` split, a plural ``s`` dropped (orders → order)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def rank(contracts: Iterable[ProductContract], text: str, *, limit: int) -> list[ProductMatch]:
    """The contracts matching any word of ``text``, best first (ties by name), at most ``limit``."""
    words = [w for w in tokens(text) if w not in _STOPWORDS]
    if not words:
        return []
    matches: list[ProductMatch] = []
    for contract in contracts:
        score = 0.0
        matched: list[str] = []
        scored: set[tuple[str, str]] = set()  # (word, category): each word scores once per category
        for category, label, weight, field_words in _fields(contract):
            for word in words:
                if word in field_words:
                    gain = weight
                elif len(word) >= 3 and any(w.startswith(word) for w in field_words):
                    gain = weight / 2
                else:
                    continue
                if label not in matched:
                    matched.append(label)
                if (word, category) not in scored:
                    scored.add((word, category))
                    score += gain
        if score > 0:
            matches.append(ProductMatch(contract=contract, score=score, matched=matched))
    matches.sort(key=lambda m: (-m.score, m.name))
    return matches[:limit]


def _fields(contract: ProductContract) -> Iterator[tuple[str, str, float, set[str]]]:
    """(category, label, weight, words) for every searchable field of a contract."""
    yield "name", "name", 5, set(tokens(contract.name))
    yield "title", "title", 4, set(tokens(contract.title))
    yield "tags", "tags", 3, set(tokens(" ".join(contract.tags)))
    yield "description", "description", 1, set(tokens(contract.description))
    for column in contract.columns:
        yield "column name", f"column {column.name}", 2, set(tokens(column.name))
        yield "column description", f"column {column.name}", 1, set(tokens(column.description))
    for metric in contract.metrics:
        yield "metric name", f"metric {metric.name}", 2, set(tokens(metric.name))
        yield "metric description", f"metric {metric.name}", 1, set(tokens(metric.description))

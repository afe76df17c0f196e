"""Retrieval metrics as BEIR reports them (through pytrec_eval / trec_eval), written out plainly.

For one query with graded judgments ``qrels`` (document id → relevance, 0 = not relevant) and a
ranked list of document ids:

* ``nDCG@k = DCG@k / IDCG@k`` with ``DCG@k = Σ_{i=1..k} rel(d_i) / log2(i + 1)`` — linear gain, as
  trec_eval's ``ndcg_cut`` (not the ``2^rel - 1`` variant) — and ``IDCG@k`` the DCG of the judged
  relevances sorted from high to low; 0 when no document is relevant.
* ``recall@k = |relevant ∩ top k| / |relevant|``, relevant meaning ``rel > 0``.

Scores are averaged over every query that has judgments; a query with no results scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["dcg", "mean_metric", "ndcg_at_k", "recall_at_k"]


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain of gains in rank order (rank 1 first)."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranked list of document ids (duplicates after the first are ignored).

    Raises:
        ValueError: ``k`` is below 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    top = list(dict.fromkeys(ranked))[:k]
    ideal = dcg(sorted((r for r in qrels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(qrels.get(doc, 0), 0) for doc in top]) / ideal


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the first ``k`` of ``ranked``.

    Raises:
        ValueError: ``k`` is below 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    relevant = {doc for doc, rel in qrels.items() if rel > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(list(dict.fromkeys(ranked))[:k])) / len(relevant)


def mean_metric(
    runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], metric: str, k: int
) -> float:
    """Mean of ``metric`` (``ndcg`` or ``recall``) at ``k`` over every query of ``qrels``.

    Raises:
        ValueError: an unknown metric name, or ``k`` below 1.
    """
    functions = {"ndcg": ndcg_at_k, "recall": recall_at_k}
    if metric not in functions:
        raise ValueError(f"unknown metric {metric!r}; use ndcg or recall")
    if not qrels:
        return 0.0
    fn = functions[metric]
    return sum(fn(runs.get(query, []), judged, k) for query, judged in qrels.items()) / len(qrels)

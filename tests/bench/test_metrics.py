"""Retrieval metrics on hand-computed examples (BEIR / trec_eval definitions)."""

from __future__ import annotations

import math

import pytest

from bench._metrics import dcg, mean_metric, ndcg_at_k, recall_at_k

QRELS = {"d1": 1, "d3": 2, "d4": 1, "d9": 0}


def test_dcg_discounts_by_log2_of_rank_plus_one() -> None:
    assert dcg([3, 2, 1]) == pytest.approx(3 + 2 / math.log2(3) + 1 / 2)


def test_ndcg_uses_linear_gains_and_the_ideal_order_of_the_judgments() -> None:
    # DCG@3 of d1, d2, d3 = 1/1 + 0 + 2/log2(4) = 2; IDCG@3 = 2/1 + 1/log2(3) + 1/2.
    expected = 2 / (2 + 1 / math.log2(3) + 0.5)
    assert ndcg_at_k(["d1", "d2", "d3"], QRELS, 3) == pytest.approx(expected)
    assert ndcg_at_k(["d1", "d2", "d3"], QRELS, 3) == pytest.approx(0.63878, abs=1e-5)


def test_ndcg_is_one_for_the_ideal_ranking_and_zero_without_relevant_hits() -> None:
    assert ndcg_at_k(["d3", "d1", "d4"], QRELS, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["d3", "d4", "d1"], QRELS, 10) == pytest.approx(1.0)  # equal grades tie
    assert ndcg_at_k(["d2", "d9"], QRELS, 10) == 0.0
    assert ndcg_at_k(["d1"], {"d1": 0}, 10) == 0.0


def test_ndcg_cuts_at_k_and_ignores_repeated_documents() -> None:
    # At k=1 only d3 counts: DCG 2, IDCG 2.
    assert ndcg_at_k(["d3", "d1"], QRELS, 1) == pytest.approx(1.0)
    assert ndcg_at_k(["d2", "d2", "d3"], QRELS, 2) == pytest.approx(ndcg_at_k(["d2", "d3"], QRELS, 2))


def test_recall_counts_relevant_documents_in_the_top_k() -> None:
    assert recall_at_k(["d1", "d2", "d3"], QRELS, 3) == pytest.approx(2 / 3)
    assert recall_at_k(["d1", "d2", "d3"], QRELS, 1) == pytest.approx(1 / 3)
    assert recall_at_k(["d9"], QRELS, 10) == 0.0


def test_the_mean_is_over_every_judged_query_and_missing_runs_score_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    runs = {"q1": ["d1"]}
    assert mean_metric(runs, qrels, "ndcg", 10) == pytest.approx(0.5)
    assert mean_metric(runs, qrels, "recall", 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown metric"):
        mean_metric(runs, qrels, "map", 10)

"""evaluate() against hand computations, pytrec_eval and BEIR; FLOPS; latency statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.metrics import evaluate, flops, flops_from_df, latency_stats
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d9": 0},
    "q2": {"e1": 1},
    "q3": {"f1": 1, "f2": 1},  # no results: scores 0, still in the mean
    "q4": {"g1": 0},  # nothing relevant: left out
}
RUN = {
    "q1": [("d3", 5.0), ("d1", 4.0), ("d9", 3.0), ("d2", 2.0)],
    "q2": [*((f"x{i:02d}", 100.0 - i) for i in range(10)), ("e1", 1.0)],  # relevant at rank 11
    "q5": [("d1", 1.0)],  # not judged: ignored
}


def test_hand_computed_values() -> None:
    result = evaluate(QRELS, RUN)
    assert result.n_queries == 3 and set(result.per_query) == {"q1", "q2", "q3"}
    # trec_eval's nDCG: linear gain (the grade), discount log2(rank + 1)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    q1 = {"ndcg_cut_10": dcg / ideal, "recall_100": 1.0, "mrr_10": 1 / 2}
    q2 = {"ndcg_cut_10": 0.0, "recall_100": 1.0, "mrr_10": 0.0}
    q3 = {"ndcg_cut_10": 0.0, "recall_100": 0.0, "mrr_10": 0.0}
    for q, want in (("q1", q1), ("q2", q2), ("q3", q3)):
        assert result.per_query[q] == pytest.approx(want), q
    for name in q1:
        assert result.mean[name] == pytest.approx((q1[name] + q2[name] + q3[name]) / 3)
    dicts = {q: dict(h) for q, h in RUN.items()}
    assert evaluate(QRELS, dicts).mean == result.mean  # both run shapes


def test_cutoffs() -> None:
    qrels = {"q": {"r1": 1, "r2": 1}}
    hits = [(f"n{i:03d}", 1000.0 - i) for i in range(150)]
    hits[4] = ("r1", hits[4][1])  # rank 5
    hits[100] = ("r2", hits[100][1])  # rank 101
    got = evaluate(qrels, {"q": hits}, ["recall_100", "recall_1000", "mrr_10", "mrr_4", "P_5"])
    assert got.mean == pytest.approx(
        {"recall_100": 0.5, "recall_1000": 1.0, "mrr_10": 0.2, "mrr_4": 0.0, "P_5": 0.2}
    )


def test_ties_follow_trec_eval_order() -> None:
    # trec_eval ranks equal scores by docid descending: "z" at rank 10, relevant "a" at 11
    hits = [(f"h{i}", 10.0 - i) for i in range(9)] + [("a", 0.5), ("z", 0.5)]
    got = evaluate({"q": {"a": 1}}, {"q": hits}, ["mrr_10", "ndcg_cut_10", "mrr_11"])
    assert got.mean == {"mrr_10": 0.0, "ndcg_cut_10": 0.0, "mrr_11": pytest.approx(1 / 11)}


def test_matches_pytrec_eval_and_beir() -> None:
    from beir.retrieval.custom_metrics import mrr

    rng = np.random.default_rng(3)
    docs = [f"d{i}" for i in range(300)]
    qrels = {
        f"q{q}": {d: int(rng.integers(1, 3)) for d in rng.choice(docs, 3, replace=False)}
        for q in range(40)
    }
    run = {
        q: {
            d: float(s)
            for d, s in zip(rng.choice(docs, 200, replace=False), rng.random(200), strict=True)
        }
        for q in qrels
    }
    ours = evaluate(qrels, run, ["ndcg_cut_10", "recall_100", "mrr_10"])
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    for name in ("ndcg_cut_10", "recall_100"):
        assert ours.mean[name] == pytest.approx(np.mean([v[name] for v in direct.values()]))
        for q in qrels:
            assert ours.per_query[q][name] == direct[q][name]
    assert ours.mean["mrr_10"] == pytest.approx(mrr(qrels, run, [10])["MRR@10"], abs=1e-5)
    assert ours.mean["mrr_10"] > 0


def test_edge_cases() -> None:
    assert evaluate({"q": {"a": 1}}, {}).mean == {
        "ndcg_cut_10": 0.0,
        "recall_100": 0.0,
        "mrr_10": 0.0,
    }
    assert evaluate({}, {"q": [("a", 1.0)]}).n_queries == 0
    with pytest.raises(InputError, match="unknown metric 'ndcg@10'"):
        evaluate(QRELS, RUN, ["ndcg@10"])
    with pytest.raises(InputError, match="appears twice"):
        evaluate(QRELS, {"q1": [("d1", 1.0), ("d1", 0.5)]})


# -- FLOPS -----------------------------------------------------------------------------------------
def test_flops_by_hand() -> None:
    queries = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]))
    docs = sp.csr_matrix(
        np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    )
    # p_q = [1, 1/2, 0], p_d = [1/4, 1/4, 1] -> 1/4 + 1/8
    assert flops(queries, docs) == pytest.approx(0.375)
    # brute force: mean over pairs of the number of shared nonzero terms
    shared = ((queries != 0).astype(int) @ (docs != 0).astype(int).T).toarray()
    assert flops(queries, docs) == pytest.approx(shared.mean())
    assert flops_from_df(queries, np.array([1, 1, 4]), 4) == pytest.approx(0.375)
    assert flops_from_df(queries, np.array([1, 1]), 4) == pytest.approx(0.375)  # short df ok

    with_zero = queries.copy()
    with_zero.data[1] = 0.0  # an explicit zero is not a nonzero term
    assert flops(with_zero, docs) == pytest.approx(0.25)

    vocab = Vocabulary(["a", "b", "c"], frozen=True)
    qb = SparseBatch(["q1", "q2"], queries.astype(np.float32), vocab)
    db = SparseBatch([f"d{i}" for i in range(4)], docs.astype(np.float32), vocab)
    assert flops(qb, db) == pytest.approx(0.375)
    other = SparseBatch(db.ids, db.matrix, Vocabulary(["a", "b", "x"], frozen=True))
    with pytest.raises(InputError, match="different vocabularies"):
        flops(qb, other)
    with pytest.raises(InputError, match="term columns"):
        flops(queries, docs[:, :2])
    with pytest.raises(InputError, match=r"\[0, 4\]"):
        flops_from_df(queries, np.array([5, 0, 0]), 4)


def test_latency_stats() -> None:
    stats = latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats["n"] == 100
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p95_ms"] == pytest.approx(95.05)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["max_ms"] == pytest.approx(100.0)
    with pytest.raises(InputError):
        latency_stats([])

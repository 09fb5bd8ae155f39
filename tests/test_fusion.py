"""Score normalisation, convex fusion (missing documents), RRF, tie-breaking and alpha tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lsr.errors import InputError
from lsr.fusion import combine, convex, normalize, rrf, tune_alpha


def test_normalize_by_hand() -> None:
    run = {"q": [("a", 3.0), ("b", 1.0), ("c", 2.0)], "one": {"x": 7.0}, "none": []}
    assert normalize(run, "minmax") == {
        "q": [("a", 1.0), ("c", 0.5), ("b", 0.0)],
        "one": [("x", 1.0)],  # all scores equal -> 1
        "none": [],
    }
    std = math.sqrt(2 / 3)  # population std of 1, 2, 3
    z = dict(normalize(run, "zscore")["q"])
    assert z == pytest.approx({"a": 1 / std, "c": 0.0, "b": -1 / std})
    assert normalize(run, "zscore")["one"] == [("x", 0.0)]
    assert normalize(run, None)["q"] == [("a", 3.0), ("c", 2.0), ("b", 1.0)]
    with pytest.raises(InputError, match="unknown normalisation"):
        normalize(run, "l2")
    with pytest.raises(InputError, match="finite"):
        normalize({"q": {"a": float("nan")}}, "minmax")


def test_missing_document_takes_the_runs_minimum() -> None:
    a = {"q": {"x": 4.0, "y": 2.0}}
    b = {"q": {"y": 10.0, "z": 5.0}}
    # raw scores: x is missing from b (gets b's min 5), z from a (gets a's min 2)
    got = dict(convex(a, b, 0.25, norm=None)["q"])
    assert got == pytest.approx(
        {"x": 0.25 * 4 + 0.75 * 5, "y": 0.25 * 2 + 0.75 * 10, "z": 0.25 * 2 + 0.75 * 5}
    )
    # min-max: a -> x 1, y 0; b -> y 1, z 0; the missing ones get 0
    assert convex(a, b, 0.7)["q"] == [("x", 0.7), ("y", pytest.approx(0.3)), ("z", 0.0)]
    # z-score: a -> x 1, y -1; b -> y 1, z -1; missing -> -1
    got = dict(convex(a, b, 0.5, norm="zscore")["q"])
    assert got == pytest.approx({"x": 0.0, "y": 0.0, "z": -1.0})
    # a query only one run answered: the other contributes 0
    only = convex({"q1": {"x": 1.0, "y": 0.0}}, {"q2": {"z": 3.0}}, 0.5)
    assert only == {"q1": [("x", 0.5), ("y", 0.0)], "q2": [("z", 0.5)]}


def _pyserini_rule(dense: dict, sparse: dict, alpha: float) -> dict[str, float]:
    """Pyserini HybridSearcher's fusion with normalization=True, written from its description."""
    lo_d, hi_d = min(dense.values()), max(dense.values())
    lo_s, hi_s = min(sparse.values()), max(sparse.values())
    out = {}
    for doc in set(dense) | set(sparse):
        d = (dense.get(doc, lo_d) - (lo_d + hi_d) / 2) / (hi_d - lo_d)
        s = (sparse.get(doc, lo_s) - (lo_s + hi_s) / 2) / (hi_s - lo_s)
        out[doc] = alpha * s + d
    return out


def test_agrees_with_pyserini_hybrid_rule() -> None:
    rng = np.random.default_rng(5)
    docs = [f"d{i}" for i in range(40)]
    for _ in range(20):
        dense = {
            d: float(s) for d, s in zip(rng.choice(docs, 15), rng.normal(size=15), strict=True)
        }
        sparse = {
            d: float(s) for d, s in zip(rng.choice(docs, 15), rng.random(15) * 20, strict=True)
        }
        alpha = float(rng.uniform(0.1, 3))
        ref = _pyserini_rule(dense, sparse, alpha)
        ours = dict(convex({"q": sparse}, {"q": dense}, alpha / (1 + alpha))["q"])
        # same scores up to the factor 1 + alpha and Pyserini's constant shift of -0.5
        for doc, score in ours.items():
            assert (1 + alpha) * (score - 0.5) == pytest.approx(ref[doc])


def test_rrf_by_hand() -> None:
    one = {"q": [("a", 9.0), ("b", 5.0), ("c", 1.0)]}
    two = {"q": {"a": 0.2, "c": 0.8}}  # a mapping; ranked by score, so c is first
    got = rrf([one, two], k=60)["q"]
    assert got == [
        ("a", pytest.approx(1 / 61 + 1 / 62)),
        ("c", pytest.approx(1 / 63 + 1 / 61)),
        ("b", pytest.approx(1 / 62)),
    ]
    assert rrf([one, two], k=0, top_k=2)["q"] == [("a", 1 + 1 / 2), ("c", pytest.approx(1 / 3 + 1))]
    unsorted = {"q": [("c", 1.0), ("a", 9.0), ("b", 5.0)]}  # list order is not rank order
    assert rrf([unsorted])["q"] == rrf([one])["q"]


def test_ties_break_by_docid() -> None:
    assert [
        d for d, _ in rrf([{"q": [("b", 2.0), ("a", 1.0)]}, {"q": [("a", 2.0), ("b", 1.0)]}])["q"]
    ] == ["a", "b"]
    tied = {"q": {"m": 1.0, "c": 1.0, "x": 1.0}}
    assert [d for d, _ in rrf([tied])["q"]] == ["c", "m", "x"]  # ranks given by docid too
    assert [d for d, _ in convex(tied, tied, 0.5)["q"]] == ["c", "m", "x"]
    assert convex(tied, tied, 0.5, top_k=2)["q"] == [("c", 1.0), ("m", 1.0)]


def test_argument_checks() -> None:
    with pytest.raises(InputError, match="alpha"):
        convex({}, {}, 1.5)
    with pytest.raises(InputError, match="2 runs for 1 weights"):
        combine([{}, {}], [1.0])
    with pytest.raises(InputError, match="appears twice"):
        rrf([{"q": [("a", 1.0), ("a", 0.5)]}])


def test_combine_three_runs() -> None:
    runs = [{"q": {"a": 1.0, "b": 0.0}}, {"q": {"b": 1.0, "c": 0.0}}, {"q": {"c": 1.0, "a": 0.0}}]
    got = dict(combine(runs, [0.5, 0.3, 0.2])["q"])
    assert got == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2})


def test_tune_alpha_finds_the_only_good_weight() -> None:
    # q1 ranks d1 first iff 0.1 < alpha < 0.9; q2 ranks e1 first iff 0.4 < alpha < 0.6
    qrels = {"q1": {"d1": 1}, "q2": {"e1": 1}}
    run_a = {"q1": {"d2": 1.0, "d1": 0.9, "d3": 0.0}, "q2": {"e2": 1.0, "e1": 0.6, "e3": 0.0}}
    run_b = {"q1": {"d3": 1.0, "d1": 0.9, "d2": 0.0}, "q2": {"e3": 1.0, "e1": 0.6, "e2": 0.0}}
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    best, table = tune_alpha(qrels, run_a, run_b, grid, "minmax", metric="ndcg_cut_10")
    assert best == 0.5
    assert [a for a, _ in table] == grid
    second = 1 / math.log2(3)  # the relevant document at rank 2
    assert [v for _, v in table] == pytest.approx(
        [second, (1 + second) / 2, 1.0, (1 + second) / 2, second]
    )
    # queries outside the training qrels (e.g. test queries) cannot change the choice
    noisy_a = {**run_a, "test": {"t1": 1.0}}
    noisy_b = {**run_b, "test": {"t2": 1.0}}
    assert tune_alpha(qrels, noisy_a, noisy_b, grid) == tune_alpha(qrels, run_a, run_b, grid)
    # equal scores: the first alpha in grid order wins
    assert tune_alpha(qrels, run_a, run_a, [0.75, 0.25])[0] == 0.75

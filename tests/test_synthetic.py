"""The synthetic collection (eval/synthetic.py) is well formed and fits the real data."""

from __future__ import annotations

import numpy as np
import pytest

from eval.synthetic import (
    MODES,
    document_frequency,
    fit_report,
    generate_clustered_collection,
    generate_clustered_queries,
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


# -- topically clustered collections (20 topics keeps the per-topic calibration cheap) ---------
N_TOPICS = 20


@pytest.fixture(scope="module")
def clustered():
    return generate_clustered_collection(N_DOCS, n_topics=N_TOPICS, seed=3)


def test_clustered_is_well_formed_and_grouped(clustered):
    batch, topics = clustered
    _well_formed(batch.matrix, N_DOCS)
    assert batch.ids[0] == "d0000000" and len(batch.vocab) == 30522
    assert topics.shape == (N_DOCS,) and topics.dtype == np.int32
    assert np.all(np.diff(topics) >= 0)  # doc ids grouped by topic, in topic order
    sizes = np.bincount(topics, minlength=N_TOPICS)
    assert sizes.sum() == N_DOCS and np.count_nonzero(sizes) >= N_TOPICS - 1


def test_clustered_marginals_follow_real(clustered):
    batch, _ = clustered
    report = fit_report(batch, {})
    length = report["stats"]["doc length"]
    assert abs(length["synthetic"]["mean"] / length["real"]["mean"] - 1) < 0.15
    for k in (100, 1000):
        df = report["stats"][f"df/N top-{k} terms"]
        assert 0.85 < df["synthetic"]["mean"] / df["real"]["mean"] < 1.15


def test_clustered_has_topical_signal(clustered):
    batch, topics = clustered
    m = batch.matrix
    df = document_frequency(m) / N_DOCS
    candidates = np.flatnonzero((df > 0.01) & (df < 0.2))
    csc = m.tocsc()
    sizes = np.maximum(np.bincount(topics, minlength=N_TOPICS), 1)
    lifts = []
    for t in candidates[:: max(1, candidates.size // 200)]:
        rows = csc.indices[csc.indptr[t] : csc.indptr[t + 1]]
        share = np.bincount(topics[rows], minlength=N_TOPICS) / sizes
        lifts.append(share.max() / df[t])
    # a term is far more frequent in its top topic than overall (independent terms give ~1.1)
    assert np.median(lifts) > 2.0


def test_clustered_queries(clustered):
    batch, topics = clustered
    for mode in MODES:
        q, q_topics = generate_clustered_queries(
            batch, topics, 300, mode=mode, n_topics=N_TOPICS, seed=4
        )
        _well_formed(q.matrix, 300)
        assert np.all(np.diff(q.matrix.indptr) > 0)
        assert q_topics.shape == (300,) and np.unique(q_topics).size > 5
        again, _ = generate_clustered_queries(
            batch, topics, 300, mode=mode, n_topics=N_TOPICS, seed=4
        )
        assert np.array_equal(again.matrix.indices, q.matrix.indices)
        assert np.array_equal(again.matrix.data, q.matrix.data)


def test_clustered_deterministic_for_a_seed(clustered):
    batch, topics = clustered
    again, again_topics = generate_clustered_collection(N_DOCS, n_topics=N_TOPICS, seed=3)
    assert np.array_equal(again_topics, topics)
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(again.matrix, name), getattr(batch.matrix, name))
    other, _ = generate_clustered_collection(N_DOCS, n_topics=N_TOPICS, seed=4)
    assert not np.array_equal(other.matrix.indptr, batch.matrix.indptr)

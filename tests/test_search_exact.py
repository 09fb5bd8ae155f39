"""Exact search equals brute force Q @ D.T (property tests over random sparse collections)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import brute_force_topk, random_batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr import SparseIndex, Vocabulary
from lsr.errors import InputError
from lsr.index import kernels
from lsr.sparse import SparseBatch

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _hits_as_positions(index: SparseIndex, hits) -> list[tuple[int, float]]:
    position = {index.doc_id(i): i for i in range(index.num_docs)}
    return [(position[h.doc_id], h.score) for h in hits]


@st.composite
def collections(draw):
    n_docs = draw(st.integers(1, 120))
    n_terms = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    docs = random_batch(
        rng,
        n_docs,
        n_terms,
        density=draw(st.sampled_from([0.02, 0.1, 0.4])),
        levels=draw(st.sampled_from([1, 3, 8])),
    )
    # queries may include terms that no document has (the vocabulary is wider than the postings)
    queries = random_batch(
        rng, 6, n_terms, density=draw(st.sampled_from([0.0, 0.1, 0.5])), prefix="q"
    )
    block_size = draw(st.sampled_from([1, 2, 3, 8, 64, 256]))
    k = draw(st.sampled_from([1, 3, 10, 500]))
    window = draw(st.sampled_from([1, 2, 5, None]))  # MaxScore window in blocks (None: default)
    return docs, queries, block_size, k, window


@SETTINGS
@given(case=collections(), quantization=st.sampled_from(["float32", "float16", "uint8"]))
def test_pruned_and_exhaustive_equal_brute_force(tmp_path_factory, case, quantization):
    docs, queries, block_size, k, window = case
    path = tmp_path_factory.mktemp("idx") / "index"
    index = SparseIndex.build(docs, path, quantization=quantization, block_size=block_size)
    if window is not None:  # many small windows: thresholds carry across windows
        index.window_blocks = window
    # what the index holds, in score units (uint8: integer codes, so sums and ties are exact)
    stored = docs.matrix.copy()
    stored.data = index.codec.units(index.codec.encode(stored.data))
    expected = [
        [(p, s * index.codec.score_scale) for p, s in row]
        for row in brute_force_topk(queries.matrix, stored, k)
    ]
    for algorithm in ("maxscore", "exhaustive"):
        results = index.batch_search(queries, k, algorithm=algorithm, threads=2)
        for got, want in zip(results, expected, strict=True):
            positions = _hits_as_positions(index, got)
            assert [p for p, _ in positions] == [p for p, _ in want]
            np.testing.assert_allclose([s for _, s in positions], [s for _, s in want], rtol=1e-6)
        singles = [
            index.search(
                SparseBatch([qid], queries.matrix[i], queries.vocab), k, algorithm=algorithm
            )
            for i, qid in enumerate(queries.ids)
        ]
        assert singles == results
    # one query split over doc-id ranges: the same hits and bits, whatever the number of parts
    prepared = index.prepare_queries(queries)
    ix, lut, k_eff = index.kernel_arrays, index.lut, min(k, index.num_docs)
    for i in range(len(prepared.ptr) - 1):
        a, b = prepared.ptr[i], prepared.ptr[i + 1]
        terms, weights = prepared.terms[a:b], prepared.weights[a:b]
        want_d, want_s = np.full(k_eff, -1), np.zeros(k_eff, np.float32)
        n = kernels.exhaustive_one(
            terms, weights, k_eff, ix, lut, np.zeros(index.num_docs, np.float32), want_d, want_s
        )
        for parts in (2, 5):
            acc = np.zeros(index.num_docs, np.float32)
            got_d, got_s = np.full(k_eff, -1), np.zeros(k_eff, np.float32)
            assert (
                kernels.exhaustive_split(terms, weights, k_eff, ix, lut, acc, parts, got_d, got_s)
                == n
            )
            assert got_d.tolist() == want_d.tolist() and got_s.tolist() == want_s.tolist()
            assert not acc.any()  # the accumulator comes back zeroed


def test_empty_query_and_unmatched_terms_return_nothing(tmp_path):
    docs = random_batch(np.random.default_rng(0), 20, 40, density=0.05)
    index = SparseIndex.build(docs, tmp_path / "i")
    assert index.search({}, 5) == []
    df = np.diff(docs.matrix.tocsc().indptr)
    absent = [docs.vocab.tokens[j] for j in np.flatnonzero(df == 0)]
    present = docs.vocab.tokens[int(np.argmax(df))]
    assert absent, "the collection should leave some vocabulary terms without postings"
    assert index.search({absent[0]: 3.0}, 5) == []
    with_absent = index.search({present: 1.0, absent[0]: 3.0}, 5)
    assert with_absent == index.search({present: 1.0}, 5) != []


def test_ties_break_by_lower_document_position(tmp_path):
    matrix = sp.csr_matrix(np.ones((300, 1), dtype=np.float32))
    docs = SparseBatch([f"d{i:03d}" for i in range(300)], matrix, Vocabulary(["a"], frozen=True))
    index = SparseIndex.build(docs, tmp_path / "i", block_size=7)
    hits = index.search({"a": 1.0}, 5)
    assert [h.doc_id for h in hits] == ["d000", "d001", "d002", "d003", "d004"]
    assert index.search({"a": 1.0}, 5, threads=2) == hits  # split: ties still by position
    assert index.search({"a": 1.0}, 5, threads=2, algorithm="blockmax") == hits
    with pytest.raises(InputError, match="threads > 1 for one query"):
        index.search({"a": 1.0}, 5, threads=2, algorithm="maxscore")


def test_query_options_equal_brute_force_on_pruned_query(tmp_path):
    rng = np.random.default_rng(3)
    docs = random_batch(rng, 200, 30, density=0.2, levels=40)
    queries = random_batch(rng, 10, 30, density=0.6, levels=40, prefix="q")
    index = SparseIndex.build(docs, tmp_path / "i", quantization="float32")
    for min_weight, max_terms in [(2.0, None), (0.0, 3), (1.5, 4)]:
        q = queries.matrix.toarray()
        q[q < min_weight] = 0
        if max_terms is not None:
            for row in q:
                order = np.lexsort((np.arange(row.size), -row))
                row[order[max_terms:]] = 0
        expected = brute_force_topk(sp.csr_matrix(q), docs.matrix, 10)
        got = index.batch_search(queries, 10, min_weight=min_weight, max_terms=max_terms)
        assert [[h.doc_id for h in r] for r in got] == [
            [docs.ids[p] for p, _ in w] for w in expected
        ]
        # one query at a time (dict, term ids: pruned and ordered inside one compiled call)
        options = {"min_weight": min_weight, "max_terms": max_terms}
        for algorithm in ("exhaustive", "maxscore", "blockmax", "approximate"):
            assert [
                index.search(q, 10, algorithm=algorithm, **options) for q in queries.to_dicts()
            ] == got
            assert [
                index.search(queries.row(i), 10, algorithm=algorithm, **options)
                for i in range(len(queries))
            ] == got


def test_real_vectors_match_brute_force(tmp_path, scifact):
    docs, queries = scifact["docs"], scifact["queries-siamese"]
    index = SparseIndex.build(docs, tmp_path / "scifact", quantization="float32")
    sample = SparseBatch(queries.ids[:150], queries.matrix[:150], queries.vocab)
    expected = brute_force_topk(sample.matrix, docs.matrix, 10)
    got = index.batch_search(sample, 10)
    for hits, want in zip(got, expected, strict=True):
        # float32 sums vs the float64 oracle: the same scores, and the same documents up to
        # near-ties at the cut-off
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in want], rtol=1e-5)
        assert len({h.doc_id for h in hits} ^ {docs.ids[p] for p, _ in want}) <= 2


def test_uint8_scores_within_stated_tolerance(tmp_path, scifact):
    docs, queries = scifact["docs"], scifact["queries-siamese"]
    float_index = SparseIndex.build(docs, tmp_path / "f32", quantization="float32")
    byte_index = SparseIndex.build(docs, tmp_path / "u8", quantization="uint8")
    bound_per_weight = (
        byte_index.codec.scale
    )  # rounding moves a weight by <= scale / 2, the clip to code 1 by < scale
    sample = SparseBatch(queries.ids[:200], queries.matrix[:200], queries.vocab)
    exact = (sample.matrix @ docs.matrix.T).toarray()
    overlap = []
    for i, (f_hits, b_hits) in enumerate(
        zip(float_index.batch_search(sample, 10), byte_index.batch_search(sample, 10), strict=True)
    ):
        bound = bound_per_weight * float(sample.matrix[i].sum()) + 1e-4
        for hit in b_hits:
            j = docs.ids.index(hit.doc_id)
            assert abs(hit.score - exact[i, j]) <= bound
        overlap.append(
            len({h.doc_id for h in f_hits} & {h.doc_id for h in b_hits}) / max(len(f_hits), 1)
        )
    assert np.mean(overlap) >= 0.95


def test_unknown_algorithm_is_refused(tmp_path):
    index = SparseIndex.build(random_batch(np.random.default_rng(0), 5, 5, 0.5), tmp_path / "i")
    with pytest.raises(InputError, match="algorithm must be one of"):
        index.search({"t0": 1.0}, 3, algorithm="wand")


def test_k_must_be_positive(tmp_path):
    index = SparseIndex.build(random_batch(np.random.default_rng(0), 5, 5, 0.5), tmp_path / "i")
    for bad in (0, -1):
        with pytest.raises(InputError, match="k must be a positive integer"):
            index.search({"t0": 1.0}, bad)


def test_warm_up_compiles_without_changing_results(tmp_path):
    docs = random_batch(np.random.default_rng(11), 50, 10, density=0.3)
    index = SparseIndex.build(docs, tmp_path / "i")
    before = index.batch_search(docs, 3)
    for algorithm in ("exhaustive", "maxscore"):
        index.warm_up(3, algorithm=algorithm)
    assert index.batch_search(docs, 3) == before
    assert index.search({"t1": 1.0}, 3) == index.search({"t1": 1.0}, 3, algorithm="maxscore")

"""Document-id reordering by recursive graph bisection (BuildConfig.reorder = 'bp')."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import brute_force_topk
from pydantic import ValidationError
from typer.testing import CliRunner

from lsr import SparseIndex, Vocabulary
from lsr.cli import app
from lsr.errors import InputError
from lsr.index import reorder
from lsr.index.builder import BuildConfig, build
from lsr.index.reorder import bp_order, permute_rows
from lsr.sparse import SparseBatch, write_npz

# measured on clustered(): 3,000 docs, block_size 64: 44,666 -> 11,449 entries (3.9x fewer;
# 3.2x without block-aligned splits)
ENTRY_FACTOR_FLOOR = 2.5


def clustered(seed: int = 0, n_docs: int = 3000, topics: int = 10) -> SparseBatch:
    """Documents drawn from topics with (mostly) disjoint vocabularies, in shuffled order."""
    rng = np.random.default_rng(seed)
    per_topic, shared = 150, 100
    n_terms = topics * per_topic + shared
    dense = np.zeros((n_docs, n_terms), dtype=np.float32)
    for d in range(n_docs):
        t = rng.integers(topics)
        own = rng.choice(per_topic, 20, replace=False) + t * per_topic
        common = rng.choice(shared, 3, replace=False) + topics * per_topic
        cols = np.concatenate([own, common])
        dense[d, cols] = rng.integers(1, 9, cols.size) / 4  # quarter grid: exact sums
    vocab = Vocabulary([f"t{i}" for i in range(n_terms)], frozen=True)
    return SparseBatch([f"d{i}" for i in range(n_docs)], sp.csr_matrix(dense), vocab)


def queries_for(docs: SparseBatch, n: int = 40, seed: int = 1) -> SparseBatch:
    rng = np.random.default_rng(seed)
    rows = docs.matrix[rng.choice(docs.matrix.shape[0], n, replace=False)].toarray()
    rows *= rng.random(rows.shape) < 0.4  # a few of a document's terms
    rows[:, : docs.matrix.shape[1] // 2 : 7] += 0.5  # and some across topics
    return SparseBatch([f"q{i}" for i in range(n)], sp.csr_matrix(rows), docs.vocab)


def _csr(batch: SparseBatch) -> tuple[np.ndarray, np.ndarray, int]:
    m = batch.matrix
    return m.indptr.astype(np.int64), m.indices.astype(np.int32), m.shape[1]


def test_bp_order_is_a_deterministic_permutation():
    indptr, terms, n_terms = _csr(clustered(n_docs=1500))
    order = bp_order(indptr, terms, n_terms)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(1500))
    np.testing.assert_array_equal(bp_order(indptr, terms, n_terms), order)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = bp_order(indptr, terms, n_terms)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, order)
    # the same permutation from uint16 term ids (the builder's compact stream)
    np.testing.assert_array_equal(bp_order(indptr, terms.astype(np.uint16), n_terms), order)


def test_doc_parallel_path_matches(monkeypatch):
    """Large partitions (documents scored in parallel) give the same order as the serial path."""
    indptr, terms, n_terms = _csr(clustered(n_docs=700))
    order = bp_order(indptr, terms, n_terms, align=64)
    monkeypatch.setattr(reorder, "_BIG", 64)
    np.testing.assert_array_equal(bp_order(indptr, terms, n_terms, align=64), order)


def test_bp_order_tiny_inputs():
    for n_docs in (0, 1, 2, 17):
        indptr = np.arange(n_docs + 1, dtype=np.int64)
        order = bp_order(indptr, np.zeros(n_docs, dtype=np.int32), 1, min_partition=1)
        np.testing.assert_array_equal(np.sort(order), np.arange(n_docs))
    # documents without terms
    order = bp_order(np.zeros(40, dtype=np.int64), np.zeros(0, dtype=np.int32), 3)
    np.testing.assert_array_equal(np.sort(order), np.arange(39))


def test_permute_rows():
    m = clustered(n_docs=50).matrix
    order = np.random.default_rng(0).permutation(50)
    ptr, terms, codes = permute_rows(m.indptr.astype(np.int64), m.indices, m.data, order)
    got = sp.csr_matrix((codes, terms, ptr), shape=m.shape)
    assert (got != m[order]).nnz == 0


def test_bp_lowers_entries(tmp_path):
    docs = clustered()
    plain = SparseIndex.build(docs, tmp_path / "plain", block_size=64)
    bp = SparseIndex.build(docs, tmp_path / "bp", block_size=64, reorder="bp")
    assert bp.manifest["build"]["reorder"] == "bp"
    assert plain.manifest["build"]["reorder"] == "none"
    assert bp.num_postings == plain.num_postings
    factor = plain.manifest["num_entries"] / bp.manifest["num_entries"]
    assert factor >= ENTRY_FACTOR_FLOOR, factor


def _sure(hits: list[tuple[str, float]], k: int) -> set[str]:
    """Ids a correct top-k must hold: all if fewer than k, else those above the k-th score."""
    if len(hits) < k:
        return {i for i, _ in hits}
    return {i for i, s in hits if s > hits[-1][1]}


@pytest.mark.parametrize("quantization", ["float32", "uint8"])
def test_reordered_index_gives_the_same_results(tmp_path, quantization):
    docs = clustered(n_docs=2000, seed=3)
    queries = queries_for(docs)
    k = 10
    plain = SparseIndex.build(docs, tmp_path / "plain", quantization=quantization, block_size=32)
    bp = SparseIndex.build(
        docs, tmp_path / "bp", quantization=quantization, block_size=32, reorder="bp"
    )
    assert [bp.doc_id(i) for i in range(bp.num_docs)] != docs.ids  # really reordered
    stored = docs.matrix.copy()
    stored.data = plain.codec.units(plain.codec.encode(stored.data))
    oracle = [
        [(docs.ids[j], s) for j, s in row] for row in brute_force_topk(queries.matrix, stored, k)
    ]
    for algorithm in ("exhaustive", "blockmax"):
        want = plain.batch_search(queries, k, algorithm=algorithm)
        got = bp.batch_search(queries, k, algorithm=algorithm, threads=2)
        for hits, ref, exact in zip(got, want, oracle, strict=True):
            h = [(x.doc_id, x.score) for x in hits]
            r = [(x.doc_id, x.score) for x in ref]
            assert sorted(s for _, s in h) == sorted(s for _, s in r)  # bit-equal scores
            if quantization == "float32":  # (uint8 hits are in the codec's score units)
                assert sorted(s for _, s in h) == pytest.approx(sorted(s for _, s in exact))
            assert _sure(h, k) == _sure(r, k) == _sure(exact, k)


def test_empty_collection_fails_as_before(tmp_path):
    empty = SparseBatch([], sp.csr_matrix((0, 3), dtype=np.float32), clustered(n_docs=1).vocab)
    with pytest.raises(InputError, match="empty"):
        SparseIndex.build(empty, tmp_path / "ix", reorder="bp")


def test_single_document(tmp_path):
    docs = clustered(n_docs=1)
    index = SparseIndex.build(docs, tmp_path / "one", reorder="bp")
    assert index.num_docs == 1 and index.doc_id(0) == "d0"


def test_bad_reorder_value(tmp_path):
    with pytest.raises(ValidationError, match="reorder"):
        BuildConfig(reorder="random")
    write_npz(clustered(n_docs=20), tmp_path / "docs.npz")
    result = CliRunner().invoke(
        app,
        ["index", "build", str(tmp_path / "docs.npz"), "-o", str(tmp_path / "ix"),
         "--reorder", "shuffle"],
    )  # fmt: skip
    assert result.exit_code != 0
    err = result.stderr if hasattr(result, "stderr") else result.output
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "reorder" in lines[0], err


def test_cli_builds_a_reordered_index(tmp_path):
    write_npz(clustered(n_docs=300), tmp_path / "docs.npz")
    result = CliRunner().invoke(
        app,
        ["index", "build", str(tmp_path / "docs.npz"), "-o", str(tmp_path / "ix"),
         "--reorder", "bp"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert SparseIndex.open(tmp_path / "ix").manifest["build"]["reorder"] == "bp"


def test_extra_arrays_refused(tmp_path):
    docs = clustered(n_docs=30)
    with pytest.raises(InputError, match="extra_arrays"):
        build(
            [docs],
            tmp_path / "ix",
            vocab=docs.vocab,
            config=BuildConfig(reorder="bp"),
            extra_arrays={"rows": np.arange(30)},
        )

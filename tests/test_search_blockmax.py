"""Best-first block-max search: exact (equal to exhaustive, bit for bit) by default, and with
``heap_factor`` < 1 approximate but with exact scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import brute_force_topk, random_batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr import SparseIndex, Vocabulary
from lsr.errors import InputError
from lsr.index import kernels
from lsr.index.kernels.blockmax import block_key, key_block, key_bound
from lsr.sparse import SparseBatch

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _positions(index: SparseIndex, hits) -> list[int]:
    position = {index.doc_id(i): i for i in range(index.num_docs)}
    return [position[h.doc_id] for h in hits]


def _bits(hits) -> list[tuple[str, int]]:
    """Hits as (doc id, float32 bit pattern of the score): equality is bit-identity."""
    return [(h.doc_id, int(np.float32(h.score).view(np.uint32))) for h in hits]


@st.composite
def collections(draw):
    n_docs = draw(st.integers(1, 300))
    n_terms = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    docs = random_batch(
        rng,
        n_docs,
        n_terms,
        density=draw(st.sampled_from([0.02, 0.1, 0.4])),
        levels=draw(st.sampled_from([1, 3, 8, 1000])),  # 1: all ties; 1000: few ties
    )
    # density 0: empty queries; the vocabulary is wider than the postings
    queries = random_batch(
        rng, 6, n_terms, density=draw(st.sampled_from([0.0, 0.1, 0.5])), prefix="q"
    )
    block_size = draw(st.sampled_from([1, 2, 3, 8, 64, 256]))  # 256: a single block
    k = draw(st.sampled_from([1, 3, 10, 500]))  # 500: more than the matching documents
    return docs, queries, block_size, k


# block rows for no term, for the commonest terms, or for every term with a posting
BLOCK_ROWS = st.sampled_from([None, 0.3, 1e-9])


@SETTINGS
@given(
    case=collections(),
    quantization=st.sampled_from(["float32", "float16", "uint8"]),
    block_rows=BLOCK_ROWS,
)
def test_blockmax_equals_exhaustive_bit_for_bit(tmp_path_factory, case, quantization, block_rows):
    docs, queries, block_size, k = case
    path = tmp_path_factory.mktemp("idx") / "index"
    index = SparseIndex.build(
        docs, path, quantization=quantization, block_size=block_size, block_rows=block_rows
    )
    stored = docs.matrix.copy()
    stored.data = index.codec.units(index.codec.encode(stored.data))
    oracle = brute_force_topk(queries.matrix, stored, k)
    exhaustive = index.batch_search(queries, k, threads=2)
    batch = index.batch_search(queries, k, algorithm="blockmax", threads=2)
    singles = [
        index.search(SparseBatch([qid], queries.matrix[i], queries.vocab), k, algorithm="blockmax")
        for i, qid in enumerate(queries.ids)
    ]
    assert [_bits(r) for r in batch] == [_bits(r) for r in exhaustive]
    assert [_bits(r) for r in singles] == [_bits(r) for r in exhaustive]
    for got, want in zip(batch, oracle, strict=True):
        assert _positions(index, got) == [p for p, _ in want]
    # search_arrays: the same hits, padded with -1
    q = index.prepare_queries(queries)
    d_bm, s_bm, c_bm = index.search_arrays(q, k, algorithm="blockmax")
    d_ex, s_ex, c_ex = index.search_arrays(q, k)
    np.testing.assert_array_equal(c_bm, c_ex)
    np.testing.assert_array_equal(d_bm, d_ex)
    np.testing.assert_array_equal(s_bm.view(np.uint32), s_ex.view(np.uint32))
    # one query split over runs of doc-id blocks: the same hits and bits, whatever the parts
    ix, lut, k_eff = index.kernel_arrays, index.lut, min(k, index.num_docs)
    for i in range(len(q.ptr) - 1):
        terms, weights = q.terms[q.ptr[i] : q.ptr[i + 1]], q.weights[q.ptr[i] : q.ptr[i + 1]]
        for parts in (2, 3, 7):
            got_d, got_s = np.full(k_eff, -1), np.zeros(k_eff, np.float32)
            n = kernels.blockmax_split(terms, weights, k_eff, ix, lut, 1.0, parts, got_d, got_s)
            assert n == c_ex[i]
            assert got_d.tolist() == d_ex[i].tolist()
            got_s *= np.float32(index.codec.score_scale)  # as search_arrays reports scores
            assert got_s.view(np.uint32).tolist() == s_ex[i].view(np.uint32).tolist()
    split = [
        index.search(
            SparseBatch([qid], queries.matrix[i], queries.vocab), k, algorithm="blockmax", threads=2
        )
        for i, qid in enumerate(queries.ids)
    ]
    assert [_bits(r) for r in split] == [_bits(r) for r in exhaustive]


def test_block_whose_bound_equals_the_threshold_can_still_win_a_tie(tmp_path):
    """k = 1, query a + b. Block 1 (docs 2, 3) has bound 2 and is scored first: d2 scores 1.
    Block 0 has bound 1 == θ and holds d0 scoring 1, which ranks above d2 (lower position)."""
    dense = np.array([[1, 0], [0, 0], [1, 0], [0, 1]], dtype=np.float32)
    vocab = Vocabulary(["a", "b"], frozen=True)
    docs = SparseBatch(["d0", "d1", "d2", "d3"], sp.csr_matrix(dense), vocab)
    index = SparseIndex.build(docs, tmp_path / "i", quantization="float32", block_size=2)
    query = {"a": 1.0, "b": 1.0}
    assert [h.doc_id for h in index.search(query, 1)] == ["d0"]
    assert [h.doc_id for h in index.search(query, 1, algorithm="blockmax")] == ["d0"]
    assert index.search(query, 2, algorithm="blockmax") == index.search(query, 2)


def test_all_equal_scores_across_many_blocks(tmp_path):
    matrix = sp.csr_matrix(np.ones((300, 1), dtype=np.float32))
    docs = SparseBatch([f"d{i:03d}" for i in range(300)], matrix, Vocabulary(["a"], frozen=True))
    index = SparseIndex.build(docs, tmp_path / "i", block_size=7)
    for k in (1, 5, 8, 299, 400):
        assert index.search({"a": 1.0}, k, algorithm="blockmax") == index.search({"a": 1.0}, k)


def _clustered(rng: np.random.Generator, n_docs: int, n_queries: int, n_terms: int = 400):
    """Topical documents in topic order (so blocks are topical) and queries from the topics."""
    n_topics, topic_terms = 40, 12
    topics = [rng.choice(n_terms, topic_terms, replace=False) for _ in range(n_topics)]

    def rows(n: int, per_row: int, noise: int) -> sp.csr_matrix:
        dense = np.zeros((n, n_terms), dtype=np.float32)
        labels = np.sort(rng.integers(0, n_topics, n))
        for r, topic in enumerate(labels):
            terms = np.concatenate(
                [rng.choice(topics[topic], per_row, replace=False), rng.integers(0, n_terms, noise)]
            )
            dense[r, terms] = rng.gamma(2.0, 1.0, terms.size).astype(np.float32)
        return sp.csr_matrix(dense)

    vocab = Vocabulary([f"t{i}" for i in range(n_terms)], frozen=True)
    docs = SparseBatch([f"d{i}" for i in range(n_docs)], rows(n_docs, 6, 4), vocab)
    queries = rows(n_queries, 4, 1)
    queries = queries[rng.permutation(n_queries)]
    return docs, SparseBatch([f"q{i}" for i in range(n_queries)], queries, vocab)


@pytest.mark.parametrize(("heap_factor", "floor"), [(0.9, 0.95), (0.7, 0.8)])
def test_approximate_search_keeps_exact_scores_and_recall(tmp_path, heap_factor, floor):
    docs, queries = _clustered(np.random.default_rng(7), 6000, 100)
    index = SparseIndex.build(docs, tmp_path / "i", quantization="float32", block_size=64)
    oracle = (queries.matrix.astype(np.float64) @ docs.matrix.astype(np.float64).T).toarray()
    # every document's score as the exhaustive scorer computes it (k = all documents)
    all_docs, all_scores, _ = index.search_arrays(index.prepare_queries(queries), index.num_docs)
    exact = index.batch_search(queries, 10, algorithm="blockmax")
    assert exact == index.batch_search(queries, 10)
    approx = index.batch_search(queries, 10, algorithm="blockmax", heap_factor=heap_factor)
    recalls = []
    for i, (got, want) in enumerate(zip(approx, exact, strict=True)):
        positions = _positions(index, got)
        scores = np.array([h.score for h in got], dtype=np.float32)
        full = dict(zip(all_docs[i].tolist(), all_scores[i].tolist(), strict=True))
        assert scores.tolist() == [full[p] for p in positions]  # bit for bit
        np.testing.assert_allclose(scores, oracle[i, positions], rtol=1e-5)
        assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
        recalls.append(len({h.doc_id for h in got} & {h.doc_id for h in want}) / len(want))
    assert floor <= np.mean(recalls) < 1.0  # measured 0.972 (0.9) and 0.862 (0.7)
    singles = [
        index.search(
            SparseBatch([qid], queries.matrix[i], queries.vocab),
            10,
            algorithm="blockmax",
            heap_factor=heap_factor,
        )
        for i, qid in enumerate(queries.ids[:20])
    ]
    assert singles == approx[:20]
    # split over threads: each part stops on its own k-th score, so every exact hit one thread
    # finds is found, scores stay exact, and the hits do not depend on thread timing
    prepared = index.prepare_queries(queries)
    ix, lut = index.kernel_arrays, index.lut
    gained = 0
    for i, qid in enumerate(queries.ids[:20]):
        query = SparseBatch([qid], queries.matrix[i], queries.vocab)
        split = index.search(query, 10, algorithm="blockmax", heap_factor=heap_factor, threads=2)
        assert split == index.search(
            query, 10, algorithm="blockmax", heap_factor=heap_factor, threads=2
        )
        full = dict(zip(all_docs[i].tolist(), all_scores[i].tolist(), strict=True))
        assert [h.score for h in split] == [full[p] for p in _positions(index, split)]
        want = {h.doc_id for h in exact[i]}
        one = {h.doc_id for h in singles[i]} & want
        assert one <= {h.doc_id for h in split} & want
        gained += len({h.doc_id for h in split} & want) - len(one)
        terms = prepared.terms[prepared.ptr[i] : prepared.ptr[i + 1]]
        weights = prepared.weights[prepared.ptr[i] : prepared.ptr[i + 1]]
        for parts in (3, 5):
            d, s = np.full(10, -1), np.zeros(10, np.float32)
            kernels.blockmax_split(terms, weights, 10, ix, lut, heap_factor, parts, d, s)
            assert want & set(index.doc_id(p) for p in d.tolist()) >= one
    assert gained >= 0


def test_bad_heap_factor_is_refused(tmp_path):
    docs = random_batch(np.random.default_rng(0), 20, 5, 0.5)
    index = SparseIndex.build(docs, tmp_path / "i")
    q = index.prepare_queries(docs)
    for bad in (0, 0.0, -0.5, 1.0001, 2, math.nan, math.inf, "0.5", None, True):
        with pytest.raises(InputError, match="heap_factor"):
            index.search({"t0": 1.0}, 3, algorithm="blockmax", heap_factor=bad)
        with pytest.raises(InputError, match="heap_factor"):
            index.batch_search(docs, 3, algorithm="blockmax", heap_factor=bad)
        with pytest.raises(InputError, match="heap_factor"):
            index.search_arrays(q, 3, algorithm="blockmax", heap_factor=bad)
    # below 1 it only means something for blockmax; 1 (the default) is accepted everywhere
    for algorithm in ("exhaustive", "maxscore"):
        with pytest.raises(InputError, match="only to algorithm='blockmax'"):
            index.search({"t0": 1.0}, 3, algorithm=algorithm, heap_factor=0.5)
        assert index.search({"t0": 1.0}, 3, algorithm=algorithm, heap_factor=1.0) == (
            index.search({"t0": 1.0}, 3, algorithm="blockmax", heap_factor=1)
        )


def test_warm_up_blockmax(tmp_path):
    docs = random_batch(np.random.default_rng(11), 50, 10, density=0.3)
    index = SparseIndex.build(docs, tmp_path / "i")
    index.warm_up(3, algorithm="blockmax")
    assert index.batch_search(docs, 3, algorithm="blockmax") == index.batch_search(docs, 3)


def _best_first_model(index: SparseIndex, terms, weights, k: int, heap_factor: float):
    """A plain-Python model of best-first block-max, in kernel score units: bounds summed in
    float32 in query order, blocks visited by (bound descending, block ascending), stop at the
    first block whose bound x heap_factor falls below the k-th score, skip a block whose bound
    equals it when its first document comes after the worst hit. Documents carry the
    exhaustive kernel's scores."""
    ix, lut = index.kernel_arrays, index.lut
    ub = np.zeros(ix.n_blocks, dtype=np.float32)
    for t, w in zip(terms.tolist(), weights.tolist(), strict=True):
        block, far = -1, ix.term_far_ptr[t]
        for e in range(ix.term_entry_ptr[t], ix.term_entry_ptr[t + 1]):
            gap = int(ix.entry_gap[e])
            if gap == 0:
                gap, far = int(ix.far_gap[far]), far + 1
            block += gap
            code = ix.entry_max[e]
            x = np.float32(np.float32(w) * (np.float32(code) if lut is None else lut[code]))
            ub[block] = np.float32(ub[block] + x)
    n = index.num_docs
    all_docs, all_scores = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
    acc = np.zeros(n, dtype=np.float32)
    count = kernels.exhaustive_one(terms, weights, n, ix, lut, acc, all_docs, all_scores)
    score = dict(zip(all_docs[:count].tolist(), all_scores[:count].tolist(), strict=True))
    held: list[tuple[float, int]] = []  # (score, doc), best first
    factor = np.float32(heap_factor)
    for b in sorted((b for b in range(ix.n_blocks) if ub[b] > 0), key=lambda b: (-ub[b], b)):
        doc0 = b * ix.block_size
        if len(held) == k:
            reach, theta, worst = np.float32(ub[b] * factor), held[-1][0], held[-1][1]
            if reach < theta:
                break
            if reach == theta and doc0 > worst:
                continue
        for d in range(doc0, min(doc0 + ix.block_size, n)):
            if d in score:
                held = sorted([*held, (score[d], d)], key=lambda h: (-h[0], h[1]))[:k]
    return [d for _, d in held], [s for s, _ in held]


@SETTINGS
@given(
    case=collections(),
    quantization=st.sampled_from(["float32", "uint8"]),
    heap_factor=st.sampled_from([0.3, 0.7, 0.9, 1.0]),
    block_rows=BLOCK_ROWS,
)
def test_blockmax_follows_the_best_first_model(
    tmp_path_factory, case, quantization, heap_factor, block_rows
):
    """Approximate search returns exactly what the model visits: the kernel's shortcuts (the
    first blocks picked by one scan, dropping a block once no document can reach the k-th
    score, bounds and postings read from block rows) change its speed, never its hits."""
    docs, queries, block_size, k = case
    path = tmp_path_factory.mktemp("idx") / "index"
    index = SparseIndex.build(
        docs, path, quantization=quantization, block_size=block_size, block_rows=block_rows
    )
    q = index.prepare_queries(queries)
    k = min(k, index.num_docs)
    everyone = np.zeros(0, dtype=np.uint8)
    for i in range(len(queries)):
        terms, weights = q.terms[q.ptr[i] : q.ptr[i + 1]], q.weights[q.ptr[i] : q.ptr[i + 1]]
        docs_out, scores_out = np.full(k, -1, dtype=np.int64), np.zeros(k, dtype=np.float32)
        count = kernels.blockmax_one(
            terms, weights, k, index.kernel_arrays, index.lut, heap_factor, everyone,
            docs_out, scores_out,
        )  # fmt: skip
        want_docs, want_scores = _best_first_model(index, terms, weights, k, heap_factor)
        assert docs_out[:count].tolist() == want_docs
        assert scores_out[:count].tolist() == want_scores


def test_approximate_is_blockmax_at_the_measured_default(tmp_path):
    """algorithm="approximate": heap_factor 0.9 from 8 query terms on, exact below; batch and
    single searches agree, and knobs meant for blockmax are refused."""
    from lsr.index.sparse_index import APPROXIMATE_MIN_TERMS, approximate_heap_factor

    rng = np.random.default_rng(3)
    docs, _ = _clustered(rng, 3000, 1)
    index = SparseIndex.build(docs, tmp_path / "i", quantization="float32", block_size=32)
    vocab = list(docs.vocab.tokens)
    queries = []
    for n_terms in (1, 3, APPROXIMATE_MIN_TERMS - 1, APPROXIMATE_MIN_TERMS, 12, 30) * 3:
        terms = rng.choice(len(vocab), n_terms, replace=False)
        queries.append({vocab[t]: float(rng.random()) + 0.05 for t in terms})
    batch = index.batch_search(queries, 10, algorithm="approximate")
    missed = 0
    for query, got in zip(queries, batch, strict=True):
        factor = approximate_heap_factor(len(query))
        assert factor == (0.9 if len(query) >= APPROXIMATE_MIN_TERMS else 1.0)
        want = index.search(query, 10, algorithm="blockmax", heap_factor=factor)
        assert got == want == index.search(query, 10, algorithm="approximate")
        exact = index.search(query, 10)
        if factor == 1.0:
            assert got == exact
        missed += len({h.doc_id for h in exact} - {h.doc_id for h in got})
    assert missed < 0.05 * 10 * len(queries)  # measured 2 of 180
    with pytest.raises(InputError, match="heap_factor applies only"):
        index.search(queries[0], 10, algorithm="approximate", heap_factor=0.5)
    for query in queries:  # split over threads, at the same per-query default
        factor = approximate_heap_factor(len(query))
        split = index.search(query, 10, algorithm="blockmax", heap_factor=factor, threads=2)
        assert index.search(query, 10, algorithm="approximate", threads=2) == split
    with pytest.raises(InputError, match="threads > 1"):
        index.search(queries[0], 10, algorithm="maxscore", threads=2)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.floats(0.0, float(np.finfo(np.float32).max), width=32).map(abs),
            st.integers(0, 2**32 - 1),
        ),
        min_size=2,
        max_size=20,
        unique_by=lambda p: p[1],
    )
)
def test_block_keys_order_like_bound_then_block(pairs):
    """One uint64 key per block ranks blocks as the visiting order does (higher bound first,
    then lower block) and gives back both fields unchanged."""
    keys = [int(block_key(np.float32(u), b)) for u, b in pairs]
    assert [(float(key_bound(np.uint64(k))), int(key_block(np.uint64(k)))) for k in keys] == [
        (float(np.float32(u)), b) for u, b in pairs
    ]
    by_key = [p for _, p in sorted(zip(keys, pairs, strict=True), reverse=True)]
    assert by_key == sorted(pairs, key=lambda p: (-np.float32(p[0]), p[1]))

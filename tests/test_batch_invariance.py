"""A text's vector does not depend on what else is encoded with it: bit for bit, not approximately.

A search service batches whatever queries arrive together, so a query must get the same vector
(and so the same scores and ranking) alone or in any batch. The property: for random batch
compositions of SciFact queries and documents (repeats, texts of equal length, short and long
texts together, any batch size), every row of a batch equals the text's vector from
``encode_one``, the path of a single search, exactly. The same holds when the caller's torch
thread count changes, when several threads encode at once and with any number of pool workers.
"""

from __future__ import annotations

import gzip
import json
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders.config import EncoderConfig
from lsr.encoders.loading import load_encoder
from lsr.sparse import SparseBatch, TermWeights
from tests.conftest import SHARED, SPLADE_TINY

SCIFACT = SHARED / "data" / "beir" / "scifact"
N_QUERIES, N_DOCS = 24, 8  # documents: many fill the 256-token window (same length, no padding)
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None)


def _texts(name: str, n: int, field: str) -> list[str]:
    out = []
    with gzip.open(SCIFACT / name, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            out.append(row[field] if field == "text" else f"{row['title']} {row['text']}")
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(EncoderConfig(model=str(SPLADE_TINY)))


@pytest.fixture(scope="module")
def pools(encoder) -> dict[str, tuple[list[str], list[TermWeights]]]:
    """Texts per side and each one's vector encoded alone."""
    texts = {
        "query": [*_texts("queries.jsonl.gz", N_QUERIES, "text"), "", "a", "vitamin D cancer"],
        "document": _texts("corpus.jsonl.gz", N_DOCS, "title+text"),
    }
    sides = {"query": encoder.query, "document": encoder.document}
    return {name: (t, [sides[name].encode_one(x) for x in t]) for name, t in texts.items()}


def assert_same(got: SparseBatch | list[TermWeights], expected: list[TermWeights]) -> None:
    """Vectors equal bit for bit: the same terms, the same float32 weights."""
    if isinstance(got, SparseBatch):
        got = [got.row(i) for i in range(len(got))]
    assert len(got) == len(expected)
    for row, (have, want) in enumerate(zip(got, expected, strict=True)):
        assert np.array_equal(have.terms, want.terms), f"row {row}: other terms"
        differ = have.weights.view(np.uint32) != want.weights.view(np.uint32)
        assert not differ.any(), (
            f"row {row}: {differ.sum()} of {differ.size} weights differ, by up to "
            f"{np.abs(have.weights - want.weights).max():.3g}"
        )


@SETTINGS
@given(
    side=st.sampled_from(["query", "document"]),
    picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=12),
    batch_size=st.integers(1, 16),
)
def test_vector_independent_of_batch(encoder, pools, side, picks, batch_size):
    texts, alone = pools[side]
    picks = [p % len(texts) for p in picks]
    encode = encoder.encode_query if side == "query" else encoder.encode_document
    batch = encode([texts[p] for p in picks], batch_size=batch_size)
    assert_same(batch, [alone[p] for p in picks])


def test_vector_independent_of_threads(encoder, pools):
    texts, alone = pools["query"]
    side = encoder.query
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):  # the caller's count: encode_one runs in the calling thread
            torch.set_num_threads(n)
            ones = [side.encode_one(t) for t in texts]
            assert torch.get_num_threads() == n  # given back
            assert_same(ones, alone)
            assert_same(encoder.encode_query(texts, batch_size=5), alone)
    finally:
        torch.set_num_threads(threads)

    results: dict[int, tuple[SparseBatch, list[TermWeights]]] = {}
    order = list(range(len(texts)))[::-1]

    def work(k: int) -> None:  # batches and single texts from several threads at once
        batch = encoder.encode_query([texts[i] for i in order], batch_size=3)
        results[k] = batch, [side.encode_one(texts[i]) for i in order]

    workers = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for k in range(3):
        for got in results[k]:
            assert_same(got, [alone[i] for i in order])

    from lsr.encoders.device import ForwardPool

    side.pool = ForwardPool(1)
    try:
        assert_same(side.encode(texts, batch_size=8), alone)
    finally:
        side.pool.shutdown()
        side.pool = None


def test_pool_leaves_thread_counts_alone():
    """Workers run one intra-op thread; the caller and threads started later keep torch's."""
    from lsr.encoders.device import ForwardPool

    before = torch.get_num_threads()
    pool = ForwardPool(2)
    try:
        assert [pool.run(torch.get_num_threads) for _ in range(4)] == [1] * 4
        seen: list[int] = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert torch.get_num_threads() == before and seen == [before]
    finally:
        pool.shutdown()

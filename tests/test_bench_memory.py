"""eval/bench_memory.py: its taken-apart kernel does the exhaustive kernel's work, and it counts
what a query reads. Nothing here is timed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eval import bench_memory
from lsr import SparseIndex
from lsr.sparse import SparseBatch
from tests.conftest import random_batch


@pytest.fixture(scope="module")
def index_and_queries(tmp_path_factory) -> tuple[SparseIndex, SparseBatch, SparseBatch]:
    rng = np.random.default_rng(11)
    docs = random_batch(rng, 3000, 200, 0.08)
    queries = random_batch(rng, 12, 200, 0.05, prefix="q")
    index = SparseIndex.build(
        docs, tmp_path_factory.mktemp("memory") / "ix", block_size=64, quantization="float32"
    )
    return index, docs, queries


def test_walk_is_the_exhaustive_work(index_and_queries) -> None:
    """With an accumulator as large as the collection, the walk leaves every document's exact
    score (brute force Q @ D.T) and counts each query's postings and entries."""
    index, docs, queries = index_and_queries
    qa = index.prepare_queries(queries)
    ix, lut = index.kernel_arrays, index.lut
    small = np.zeros(4096, np.float32)  # a power of two above 3,000 documents: no folding
    dense_docs = docs.matrix.toarray().astype(np.float64)
    df = (docs.matrix.toarray() > 0).sum(axis=0)
    for i in range(len(qa.ptr) - 1):
        terms = qa.terms[qa.ptr[i] : qa.ptr[i + 1]]
        weights = qa.weights[qa.ptr[i] : qa.ptr[i + 1]]
        postings, entries = bench_memory.walk(terms, weights, ix, lut, small)
        q = np.zeros(dense_docs.shape[1])
        q[terms] = weights
        np.testing.assert_allclose(small[: index.num_docs], dense_docs @ q, rtol=1e-6)
        assert not small[index.num_docs :].any()
        assert postings == int(df[terms].sum())
        blocks = {(int(t), d // 64) for t in terms for d in np.flatnonzero(dense_docs[:, t] > 0)}
        assert entries == len(blocks)
        small[:] = 0.0


def test_report_parts_and_markdown(index_and_queries, tmp_path: Path) -> None:
    index, _, queries = index_and_queries
    row = bench_memory.measure(index, queries)
    assert row["queries"] == len(queries)
    assert row["postings_p50"] > 0 and row["entries_p50"] > 0
    assert all(v >= 0 for v in row["ms_p50"].values())
    # shares of measured times: under load the walk alone can take longer than the full kernel,
    # so only their presence and sign are checked, never a bound that depends on timing
    assert set(row["share"]) == {"walk", "acc_misses", "scan"}
    assert row["share"]["walk"] > 0 and min(row["share"].values()) >= 0
    limits = bench_memory.machine_limits([bench_memory.SMALL, index.num_docs], 1 << 20)
    assert limits["stream_gb_s"] > 0
    assert set(limits["update_ns"]) == {str(bench_memory.SMALL), str(index.num_docs)}
    report = {
        "date": "today",
        "machine": {"cpus": 2, "processor": "x"},
        "machine_limits": limits,
        "workloads": {"tiny": {"docs": index.num_docs, "modes": {"siamese": row}}},
    }
    text = bench_memory.markdown(report)
    assert "| tiny (3,000 docs) | siamese |" in text
    assert f"{limits['stream_gb_s']} GB/s" in text

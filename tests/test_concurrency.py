"""Shared objects under concurrent callers, as a search service will use them: a Retriever loads
its encoder once and reports timings per call; dense search threads stay per calling thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.ingest import index_corpus
from lsr.retrieval import Retriever, Timings
from tests.conftest import SPLADE_TINY

QUERIES = [
    "vitamin D deficiency and cancer risk",
    "stem cells differentiate into neurons",
    "antibiotic resistance in bacteria",
    "protein folding and misfolding diseases",
] * 8


@pytest.fixture(scope="module")
def free_index(beir_slice: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conc") / "if"
    config = EncoderConfig(
        model=str(SPLADE_TINY), query_mode="inference-free", query=SideConfig(max_length=32),
        document=SideConfig(max_length=64),
    )  # fmt: skip
    index_corpus(beir_slice, out, config)
    return out


def test_concurrent_searches_equal_sequential_ones(free_index):
    retriever = Retriever.open(free_index)
    expected = [retriever.search(q, 10) for q in QUERIES]
    timings = [Timings() for _ in QUERIES]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: retriever.search(QUERIES[i], 10, timings=timings[i]),
                            range(len(QUERIES))))  # fmt: skip
    assert got == expected
    assert all(t.encode > 0 and t.search > 0 for t in timings)  # each call filled its own
    assert not hasattr(retriever, "timings")  # nothing accumulates on the shared object


def test_query_encoder_loads_once_under_concurrent_first_use(free_index, monkeypatch):
    import lsr.encoders.loading as loading

    real = loading.load_query_encoder
    calls = []

    def slow_load(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.05)  # widen the window in which a second caller could start a second load
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_query_encoder", slow_load)
    retriever = Retriever.open(free_index)
    barrier = threading.Barrier(4)

    def first_query(text: str):
        barrier.wait()
        return retriever.search(text, 5)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(first_query, QUERIES[:4]))
    assert len(calls) == 1 and all(results)


def test_dense_thread_count_stays_with_its_caller(tmp_path):
    faiss = pytest.importorskip("faiss")
    from lsr.index.dense_index import DenseIndex

    rng = np.random.default_rng(0)
    index = DenseIndex.build(rng.random((50, 8), dtype=np.float32), [f"d{i}" for i in range(50)],
                             tmp_path / "dense")  # fmt: skip
    queries = rng.random((3, 8), dtype=np.float32)
    default = faiss.omp_get_max_threads()
    seen = []

    def one_thread_caller():
        before = faiss.omp_get_max_threads()
        hits = index.batch_search(queries, 5, threads=1)
        seen.append((before, faiss.omp_get_max_threads(), len(hits)))

    worker = threading.Thread(target=one_thread_caller)
    worker.start()
    worker.join()
    assert faiss.omp_get_max_threads() == default  # the caller's choice never reached this thread
    before, after, n = seen[0]
    assert after == before and n == 3  # and it was restored for the caller itself
    assert index.batch_search(queries, 5, threads=1) == index.batch_search(queries, 5)

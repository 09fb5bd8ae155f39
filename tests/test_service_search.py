"""Search features of the HTTP service on a real uvicorn: explain, query-side pruning, batch
search, /encode, and text queries through the micro-batcher — each against the library."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")

from lsr.encoders.base import prune_terms
from lsr.sparse import TermWeights
from tests.conftest import SPLADE_TINY
from tests.test_service import Server, _create

TEXTS = [
    "Vitamin D deficiency is associated with a higher risk of cancer.",
    "Aspirin lowers the risk of heart attack in older adults.",
    "Exercise improves insulin sensitivity in type 2 diabetes.",
    "Smoking causes lung cancer and heart disease.",
    "Vitamin C does not prevent the common cold.",
    "Sleep deprivation impairs memory consolidation.",
]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A siamese collection of a few texts encoded by splade-tiny."""
    running = Server(tmp_path_factory.mktemp("text") / "data", query_batch_ms=2.0)
    status, body = running.call("PUT", "/collections/t", {"model": str(SPLADE_TINY)})
    assert status == 201, body
    docs = [{"id": f"s{i}", "text": t} for i, t in enumerate(TEXTS)]
    assert running.call("PUT", "/collections/t/documents", {"documents": docs})[0] == 200
    yield running
    running.stop()


def _pairs(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(h["id"], h["score"]) for h in body["hits"]]


def test_explain_terms_sum_to_the_score_and_legs_match_their_own_searches(server: Server) -> None:
    _create(server)
    collection = server.app.state.registry.get("c")
    query = {"t1": 1.0, "t5": 0.75, "t7": 0.25, "t2": 0.5}
    status, body = server.call(
        "POST", "/collections/c/search", {"vector": query, "limit": 8, "explain": True}
    )
    assert status == 200
    stored = collection.vectors([h["id"] for h in body["hits"]])
    for hit in body["hits"]:
        terms = hit["explain"]["terms"]
        doc = {collection.vocab.tokens[t]: w for t, w in zip(*stored[hit["id"]][:2], strict=True)}
        assert set(terms) == set(query) & set(doc)
        assert math.isclose(sum(terms.values()), hit["score"], rel_tol=1e-5)
        assert terms == {t: query[t] * doc[t] for t in terms}
    for method in ("rrf", "minmax"):
        request = {"vector": query, "mode": "hybrid", "dense": [1.0, 0.5, -0.5], "limit": 10,
                   "explain": True, "fusion": {"method": method, "depth": 12}}  # fmt: skip
        _, body = server.call("POST", "/collections/c/search", request)
        sparse = collection.search(query, 12)
        dense = collection.search(None, 12, mode="dense", dense=[1.0, 0.5, -0.5])
        for leg, hits in (("sparse", sparse), ("dense", dense)):
            ranks = {h.doc_id: (r, h.score) for r, h in enumerate(hits, start=1)}
            for hit in body["hits"]:
                part = hit["explain"][leg]
                assert part["returned"] == (hit["id"] in ranks)
                if part["returned"]:
                    assert (part["rank"], part["raw"]) == ranks[hit["id"]]
        if method == "rrf":  # the fused score is the sum of the legs' shares
            for hit in body["hits"]:
                shares = [hit["explain"][leg].get("rrf", 0.0) for leg in ("sparse", "dense")]
                assert math.isclose(sum(shares), hit["score"], rel_tol=1e-9)
        else:
            for hit in body["hits"]:
                for leg in ("sparse", "dense"):
                    part = hit["explain"][leg]
                    assert not part["returned"] or 0.0 <= part["normalized"] <= 1.0


def test_pruned_queries_equal_the_library_with_the_pruned_vector(server: Server) -> None:
    _create(server)
    collection = server.app.state.registry.get("c")
    query = {"t1": 1.0, "t5": 0.75, "t7": 0.25, "t2": 0.5, "t4": 0.3}
    vector = collection.query_vector(query)
    for prune in ({"top_terms": 2}, {"min_weight": 0.4}, {"top_terms": 3, "min_weight": 0.26}):
        _, body = server.call(
            "POST", "/collections/c/search", {"vector": query, "limit": 20, "prune": prune}
        )
        cut = prune_terms(
            vector.terms, vector.weights,
            top_k=prune.get("top_terms"), min_weight=prune.get("min_weight", 0.0),
        )  # fmt: skip
        assert _pairs(body) == [(h.doc_id, h.score) for h in collection.search(cut, 20)]
        assert len(cut.terms) < len(vector.terms)
    status, body = server.call(
        "POST", "/collections/c/search", {"vector": query, "prune": {"top_terms": 0}}
    )
    assert status == 422 and "top_terms" in body["error"]


def test_batch_search_answers_each_search_as_alone(server: Server) -> None:
    _create(server)
    searches = [
        {"vector": {"t1": 1.0, "t3": 0.5}, "limit": 5},
        {"vector": {"t2": 1.0}, "limit": 3, "offset": 2, "filter": {"lang": "fr"}},
        {"vector": {"t4": 0.5}, "mode": "hybrid", "dense": [0.0, 1.0, 1.0]},
        {"mode": "dense", "dense": [1.0, 0.0, 0.0], "limit": 4},
    ]
    status, body = server.call("POST", "/collections/c/search/batch", {"searches": searches})
    assert status == 200 and len(body["results"]) == len(searches)
    for one, result in zip(searches, body["results"], strict=True):
        assert result["hits"] == server.call("POST", "/collections/c/search", one)[1]["hits"]
    bad = [*searches, {"vector": {"t1": -1.0}}]
    status, body = server.call("POST", "/collections/c/search/batch", {"searches": bad})
    assert status == 400 and ">= 0" in body["error"]  # checked before any search ran


def test_text_queries_through_the_batcher_equal_the_library(text_server: Server) -> None:
    collection = text_server.app.state.registry.get("t")
    queries = ["vitamin and cancer risk", "heart attack", "memory and sleep", "cold"] * 3
    status, body = text_server.call(
        "POST", "/collections/t/search/batch",
        {"searches": [{"query": q, "limit": 4} for q in queries]},
    )  # fmt: skip
    assert status == 200
    for q, result in zip(queries, body["results"], strict=True):
        assert _pairs(result) == [(h.doc_id, h.score) for h in collection.search(q, 4)], q
    status, text = text_server.call("GET", "/metrics")
    assert 'lsr_stage_seconds_count{stage="encode_sparse"}' in text
    described = text_server.call("GET", "/info")[1]["collections"]["t"]
    assert described["query_mode"] == "siamese" and described["model"] == str(SPLADE_TINY)
    sizes = [line for line in text.splitlines() if line.startswith("lsr_encode_batch_size_count")]
    assert sizes and float(sizes[0].split()[-1]) >= 1


def test_encode_returns_the_vectors_searches_and_upserts_use(text_server: Server) -> None:
    collection = text_server.app.state.registry.get("t")
    tokens = collection.vocab.tokens
    status, body = text_server.call(
        "POST", "/encode", {"collection": "t", "texts": ["vitamin d and cancer", "sleep"]}
    )
    assert status == 200
    for text, vector in zip(["vitamin d and cancer", "sleep"], body["vectors"], strict=True):
        expected = collection.query_vector(text)
        pairs = zip(expected.terms.tolist(), expected.weights.tolist(), strict=True)
        assert vector == {tokens[t]: float(w) for t, w in pairs}
        weights = list(vector.values())
        assert weights == sorted(weights, reverse=True) and weights
    _, body = text_server.call(
        "POST", "/encode", {"collection": "t", "texts": [TEXTS[0]], "side": "document"}
    )
    stored = collection.vectors(["s0"])["s0"]  # what the upsert stored (float16 codes)
    got = body["vectors"][0]
    assert {tokens[t] for t in stored.terms.tolist()} == set(got)
    weights = np.asarray([got[tokens[t]] for t in stored.terms.tolist()], np.float32)
    np.testing.assert_allclose(weights.astype(np.float16), stored.weights, rtol=0)
    as_query = TermWeights(stored.terms, stored.weights)
    assert collection.search(as_query, 1)[0].doc_id == "s0"
    for request, status, message in (
        ({"collection": "nope", "texts": ["x"]}, 404, "no collection"),
        ({"collection": "t", "texts": []}, 422, "texts"),
        ({"collection": "t", "texts": ["x"], "side": "both"}, 422, "side"),
    ):
        got_status, answer = text_server.call("POST", "/encode", request)
        assert got_status == status and message in answer["error"], answer


def test_encode_refuses_a_collection_without_a_model(server: Server) -> None:
    _create(server)
    status, body = server.call("POST", "/encode", {"collection": "c", "texts": ["x"]})
    assert status == 400 and "no model" in body["error"]


def test_prf_through_http_equals_the_library(server: Server) -> None:
    from lsr.collection.prf import DensePrf, PrfConfig, SparsePrf

    _create(server)
    collection = server.app.state.registry.get("c")
    query = {"t1": 1.0, "t5": 0.75}
    dense = [1.0, 0.5, -0.5]
    cases = [
        ("sparse", {"sparse": {"m": 2, "beta": 0.5, "expansion_terms": 3}}),
        ("dense", {"dense": {"m": 3, "beta": 0.25}}),
        ("hybrid", {"sparse": {"m": 2}, "dense": {"m": 2}, "interpolation": "both"}),
        ("hybrid", {"dense": {"m": 1}, "interpolation": "before"}),
    ]
    for mode, prf in cases:
        request = {"vector": query, "dense": dense, "mode": mode, "limit": 10, "prf": prf}
        if mode == "dense":
            del request["vector"]
        status, body = server.call("POST", "/collections/c/search", request)
        assert status == 200, body
        config = PrfConfig(
            sparse=SparsePrf(**prf["sparse"]) if "sparse" in prf else None,
            dense=DensePrf(**prf["dense"]) if "dense" in prf else None,
            interpolation=prf.get("interpolation", "after"),
        )
        library = collection.search(
            query if mode != "dense" else None, 10, mode=mode, dense=dense, prf=config
        )
        assert _pairs(body) == [(h.doc_id, h.score) for h in library], (mode, prf)
        plain = server.call("POST", "/collections/c/search", {**request, "prf": None})[1]
        assert body["hits"] != plain["hits"] or mode == "dense", (mode, prf)  # PRF did something
    hybrid = {"mode": "hybrid", "dense": dense}
    for prf, extra, message in (
        ({"dense": {"m": 2}}, {}, "dense PRF needs mode"),
        ({"sparse": {}, "dense": {}, "interpolation": "before"}, hybrid, "one leg"),
        ({}, {}, "needs sparse"),
    ):
        status, body = server.call(
            "POST", "/collections/c/search", {"vector": query, "prf": prf, **extra}
        )
        assert status == 400 and message in body["error"], body


def test_weighted_rrf_scales_each_legs_share(server: Server) -> None:
    _create(server)
    query = {"t1": 1.0, "t5": 0.75, "t2": 0.5}
    request = {"vector": query, "mode": "hybrid", "dense": [1.0, 0.5, -0.5], "limit": 10,
               "explain": True, "fusion": {"depth": 12, "rrf_weights": [2.0, 0.5]}}  # fmt: skip
    status, body = server.call("POST", "/collections/c/search", request)
    assert status == 200, body
    for hit in body["hits"]:
        shares = {leg: hit["explain"][leg] for leg in ("sparse", "dense")}
        expected = sum(
            w / (60 + shares[leg]["rank"])
            for leg, w in (("sparse", 2.0), ("dense", 0.5))
            if shares[leg]["returned"]
        )
        assert math.isclose(hit["score"], expected, rel_tol=1e-9)
    request["fusion"]["rrf_weights"] = [1.0, 0.0]  # the dense leg adds nothing: sparse order
    _, only_sparse = server.call("POST", "/collections/c/search", {**request, "explain": False})
    _, sparse = server.call("POST", "/collections/c/search", {"vector": query, "limit": 10})
    assert [h["id"] for h in only_sparse["hits"]] == [h["id"] for h in sparse["hits"]]
    request["fusion"]["rrf_weights"] = [1.0, -1.0]
    assert server.call("POST", "/collections/c/search", request)[0] == 422


def test_blockmax_plan_and_heap_factor_through_http_equal_the_library(server: Server) -> None:
    _create(server)
    collection = server.app.state.registry.get("c")
    query = {"t1": 1.0, "t5": 0.75, "t7": 0.25, "t2": 0.5, "t4": 0.25}
    exact = [(h.doc_id, h.score) for h in collection.search(query, 20)]
    for heap_factor in (1.0, 0.6):
        request = {"vector": query, "limit": 20, "plan": "blockmax", "heap_factor": heap_factor}
        status, body = server.call("POST", "/collections/c/search", request)
        assert status == 200, body
        library = collection.search(query, 20, plan="blockmax", heap_factor=heap_factor)
        assert _pairs(body) == [(h.doc_id, h.score) for h in library]
        if heap_factor == 1.0:
            assert _pairs(body) == exact
        else:
            assert set(_pairs(body)) <= set(exact) | {
                (h.doc_id, h.score) for h in collection.search(query, 40)
            }  # every score exact
    long_query = {f"t{i}": 1.0 / (i + 1) for i in range(10)}  # 10 terms: heap_factor 0.9
    status, body = server.call(
        "POST", "/collections/c/search", {"vector": long_query, "limit": 5, "plan": "approximate"}
    )
    assert status == 200, body
    library = collection.search(long_query, 5, plan="blockmax", heap_factor=0.9)
    assert _pairs(body) == [(h.doc_id, h.score) for h in library]
    for bad, field in (({"heap_factor": 0.9}, "heap_factor"), ({"plan": "wand"}, "plan"),
                       ({"plan": "blockmax", "heap_factor": 0}, "heap_factor")):  # fmt: skip
        status, body = server.call("POST", "/collections/c/search", {"vector": query, **bad})
        assert status in (400, 422) and field in body["error"], (bad, body)

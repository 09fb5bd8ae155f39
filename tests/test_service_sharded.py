"""The service over a sharded collection answers exactly as over one collection.

``PUT /collections/{name}`` with ``"shards": 3`` makes a sharded collection; every search the API
offers (sparse, dense, hybrid, filtered, paged, explained, batched) returns the same JSON hits as
a plain collection given the same writes. With two `lsr serve` processes, the follower forwards
writes to the owner of the shards and shows them at once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from tests.test_service import VOCAB, Server, _docs
from tests.test_service_faults import _call
from tests.test_service_faults import _start as _serve
from tests.test_service_workers import _stop


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data")
    yield running
    running.stop()


def _make(server: Server, name: str, shards: int | None) -> None:
    body: dict[str, Any] = {"vocab": VOCAB, "dense_dim": 3, "flush_docs": 8}
    if shards is not None:
        body["shards"] = shards
    status, answer = server.call("PUT", f"/collections/{name}", body)
    assert status == 201, answer


SEARCHES: list[dict[str, Any]] = [
    {"vector": {"t1": 1.0, "t5": 0.75, "t7": 0.25}, "limit": 20},
    {"vector": {"t1": 1.0, "t5": 0.75}, "limit": 7, "offset": 7},
    {"vector": {"t2": 1.0, "t3": 0.5}, "filter": {"lang": "fr"}, "limit": 10},
    {"vector": {"t2": 1.0}, "filter": {"year": {"gte": 2002}}, "limit": 10, "explain": True},
    {"mode": "dense", "dense": [1.0, 0.5, -0.5], "limit": 12},
    {"mode": "hybrid", "vector": {"t4": 1.0, "t0": 0.5}, "dense": [0.0, 1.0, 1.0], "limit": 10},
    {"mode": "hybrid", "vector": {"t4": 1.0}, "dense": [1.0, 0.0, 1.0], "limit": 5, "offset": 5,
     "fusion": {"method": "rrf", "depth": 40}, "explain": True},
    {"vector": {"t6": 1.0, "t8": 1.0}, "limit": 10,
     "prf": {"sparse": {"m": 3, "beta": 0.5}}},
]  # fmt: skip


def _answers(server: Server, name: str) -> list[Any]:
    out = []
    for search in SEARCHES:
        status, body = server.call("POST", f"/collections/{name}/search", search)
        assert status == 200, body
        out.append(body["hits"])
    status, body = server.call("POST", f"/collections/{name}/search/batch",
                               {"searches": SEARCHES[:3]})  # fmt: skip
    assert status == 200, body
    out.append([result["hits"] for result in body["results"]])
    return out


def test_sharded_collection_over_http_equals_a_plain_one(server: Server) -> None:
    _make(server, "plain", None)
    _make(server, "split", 3)
    for name in ("plain", "split"):
        status, body = server.call("PUT", f"/collections/{name}/documents",
                                   {"documents": _docs(40)})  # fmt: skip
        assert status == 200 and body["count"] == 40, body
    assert _answers(server, "split") == _answers(server, "plain")
    status, body = server.call("POST", "/collections/split/documents/delete",
                               {"filter": {"lang": "en"}})  # fmt: skip
    assert status == 200 and body["count"] == 20 and len(body["shard_seqs"]) == 3, body
    server.call("POST", "/collections/plain/documents/delete", {"filter": {"lang": "en"}})
    assert server.call("DELETE", "/collections/split/documents/d00")[0] == 200
    assert server.call("DELETE", "/collections/plain/documents/d00")[0] == 200
    assert _answers(server, "split") == _answers(server, "plain")
    status, info = server.call("GET", "/collections/split")
    assert status == 200 and info["live_docs"] == 19 and len(info["shards"]) == 3
    assert sum(s["live_docs"] for s in info["shards"]) == 19
    assert server.call("GET", "/collections/split/documents/d02")[1]["text"] == "document 2"
    status, body = server.call("PUT", "/collections/bad", {"vocab": VOCAB, "shards": 0})
    assert status == 422, body
    assert server.call("DELETE", "/collections/split")[0] == 200
    assert server.call("GET", "/collections/split")[0] == 404


def test_a_follower_process_forwards_sharded_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, a = _serve(data)
    try:
        status, body = _call(a, "PUT", "/collections/s", {"vocab": VOCAB, "shards": 2})
        assert status == 201, body
        second, b = _serve(data)
        try:
            assert _call(b, "GET", "/info")[1]["worker"]["owns"] == []
            rng = random.Random(3)
            live: set[str] = set()
            for step in range(12):
                base = (a, b)[step % 2]
                doc_id = f"d{rng.randint(0, 9)}"
                vector = {f"t{rng.randint(0, 9)}": 1.0 + step}
                status, body = _call(base, "PUT", "/collections/s/documents",
                                     {"documents": [{"id": doc_id, "vector": vector}]})  # fmt: skip
                assert status == 200, body
                live.add(doc_id)
                for other in (a, b):  # visible on both processes at once
                    status, got = _call(other, "GET", f"/collections/s/documents/{doc_id}")
                    assert status == 200, got
                    assert _call(other, "GET", "/collections/s")[1]["live_docs"] == len(live)
            query = {"vector": {f"t{i}": 1.0 for i in range(10)}, "limit": 20}
            hits_a = _call(a, "POST", "/collections/s/search", query)[1]["hits"]
            assert hits_a == _call(b, "POST", "/collections/s/search", query)[1]["hits"]
            assert {h["id"] for h in hits_a} == live
        finally:
            _stop(second)
    finally:
        _stop(first)

"""The HTTP service on a real uvicorn (127.0.0.1, a free port): collections, documents, search,
auth, bad input as 4xx JSON, and results equal to the library's."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import uvicorn

from service.app import create_app
from service.settings import ServiceSettings

KEY = "s3cret-key"
VOCAB = [f"t{i}" for i in range(12)]


class Server:
    """A uvicorn server in a thread; ``call`` sends JSON and returns (status, body)."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.settings = ServiceSettings(data_dir=data_dir, api_key=KEY, port=0, **settings)
        self.app = create_app(self.settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = KEY,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("X-API-Key", key)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
                status = response.status
        except urllib.error.HTTPError as exc:
            text, status = exc.read().decode(), exc.code
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data")
    yield running
    running.stop()


def _docs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"d{i:02d}",
            "text": f"document {i}",
            "vector": {f"t{i % 12}": 1.0, f"t{(i * 5) % 12}": 0.5 + (i % 4) / 4},
            "dense": [float((i * 7) % 5) - 2, float(i % 3) - 1, 1.0],
            "metadata": {"year": 2000 + i % 5, "lang": "en" if i % 2 else "fr"},
        }
        for i in range(n)
    ]


def _create(server: Server, name: str = "c") -> None:
    status, body = server.call("PUT", f"/collections/{name}",
                               {"vocab": VOCAB, "dense_dim": 3, "flush_docs": 8})  # fmt: skip
    assert status == 201, body
    status, body = server.call("PUT", f"/collections/{name}/documents", {"documents": _docs(40)})
    assert status == 200 and body == {"seq": 1, "count": 40, "durable": True, "visible": True}


def test_search_equals_the_library_and_pages_are_stable(server: Server) -> None:
    _create(server)
    collection = server.app.state.registry.get("c")
    query = {"t1": 1.0, "t5": 0.75, "t7": 0.25, "t2": 0.5, "t4": 0.25}
    status, body = server.call("POST", "/collections/c/search", {"vector": query, "limit": 20})
    assert status == 200
    library = collection.search(query, 20)
    assert [(h["id"], h["score"]) for h in body["hits"]] == [(h.doc_id, h.score) for h in library]
    for mode, extra in (("sparse", {}), ("hybrid", {"dense": [1.0, 0.5, -0.5]})):
        request = {"vector": query, "mode": mode, **extra}
        _, whole = server.call("POST", "/collections/c/search", {**request, "limit": 20})
        _, page2 = server.call("POST", "/collections/c/search",
                               {**request, "limit": 10, "offset": 10})  # fmt: skip
        assert page2["hits"] == whole["hits"][10:20], mode
    filtered = {"vector": query, "filter": {"lang": "fr"}, "with_metadata": True, "limit": 50}
    _, body = server.call("POST", "/collections/c/search", filtered)
    assert body["hits"] and all(h["metadata"]["lang"] == "fr" for h in body["hits"])
    threshold = body["hits"][2]["score"]
    _, cut = server.call(
        "POST", "/collections/c/search", {**filtered, "score_threshold": threshold}
    )
    assert cut["hits"] == [h for h in body["hits"] if h["score"] >= threshold]


def test_documents_get_delete_and_survive_a_restart(tmp_path: Path) -> None:
    first = Server(tmp_path / "data")
    try:
        _create(first)
        assert first.call("GET", "/collections/c/documents/d03")[1] == {
            "id": "d03", "text": "document 3", "metadata": {"year": 2003, "lang": "en"},
        }  # fmt: skip
        assert first.call("DELETE", "/collections/c/documents/d03")[1]["count"] == 1
        assert first.call("DELETE", "/collections/c/documents/d03")[0] == 404
        status, body = first.call("POST", "/collections/c/documents/delete",
                                  {"filter": {"year": {"gte": 2003}}})  # fmt: skip
        assert status == 200 and body["count"] == 15  # 16 matched, d03 already gone
    finally:
        first.stop()
    second = Server(tmp_path / "data")  # acknowledged writes are durable across a restart
    try:
        status, body = second.call("GET", "/collections/c")
        assert status == 200 and body["live_docs"] == 24
        assert second.call("GET", "/collections/c/documents/d04")[0] == 404
        assert second.call("GET", "/readyz")[1] == {"status": "ready", "collections": ["c"]}
    finally:
        second.stop()


def test_api_keys(server: Server) -> None:
    assert server.call("PUT", "/collections/x", {"vocab": VOCAB}, key=None)[0] == 401
    assert server.call("PUT", "/collections/x", {"vocab": VOCAB}, key="wrong")[0] == 403
    assert server.call("PUT", "/collections/x", {"vocab": VOCAB})[0] == 201
    assert server.call("POST", "/collections/x/search", {"vector": {"t1": 1}}, key=None)[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/collections/c/search", b"{not json", 400, "malformed JSON"),
        ("POST", "/collections/c/search", {"vector": {"t1": 1}, "colour": 1}, 422, "colour"),
        ("POST", "/collections/c/search", {"vector": {"t1": 1}, "limit": True}, 422, "limit"),
        ("POST", "/collections/c/search", b'{"vector": {"t1": NaN}}', 422, "vector"),
        ("POST", "/collections/c/search", {"vector": {"t1": -1.0}}, 400, "finite and >= 0"),
        ("POST", "/collections/c/search", {"vector": {"t1": 1}, "limit": 5000}, 400, "limit"),
        ("POST", "/collections/c/search", {"vector": {"t1": 1}, "filter": {"x": 1}}, 400,
         "unknown field 'x'"),
        ("POST", "/collections/c/search", {"vector": {"t1": 1}, "mode": "hybrid", "limit": 50,
                                           "dense": [1, 0, 0], "fusion": {"depth": 20}}, 400,
         "fusion.depth"),
        ("POST", "/collections/c/search", {"query": "words"}, 400, "no model"),
        ("POST", "/collections/nope/search", {"vector": {"t1": 1}}, 404, "no collection"),
        ("PUT", "/collections/c", {"vocab": VOCAB}, 409, "already exists"),
        ("PUT", "/collections/c/documents", {"documents": [{"id": "x", "vector": {"zz": 1}}]},
         400, "unknown term"),
        ("PUT", "/collections/c/documents",
         {"documents": [{"id": "x", "vector": {"t1": 1}, "dense": [1, 2]}]}, 400, "shape"),
        ("PUT", "/collections/c/documents",
         {"documents": [{"id": "x", "vector": {"t1": 1}, "dense": [1, 2, 3],
                         "metadata": {"year": "soon"}}]}, 400, "field 'year' is number"),
        ("GET", "/collections/c/documents/missing", None, 404, "no document"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_json_message(
    server: Server, method: str, path: str, body: Any, status: int, message: str
) -> None:
    _create(server)
    raw = body if isinstance(body, bytes) else None
    got, answer = server.call(method, path, None if raw else body, raw=raw)
    assert got == status, answer
    assert isinstance(answer, dict) and message in answer["error"], answer
    assert server.call("GET", "/collections/c")[1]["live_docs"] == 40  # nothing was written


def test_operations_endpoints(server: Server) -> None:
    _create(server)
    assert server.call("GET", "/healthz") == (200, {"status": "ok"})
    status, spec = server.call("GET", "/openapi.json")
    assert status == 200 and "/collections/{name}/search" in spec["paths"]
    assert "400" in spec["paths"]["/collections/{name}/search"]["post"]["responses"]
    status, text = server.call("GET", "/metrics")
    assert status == 200
    assert 'lsr_collection_live_docs{collection="c"} 40.0' in text
    assert 'route="/collections/{name}/documents"' in text
    assert server.call("GET", "/collections")[1] == {"collections": ["c"]}
    assert server.call("DELETE", "/collections/c")[0] == 200
    assert server.call("GET", "/collections/c")[0] == 404
